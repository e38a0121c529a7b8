"""The gap register: one ``gaps/ALB-NNN.yaml`` per bug ever found, with its falsifiers and faults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from albor.config import load_model_file
from albor.verify.schema import check_node_ids


class Gap(BaseModel):
    """One bug: what it did, why, how it is fixed, and what now catches it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^ALB-\d{3}$")
    title: str = Field(min_length=1)
    component: str
    severity: Literal["critical", "major", "minor"]
    status: Literal["open", "fixed", "verified", "wontfix"]
    origin: Literal["historic", "found-here"]
    symptom: str = Field(min_length=1)
    root_cause: str = Field(min_length=1)
    fix: str = Field(min_length=1)
    contract: str
    falsifiers: list[str] = Field(min_length=1)
    faults: list[str] = Field(min_length=1)

    @field_validator("falsifiers")
    @classmethod
    def _node_ids(cls, v: list[str]) -> list[str]:
        return check_node_ids(v)


def load_gap(path: Path) -> Gap:
    """Load and validate one gap file; errors name the file and the field."""
    gap = load_model_file(path, Gap)
    if gap.id != path.stem:
        raise ValueError(f"{path}: id {gap.id!r} does not match the file name")
    return gap


def load_gaps(directory: Path) -> list[Gap]:
    """Every gap in ``directory``, sorted by id."""
    return sorted((load_gap(p) for p in directory.glob("ALB-*.yaml")), key=lambda g: g.id)
