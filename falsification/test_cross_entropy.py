"""Falsifiers for the ``cross_entropy`` contract (contracts/cross_entropy.yaml)."""

from __future__ import annotations

import math

import pytest
import torch

from albor import ops
from albor.contracts import tolerance
from albor.testing import linear_ce_both_ways, rel_err

V = 37


def _data(device: torch.device, dtype: torch.dtype, n: int = 23, seed: int = 0, n_ignored: int = 5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, V, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, V, (n,), generator=g)
    targets[torch.randperm(n, generator=g)[:n_ignored]] = ops.IGNORE_INDEX
    return logits.to(device, dtype), targets.to(device)


def _token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Float64 per-token loss of the non-ignored rows."""
    keep = targets != ops.IGNORE_INDEX
    z = logits.double()[keep]
    return torch.logsumexp(z, -1) - z.gather(1, targets[keep, None]).squeeze(1)


@pytest.mark.claim("CE-001")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_shift_invariance(device: torch.device, dtype: torch.dtype) -> None:
    logits, targets = _data(device, dtype)
    shift = torch.randn(logits.shape[0], 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 20
    base = ops.cross_entropy(logits, targets)
    shifted = ops.cross_entropy(logits + shift.to(device, dtype), targets)
    assert rel_err(shifted, base) <= tolerance("CE-001", dtype)


@pytest.mark.claim("CE-002")
def test_non_negative(device: torch.device) -> None:
    logits, targets = _data(device, torch.float32, n_ignored=0)
    # A target holding nearly all the mass is the hardest case for a loss that should stay >= 0.
    logits[0, targets[0]] = 80.0
    for i in range(logits.shape[0]):
        assert ops.cross_entropy(logits[i : i + 1], targets[i : i + 1]).item() >= 0, i
    for reduction in ("mean", "sum"):
        assert ops.cross_entropy(logits, targets, reduction=reduction).item() >= 0


@pytest.mark.claim("CE-003")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniform_logits_give_log_vocab(device: torch.device, dtype: torch.dtype) -> None:
    _, targets = _data(device, dtype)
    for value in (0.0, -3.5, 17.25):
        logits = torch.full((targets.shape[0], V), value, device=device, dtype=dtype)
        loss = ops.cross_entropy(logits, targets).item()
        assert abs(loss - math.log(V)) / math.log(V) <= tolerance("CE-003", dtype), value


@pytest.mark.claim("CE-004")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_token_mean_over_non_ignored(device: torch.device, dtype: torch.dtype) -> None:
    logits, targets = _data(device, dtype)
    logits.requires_grad_(True)
    loss = ops.cross_entropy(logits, targets)
    want = _token_losses(logits.detach(), targets).mean()
    assert rel_err(loss, want) <= tolerance("CE-004", dtype)
    loss.backward()
    ignored = targets == ops.IGNORE_INDEX
    assert (logits.grad[ignored] == 0).all(), "ignored rows must receive no gradient"
    assert (logits.grad[~ignored].abs().sum(-1) > 0).all(), "counted rows must receive a gradient"
    other = logits.detach().clone()
    other[ignored] = 1e3
    assert rel_err(ops.cross_entropy(other, targets), loss) <= tolerance("CE-004", dtype)


@pytest.mark.claim("CE-005")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sum_mean_relation(device: torch.device, dtype: torch.dtype) -> None:
    logits, targets = _data(device, dtype)
    n = int((targets != ops.IGNORE_INDEX).sum())
    total = ops.cross_entropy(logits, targets, reduction="sum")
    mean = ops.cross_entropy(logits, targets, reduction="mean")
    assert rel_err(total, mean.double() * n) <= tolerance("CE-005", dtype)


@pytest.mark.claim("CE-006")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_equals_explicit_logits(device: torch.device, dtype: torch.dtype, reduction: str) -> None:
    g = torch.Generator().manual_seed(1)
    _, targets = _data(device, dtype)
    hidden = torch.randn(targets.shape[0], 19, generator=g, dtype=torch.float64).to(device, dtype)
    weight = (torch.randn(V, 19, generator=g, dtype=torch.float64) * 0.3).to(device, dtype)
    results = linear_ce_both_ways(hidden, weight, targets, reduction)
    tol = tolerance("CE-006", dtype)
    for name, got, want in zip(("loss", "d/dhidden", "d/dweight"), *results, strict=True):
        assert rel_err(got, want) <= tol, name
