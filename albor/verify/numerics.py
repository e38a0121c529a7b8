"""Helpers shared by the property tests and the falsification battery."""

from __future__ import annotations

import torch

from albor import ops


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """‖out − ref‖ / ‖ref‖ in float64; NaN or Inf anywhere in ``out`` gives inf, so it never passes."""
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out64).all():
        return float("inf")
    denom = ref64.norm().item()
    diff = (out64 - ref64).norm().item()
    return diff / denom if denom > 0 else diff


def rounded_once_excess(out: torch.Tensor, ref: torch.Tensor) -> float:
    """How far ``out`` (bfloat16) strays beyond the float64 ``ref`` rounded once to bfloat16, in float64.

    An op that computes in float32 and rounds once at the end is within half a bfloat16 ulp of the reference,
    plus float32's own error (2^-20 of the size is ample): the result is then <= 0. Arithmetic in bfloat16 is
    off by several ulps.
    """
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    half_ulp = torch.ldexp(torch.ones_like(ref64), torch.frexp(ref64).exponent - 9)
    return ((out64 - ref64).abs() - half_ulp - ref64.abs() * 2.0**-20).max().item()


def poisoned(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """A buffer filled with NaN, so that any element a kernel fails to write is caught."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def linear_ce_both_ways(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(loss, d/dhidden, d/dweight) through ``ops.linear_cross_entropy`` and through explicit logits."""
    results = []
    for fused in (True, False):
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        if fused:
            loss = ops.linear_cross_entropy(h, w, targets, reduction=reduction)
        else:
            loss = ops.cross_entropy(h @ w.t(), targets, reduction=reduction)
        loss.backward()
        results.append((loss, h.grad, w.grad))
    return results
