"""Property tests for RMSNorm (contracts/rmsnorm.yaml) over random shapes, scales and gains."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from albor import ops
from albor.ops.rmsnorm import rmsnorm as reference
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err

if importlib.util.find_spec("triton") is not None:  # without it the kernel tests (marked triton) skip
    from albor.kernels import buffers
    from albor.kernels.rmsnorm import rmsnorm

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


# The Triton kernel, against the same float64 references.

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FEW = settings(max_examples=max(5, settings.default.max_examples // 5))  # the interpreter is slow


def _grads(fn, x: torch.Tensor, w: torch.Tensor, dy: torch.Tensor, eps: float):
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = fn(x, w, eps)
    y.backward(dy)
    return y.detach(), x.grad, w.grad


@pytest.mark.triton
@FEW
@given(st.integers(0, 2**31 - 1), st.integers(1, 40), st.integers(1, 70), st.sampled_from([1e-6, 1e-5, 0.1]))
def test_kernel_matches_reference_in_float64(seed: int, rows: int, d: int, eps: float) -> None:
    g = torch.Generator().manual_seed(seed)
    x, w, dy = (torch.randn(*s, generator=g, dtype=torch.float64).to(DEVICE) for s in ((rows, d), (d,), (rows, d)))
    with buffers.poisoned():
        y, dx, dw = _grads(rmsnorm, x, w, dy, eps)
    y_ref, dx_ref, dw_ref = _grads(reference, x, w, dy, eps)
    assert rel_err(y, y_ref) <= 1e-12 and rel_err(dw, dw_ref) <= 1e-12
    # dx is a difference of two terms of size rstd·dy·w that can cancel (at d = 1 it nearly does), so
    # its error is measured against the size of those terms.
    terms = (dy * w * (x.pow(2).mean(-1, keepdim=True) + eps).rsqrt()).norm().item()
    assert (dx - dx_ref).norm().item() <= 1e-12 * max(terms, dx_ref.norm().item())


@pytest.mark.triton
def test_kernel_strided_input_and_any_leading_shape() -> None:
    x = torch.randn(3, 37, 5, dtype=torch.float64, device=DEVICE).transpose(1, 2)  # (3, 5, 37), not contiguous
    w = torch.randn(37, dtype=torch.float64, device=DEVICE)
    y = rmsnorm(x, w, 1e-5)
    assert y.shape == x.shape and rel_err(y, reference(x, w, 1e-5)) <= 1e-12
    assert rel_err(rmsnorm(x[0, 0], w, 1e-5), reference(x[0, 0], w, 1e-5)) <= 1e-12


@pytest.mark.triton
def test_kernel_mixed_dtypes_follow_the_input() -> None:
    x = torch.randn(4, 9, device=DEVICE).bfloat16()
    w = torch.randn(9, device=DEVICE, requires_grad=True)
    y = rmsnorm(x, w, 1e-5)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and w.grad.dtype == torch.float32
    assert rel_err(y, reference(x, w.detach(), 1e-5)) <= 1e-2


@pytest.mark.triton
def test_kernel_wrong_gain_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        rmsnorm(torch.randn(2, 5, device=DEVICE), torch.randn(4, device=DEVICE), 1e-5)
