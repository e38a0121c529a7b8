"""The one override grammar of every command that takes config: ``a.b=value``, the value read as YAML."""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from albor.config.errors import ConfigError, explain

M = TypeVar("M", bound=BaseModel)

GRAMMAR = "field.path=value (the value is read as YAML: 3e-4, true, null, [0.9, 0.95])"


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``a.b=value`` pairs, each value read as YAML (so numbers, booleans, null and lists work)."""
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form {GRAMMAR}")
        try:
            value = yaml.safe_load(raw) if raw else raw
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not YAML: {e}") from e
        pairs.append((key, value))
    return pairs


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``tree[a][b] = value`` for ``key`` ``a.b``, making the mappings on the way."""
    node = tree
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
        node[part] = child
        node = child
    node[leaf] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of the mapping ``tree`` with every override applied in order."""
    out = copy.deepcopy(tree)
    for key, value in parse_overrides(overrides):
        set_dotted(out, key, value)
    return out


def validate(cls: type[M], tree: dict[str, Any]) -> M:
    """``cls(**tree)``, or a ConfigError with one line per problem that names the field."""
    try:
        return cls(**tree)
    except ValidationError as e:
        raise ConfigError(explain(e, cls)) from None
