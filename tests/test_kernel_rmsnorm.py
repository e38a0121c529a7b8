"""Property tests for the Triton RMSNorm kernel against the reference op, over random shapes (float64).

Without CUDA the kernel runs in Triton's interpreter on the CPU.
"""

from __future__ import annotations

import os

import pytest
import torch

from falsification.settings import TRITON_MISSING

pytest.importorskip("triton", reason=TRITON_MISSING)
from hypothesis import given, settings
from hypothesis import strategies as st

if not torch.cuda.is_available():  # before triton is first imported: kernels run in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from albor.kernels import buffers
from albor.kernels.rmsnorm import rmsnorm
from albor.ops.rmsnorm import rmsnorm as reference
from albor.testing import rel_err

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FEW = settings(max_examples=max(5, settings.default.max_examples // 5))  # the interpreter is slow


def _grads(fn, x: torch.Tensor, w: torch.Tensor, dy: torch.Tensor, eps: float):
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    y = fn(x, w, eps)
    y.backward(dy)
    return y.detach(), x.grad, w.grad


@FEW
@given(st.integers(0, 2**31 - 1), st.integers(1, 40), st.integers(1, 70), st.sampled_from([1e-6, 1e-5, 0.1]))
def test_matches_reference_in_float64(seed: int, rows: int, d: int, eps: float) -> None:
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


def test_strided_input_and_any_leading_shape() -> None:
    x = torch.randn(3, 37, 5, dtype=torch.float64, device=DEVICE).transpose(1, 2)  # (3, 5, 37), not contiguous
    w = torch.randn(37, dtype=torch.float64, device=DEVICE)
    y = rmsnorm(x, w, 1e-5)
    assert y.shape == x.shape and rel_err(y, reference(x, w, 1e-5)) <= 1e-12
    assert rel_err(rmsnorm(x[0, 0], w, 1e-5), reference(x[0, 0], w, 1e-5)) <= 1e-12


def test_mixed_dtypes_follow_the_input() -> None:
    x = torch.randn(4, 9, device=DEVICE).bfloat16()
    w = torch.randn(9, device=DEVICE, requires_grad=True)
    y = rmsnorm(x, w, 1e-5)
    y.float().sum().backward()
    assert y.dtype == torch.bfloat16 and w.grad.dtype == torch.float32
    assert rel_err(y, reference(x, w.detach(), 1e-5)) <= 1e-2


def test_wrong_gain_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        rmsnorm(torch.randn(2, 5, device=DEVICE), torch.randn(4, device=DEVICE), 1e-5)
