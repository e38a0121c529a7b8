"""Falsifiers for the ``rmsnorm`` contract (contracts/rmsnorm.yaml)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from albor import ops
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err, rounded_once_excess

if importlib.util.find_spec("triton") is not None:  # without it the kernel tests (marked triton) skip
    from albor.kernels import buffers
    from albor.kernels.launch import n_programs
    from albor.kernels.rmsnorm import rmsnorm, tile

DTYPES = [torch.float64, torch.float32, torch.bfloat16]


def _xg(device: torch.device, dtype: torch.dtype, shape: tuple[int, ...] = (3, 7, 37), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 0.5
    w = 1 + 0.5 * torch.randn(shape[-1], generator=g, dtype=torch.float64)
    return x.to(device, dtype), w.to(device, dtype)


def _reference(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    x64 = x.double()
    return x64 / (x64.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w.double()


@pytest.mark.claim("RMSNORM-001")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scale_invariance(device: torch.device, dtype: torch.dtype) -> None:
    x, w = _xg(device, dtype)
    y = ops.rmsnorm(x, w, 0.0)
    for a in (1e-3, 0.37, 5.0, 1e3):
        assert rel_err(ops.rmsnorm(x * a, w, 0.0), y) <= tolerance("RMSNORM-001", dtype), a


@pytest.mark.claim("RMSNORM-002")
@pytest.mark.parametrize("dtype", DTYPES)
def test_unit_rms_with_unit_gain(device: torch.device, dtype: torch.dtype) -> None:
    x, _ = _xg(device, dtype)
    y = ops.rmsnorm(x, torch.ones(x.shape[-1], device=device, dtype=dtype), 1e-12)
    rms = y.double().pow(2).mean(-1).sqrt()
    assert (rms - 1).abs().max().item() <= tolerance("RMSNORM-002", dtype)


@pytest.mark.claim("RMSNORM-003")
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_float64_reference(device: torch.device, dtype: torch.dtype) -> None:
    x, w = _xg(device, dtype)
    y = ops.rmsnorm(x, w, 1e-5)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_err(y, _reference(x, w, 1e-5)) <= tolerance("RMSNORM-003", dtype)


@pytest.mark.claim("RMSNORM-004")
def test_backward_input(device: torch.device) -> None:
    x, w = _xg(device, torch.float64, shape=(2, 3, 9))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: ops.rmsnorm(a, w, 1e-5), (x,))


@pytest.mark.claim("RMSNORM-005")
def test_backward_gain(device: torch.device) -> None:
    x, w = _xg(device, torch.float64, shape=(2, 3, 9))
    w.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda b: ops.rmsnorm(x, b, 1e-5), (w,))
    ops.rmsnorm(x, w, 1e-5).sum().backward()
    assert w.grad is not None and w.grad.abs().min().item() > 0, "the gain gradient must be written"


@pytest.mark.claim("RMSNORM-006")
def test_bfloat16_rounded_once(device: torch.device) -> None:
    # Computed in float32 and rounded to bfloat16 at the end, every element is within half a bfloat16 ulp of the
    # float64 reference (float32's own error adds 2^-20 at most); arithmetic in bfloat16 is off by several ulps.
    x, w = _xg(device, torch.bfloat16, shape=(4, 8, 256), seed=3)
    y = ops.rmsnorm(x, w, 1e-5)
    assert y.dtype == torch.bfloat16 and rounded_once_excess(y, _reference(x, w, 1e-5)) <= 0, "not rounded once"


# The Triton kernel, against the same float64 references.

KERNEL_DTYPES = [torch.float32, torch.bfloat16]
EPS = 1e-5


def _data(device: torch.device, dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 0.5
    w = 1 + 0.5 * torch.randn(shape[-1], generator=g, dtype=torch.float64)
    dy = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x.to(device, dtype), w.to(device, dtype), dy.to(device, dtype)


def _kernel_reference(x: torch.Tensor, w: torch.Tensor, dy: torch.Tensor):
    """Output, input gradient and gain gradient in float64, from the same (rounded) inputs."""
    x64, w64 = x.double().requires_grad_(True), w.double().requires_grad_(True)
    y = x64 / (x64.pow(2).mean(-1, keepdim=True) + EPS).sqrt() * w64
    y.backward(dy.double())
    return y.detach(), x64.grad, w64.grad


def _kernel(x: torch.Tensor, w: torch.Tensor, dy: torch.Tensor):
    """Output and both gradients of the kernel, every buffer poisoned and guarded."""
    xk, wk = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    with buffers.poisoned():
        y = rmsnorm(xk, wk, EPS)
        y.backward(dy)
    return y.detach(), xk.grad, wk.grad


@pytest.mark.triton
@pytest.mark.claim("RMSNORM-101")
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_kernel_forward_matches_float64(device: torch.device, dtype: torch.dtype) -> None:
    x, w, _ = _data(device, dtype, (3, 5, 37))
    with buffers.poisoned():
        y = rmsnorm(x, w, EPS)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_err(y, _kernel_reference(x, w, torch.zeros_like(x))[0]) <= tolerance("RMSNORM-101", dtype)


@pytest.mark.triton
@pytest.mark.claim("RMSNORM-102")
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_kernel_gradients_match_float64(device: torch.device, dtype: torch.dtype) -> None:
    x, w, dy = _data(device, dtype, (3, 5, 37), seed=1)
    _, dx, dw = _kernel(x, w, dy)
    _, dx_ref, dw_ref = _kernel_reference(x, w, dy)
    assert dw is not None, "the gain gradient must be written"
    assert rel_err(dx, dx_ref) <= tolerance("RMSNORM-102", dtype)
    assert rel_err(dw, dw_ref) <= tolerance("RMSNORM-102", dtype)


@pytest.mark.triton
@pytest.mark.claim("RMSNORM-103")
def test_kernel_writes_stay_in_bounds(device: torch.device) -> None:
    # More row tiles than backward programs, a tile count the tiles per program do not divide (so the
    # last program is short), a short last tile, and an odd width: every row ends inside a masked block.
    block_m, _ = tile(37)
    rows = (3 * n_programs(device, per_sm=8) + 2) * block_m - 1
    x, w, dy = _data(device, torch.float32, (rows, 37), seed=2)
    y, dx, dw = _kernel(x, w, dy)
    y_ref, dx_ref, dw_ref = _kernel_reference(x, w, dy)
    tol = tolerance("RMSNORM-103", torch.float32)
    for name, got, want in (("y", y, y_ref), ("dx", dx, dx_ref), ("dw", dw, dw_ref)):
        assert got is not None and rel_err(got, want) <= tol, name


@pytest.mark.triton
@pytest.mark.claim("RMSNORM-104")
def test_kernel_bf16_extremes(device: torch.device) -> None:
    # Rows from 2^-60 to 2^50 in size and gradients up to 2^100: all representable in bfloat16 and
    # float32, far outside float16. Each row is compared on its own scale.
    x, w, dy = _data(device, torch.float64, (12, 37), seed=3)
    x = x * torch.tensor([2.0**k for k in (-60, -20, 0, 20, 50, 3)] * 2, device=device)[:, None]
    dy = dy * torch.tensor([2.0**k for k in (-60, 0, 40, 100)] * 3, device=device)[:, None]
    x, w, dy = x.bfloat16(), w.bfloat16(), dy.bfloat16()
    y, dx, dw = _kernel(x, w, dy)
    y_ref, dx_ref, dw_ref = _kernel_reference(x, w, dy)
    tol = tolerance("RMSNORM-104", torch.bfloat16)
    for name, got, want in (("y", y, y_ref), ("dx", dx, dx_ref)):
        worst = max(rel_err(got[r], want[r]) for r in range(got.shape[0]))
        assert worst <= tol, f"{name}: worst row rel err {worst:.3g}"
    assert dw is not None and rel_err(dw, dw_ref) <= tol
