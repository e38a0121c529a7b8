"""Config errors a user can act on: each names the field, the value and what is allowed.

Pydantic's own messages carry a documentation URL and the whole input; these carry one line per
problem, and for an unknown field the closest valid names.
"""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the field and, where there is one, the fix."""


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds, also when the annotation is ``Model | str`` or ``Model | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if (found := _submodel(arg)) is not None:
                return found
    return None


def field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field path of ``model``, nested models expanded (``optim.lr``, ``data.seq_len``, …)."""
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        if (sub := _submodel(info.annotation)) is not None:
            paths += field_paths(sub, f"{path}.")
    return paths


def closest_fields(model: type[BaseModel], path: str) -> list[str]:
    """Valid field paths a mistyped ``path`` most likely meant: same leaf elsewhere first, then near spellings."""
    known = field_paths(model)
    leaf = path.rsplit(".", 1)[-1]
    same_leaf = [p for p in known if p.rsplit(".", 1)[-1] == leaf]
    near_leaf = [p for p in known if difflib.get_close_matches(leaf, [p.rsplit(".", 1)[-1]], cutoff=0.8)]
    near_path = difflib.get_close_matches(path, known, n=3, cutoff=0.8)
    ordered = dict.fromkeys(near_path + same_leaf + sorted(near_leaf, key=lambda p: (p.count("."), p)))
    return list(ordered)[:3]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def explain(error: ValidationError, model: type[BaseModel]) -> str:
    """One line per problem in ``error``, raised while validating ``model``."""
    lines = []
    for item in error.errors():
        loc = ".".join(str(p) for p in item["loc"]) or "config"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            near = closest_fields(model, loc)
            hint = f"did you mean {' or '.join(f'`{n}`' for n in near)}?" if near else "--print-config lists the fields"
            lines.append(f"`{loc}`: no such field; {hint}")
        elif item["type"] == "value_error":
            lines.append(f"`{loc}`: {msg}")
        else:
            lines.append(f"`{loc}`: {_show(item['input'])} is not allowed: {msg}")
    return "\n".join(lines)
