"""The model's ops, each one dispatch point (see ``albor.ops.dispatch``)."""

from __future__ import annotations

import torch

from albor.ops import dispatch
from albor.ops.cross_entropy import IGNORE_INDEX, Reduction
from albor.ops.rope import rope_tables

__all__ = [
    "IGNORE_INDEX",
    "Reduction",
    "apply_rope",
    "attention",
    "cross_entropy",
    "dispatch",
    "linear_cross_entropy",
    "rmsnorm",
    "rope_tables",
    "swiglu",
]


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """See ``albor.ops.rmsnorm``."""
    return dispatch.get("rmsnorm")(x, weight, eps)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """See ``albor.ops.rope``."""
    return dispatch.get("apply_rope")(q, k, cos, sin)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """See ``albor.ops.swiglu``."""
    return dispatch.get("swiglu")(gate, up)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """See ``albor.ops.attention``."""
    return dispatch.get("attention")(q, k, v)


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX, reduction: Reduction = "mean"
) -> torch.Tensor:
    """See ``albor.ops.cross_entropy``."""
    return dispatch.get("cross_entropy")(logits, targets, ignore_index, reduction)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """See ``albor.ops.cross_entropy``."""
    return dispatch.get("linear_cross_entropy")(hidden, weight, targets, ignore_index, reduction)
