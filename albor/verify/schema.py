"""Pydantic schema of a contract: ``contracts/<component>.yaml``."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ObligationKind = Literal[
    "invariant", "equivalence", "bound", "monotonicity", "idempotency", "conservation", "determinism"
]
FALSIFIER_RE = re.compile(r"^(falsification|tests)/[\w/]+\.py::\w+$")
IMPORT_RE = re.compile(r"^[\w.]+:[\w.]+$")


def check_node_ids(ids: list[str]) -> list[str]:
    """Validate that each entry is a pytest node id of a test module."""
    for f in ids:
        if not FALSIFIER_RE.match(f):
            raise ValueError(f"falsifier {f!r} is not a pytest node id like falsification/test_x.py::test_y")
    return ids


class Obligation(BaseModel):
    """One claim the component makes, and the tests that try to break it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[A-Z][A-Z0-9_]*-\d{3}$")
    kind: ObligationKind
    statement: str = Field(min_length=1)
    tolerance: dict[str, float] = Field(default_factory=dict)
    falsifiers: list[str] = Field(min_length=1)

    @field_validator("falsifiers")
    @classmethod
    def _node_ids(cls, v: list[str]) -> list[str]:
        return check_node_ids(v)


class Declared(BaseModel):
    """A value the contract states, and the one place in the code it must equal."""

    model_config = ConfigDict(extra="forbid")

    value: Any
    source: str = Field(description="module:attribute, or module:Model.field for a config field's default")
    meaning: str = Field(min_length=1)

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not IMPORT_RE.match(v):
            raise ValueError(f"{v!r} is not an import path like albor.config:ModelConfig.rope_theta")
        return v


class Contract(BaseModel):
    """What a component promises: its equations and the obligations the battery checks."""

    model_config = ConfigDict(extra="forbid")

    id: str
    component: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    version: int = Field(ge=1)
    summary: str = Field(min_length=1)
    references: list[str] = Field(default_factory=list)
    implementation: str
    kernels: list[str] = Field(default_factory=list)
    sources: list[str] = Field(
        default_factory=list,
        description="further source files the component owns, beyond the modules of implementation and kernels",
    )
    equations: dict[str, str] = Field(default_factory=dict)
    declares: dict[str, Declared] = Field(
        default_factory=dict, description="values the contract states, each checked against its single source"
    )
    obligations: list[Obligation] = Field(min_length=1)

    @field_validator("implementation")
    @classmethod
    def _impl(cls, v: str) -> str:
        if not IMPORT_RE.match(v):
            raise ValueError(f"{v!r} is not an import path like albor.ops.rope:apply_rope")
        return v

    @field_validator("kernels")
    @classmethod
    def _kernels(cls, v: list[str]) -> list[str]:
        for k in v:
            cls._impl(k)
        return v

    def modules(self) -> list[str]:
        """The dotted modules of the implementation and the kernels."""
        return [path.partition(":")[0] for path in [self.implementation, *self.kernels]]

    def source_files(self) -> list[str]:
        """Every repository-relative source file of the component: its modules' files, then ``sources``."""
        return list(dict.fromkeys([m.replace(".", "/") + ".py" for m in self.modules()] + self.sources))

    @model_validator(mode="after")
    def _ids(self) -> Contract:
        if self.id != self.component:
            raise ValueError(f"id {self.id!r} must equal component {self.component!r}")
        ids = [o.id for o in self.obligations]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate obligation ids {dupes}")
        return self
