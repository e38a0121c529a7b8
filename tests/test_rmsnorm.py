"""Property tests for RMSNorm (contracts/rmsnorm.yaml) over random shapes, scales and gains."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from albor import ops
from albor.contracts import tolerance
from albor.testing import rel_err

rows = st.integers(1, 4)
dims = st.integers(1, 41)
seeds = st.integers(0, 2**31 - 1)
scales = st.floats(1e-3, 1e3)


def _xg(seed: int, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 2 + 0.1
    return x, 1 + 0.5 * torch.randn(d, generator=g, dtype=torch.float64)


@given(seeds, rows, dims, scales)
def test_scale_invariant(seed: int, n: int, d: int, a: float) -> None:
    x, w = _xg(seed, n, d)
    assert rel_err(ops.rmsnorm(a * x, w, 0.0), ops.rmsnorm(x, w, 0.0)) <= tolerance("RMSNORM-001", torch.float64)


@given(seeds, rows, dims)
def test_unit_rms_with_unit_gain(seed: int, n: int, d: int) -> None:
    x, _ = _xg(seed, n, d)
    y = ops.rmsnorm(x, torch.ones(d, dtype=torch.float64), 0.0)
    assert (y.pow(2).mean(-1).sqrt() - 1).abs().max().item() <= tolerance("RMSNORM-002", torch.float64)


@given(seeds, rows, dims, st.sampled_from([torch.float32, torch.bfloat16]), st.floats(1e-8, 1e-2))
def test_matches_float64_reference(seed: int, n: int, d: int, dtype: torch.dtype, eps: float) -> None:
    x, w = (t.to(dtype) for t in _xg(seed, n, d))
    x64, w64 = x.double(), w.double()
    want = x64 / (x64.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w64
    y = ops.rmsnorm(x, w, eps)
    assert y.dtype == dtype and rel_err(y, want) <= tolerance("RMSNORM-003", dtype)


@given(seeds, rows, dims, st.floats(-5, 5).filter(lambda a: abs(a) > 1e-3))
def test_linear_in_gain_and_odd(seed: int, n: int, d: int, a: float) -> None:
    x, w = _xg(seed, n, d)
    y = ops.rmsnorm(x, w, 1e-5)
    assert rel_err(ops.rmsnorm(x, a * w, 1e-5), a * y) <= 1e-14
    assert rel_err(ops.rmsnorm(-x, w, 1e-5), -y) <= 1e-14


@given(seeds, rows, st.integers(2, 41))
def test_input_gradient_orthogonal_to_input(seed: int, n: int, d: int) -> None:
    # The output does not change along x itself (scale invariance), so no gradient points that way.
    x, w = _xg(seed, n, d)
    x.requires_grad_(True)
    dy = torch.randn(n, d, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    ops.rmsnorm(x, w, 0.0).backward(dy)
    along = (x.grad * x.detach()).sum(-1).abs() / (x.grad.norm(dim=-1) * x.detach().norm(dim=-1))
    assert along.max().item() <= 1e-12


@given(seeds, st.integers(1, 3), st.integers(1, 7))
def test_gradcheck_input_and_gain(seed: int, n: int, d: int) -> None:
    x, w = _xg(seed, n, d)
    x.requires_grad_(True)
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.rmsnorm(a, b, 1e-5), (x, w))
