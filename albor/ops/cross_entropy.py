"""Cross entropy reference: token mean (or sum) of -log softmax over non-ignored targets."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
Reduction = Literal["mean", "sum"]


def cross_entropy(
    logits: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """CE of logits (N, V) against targets (N,), computed in at least float32.

    ``mean`` divides by the number of targets that are not ``ignore_index``.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    return F.cross_entropy(logits.to(dtype), targets, ignore_index=ignore_index, reduction=reduction)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """CE of the logits hidden (N, d) @ weight (V, d)ᵀ; the fused kernel never builds them whole."""
    return cross_entropy(hidden @ weight.t(), targets, ignore_index, reduction)
