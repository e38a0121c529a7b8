"""Falsifiers for the Triton RMSNorm kernel (contracts/rmsnorm.yaml, RMSNORM-1xx).

Without CUDA the kernel runs in Triton's interpreter on the CPU, which catches wrong arithmetic,
indexing and masking (not races). Every kernel buffer is NaN-poisoned and guarded.
"""

from __future__ import annotations

import os

import pytest
import torch

from falsification.settings import TRITON_MISSING

pytest.importorskip("triton", reason=TRITON_MISSING)

if not torch.cuda.is_available():  # before triton is first imported: kernels run in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from albor.contracts import tolerance
from albor.kernels import buffers
from albor.kernels.launch import n_programs
from albor.kernels.rmsnorm import rmsnorm, tile
from albor.testing import rel_err

DTYPES = [torch.float32, torch.bfloat16]
EPS = 1e-5


def _data(device: torch.device, dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3 + 0.5
    w = 1 + 0.5 * torch.randn(shape[-1], generator=g, dtype=torch.float64)
    dy = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x.to(device, dtype), w.to(device, dtype), dy.to(device, dtype)


def _reference(x: torch.Tensor, w: torch.Tensor, dy: torch.Tensor):
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


@pytest.mark.claim("RMSNORM-101")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_forward_matches_float64(device: torch.device, dtype: torch.dtype) -> None:
    x, w, _ = _data(device, dtype, (3, 5, 37))
    with buffers.poisoned():
        y = rmsnorm(x, w, EPS)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_err(y, _reference(x, w, torch.zeros_like(x))[0]) <= tolerance("RMSNORM-101", dtype)


@pytest.mark.claim("RMSNORM-102")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_gradients_match_float64(device: torch.device, dtype: torch.dtype) -> None:
    x, w, dy = _data(device, dtype, (3, 5, 37), seed=1)
    _, dx, dw = _kernel(x, w, dy)
    _, dx_ref, dw_ref = _reference(x, w, dy)
    assert dw is not None, "the gain gradient must be written"
    assert rel_err(dx, dx_ref) <= tolerance("RMSNORM-102", dtype)
    assert rel_err(dw, dw_ref) <= tolerance("RMSNORM-102", dtype)


@pytest.mark.claim("RMSNORM-103")
def test_kernel_writes_stay_in_bounds(device: torch.device) -> None:
    # More row tiles than backward programs, a tile count the tiles per program do not divide (so the
    # last program is short), a short last tile, and an odd width: every row ends inside a masked block.
    block_m, _ = tile(37)
    rows = (3 * n_programs(device, per_sm=8) + 2) * block_m - 1
    x, w, dy = _data(device, torch.float32, (rows, 37), seed=2)
    y, dx, dw = _kernel(x, w, dy)
    y_ref, dx_ref, dw_ref = _reference(x, w, dy)
    tol = tolerance("RMSNORM-103", torch.float32)
    for name, got, want in (("y", y, y_ref), ("dx", dx, dx_ref), ("dw", dw, dw_ref)):
        assert got is not None and rel_err(got, want) <= tol, name


@pytest.mark.claim("RMSNORM-104")
def test_kernel_bf16_extremes(device: torch.device) -> None:
    # Rows from 2^-60 to 2^50 in size and gradients up to 2^100: all representable in bfloat16 and
    # float32, far outside float16. Each row is compared on its own scale.
    x, w, dy = _data(device, torch.float64, (12, 37), seed=3)
    x = x * torch.tensor([2.0**k for k in (-60, -20, 0, 20, 50, 3)] * 2, device=device)[:, None]
    dy = dy * torch.tensor([2.0**k for k in (-60, 0, 40, 100)] * 3, device=device)[:, None]
    x, w, dy = x.bfloat16(), w.bfloat16(), dy.bfloat16()
    y, dx, dw = _kernel(x, w, dy)
    y_ref, dx_ref, dw_ref = _reference(x, w, dy)
    tol = tolerance("RMSNORM-104", torch.bfloat16)
    for name, got, want in (("y", y, y_ref), ("dx", dx, dx_ref)):
        worst = max(rel_err(got[r], want[r]) for r in range(got.shape[0]))
        assert worst <= tol, f"{name}: worst row rel err {worst:.3g}"
    assert dw is not None and rel_err(dw, dw_ref) <= tol
