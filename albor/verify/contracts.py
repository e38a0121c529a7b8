"""Load contracts from ``contracts/`` and look up obligations and their tolerances."""

from __future__ import annotations

import importlib
from functools import cache
from pathlib import Path
from typing import Any

import torch

from albor.config import load_model_file
from albor.verify.layout import CONTRACTS_DIR, ROOT
from albor.verify.schema import Contract, Obligation

__all__ = [
    "CONTRACTS_DIR",
    "ROOT",
    "declared",
    "load_contract",
    "load_contracts",
    "obligation",
    "single_source",
    "tolerance",
]


def load_contract(path: Path) -> Contract:
    """Load and validate one contract; errors name the file and the field."""
    contract = load_model_file(path, Contract)
    if contract.component != path.stem:
        raise ValueError(f"{path}: component {contract.component!r} does not match the file name")
    return contract


@cache
def load_contracts(directory: Path = CONTRACTS_DIR) -> dict[str, Contract]:
    """Every contract in ``directory`` by component name."""
    return {p.stem: load_contract(p) for p in sorted(directory.glob("*.yaml"))}


def obligation(claim: str) -> Obligation:
    """The obligation with id ``claim`` (for example ``ROPE-001``)."""
    for contract in load_contracts().values():
        for ob in contract.obligations:
            if ob.id == claim:
                return ob
    raise KeyError(f"no obligation {claim!r} in {CONTRACTS_DIR}")


def tolerance(claim: str, dtype: torch.dtype | str = "default") -> float:
    """The tolerance the contract states for ``claim`` at ``dtype`` (falling back to ``default``)."""
    tol = obligation(claim).tolerance
    key = str(dtype).removeprefix("torch.")
    if key in tol:
        return tol[key]
    if "default" in tol:
        return tol["default"]
    raise KeyError(f"{claim} states no tolerance for {key!r}; it has {sorted(tol)}")


def declared(component: str, name: str) -> Any:
    """The value contract ``component`` declares as ``name`` (``declares:`` in its YAML)."""
    return load_contracts()[component].declares[name].value


def single_source(source: str) -> Any:
    """The value at ``module:attribute`` or, for ``module:Model.field`` of a pydantic model, the field's default."""
    module, _, path = source.partition(":")
    obj: Any = importlib.import_module(module)
    parts = path.split(".")
    for i, part in enumerate(parts):
        fields = getattr(obj, "model_fields", None)
        if i == len(parts) - 1 and isinstance(obj, type) and fields is not None and part in fields:
            return fields[part].get_default(call_default_factory=True)
        obj = getattr(obj, part)
    return obj
