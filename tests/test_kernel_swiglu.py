"""Property tests for the Triton SwiGLU kernel against the reference op, over random shapes (float64).

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
from albor.kernels.swiglu import BLOCK, swiglu
from albor.ops.swiglu import swiglu as reference
from albor.testing import rel_err

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FEW = settings(max_examples=max(5, settings.default.max_examples // 5))  # the interpreter is slow


def _run(fn, gate_up: torch.Tensor, dy: torch.Tensor):
    leaf = gate_up.clone().requires_grad_(True)
    y = fn(*leaf.chunk(2, dim=-1))
    y.backward(dy)
    return y.detach(), leaf.grad


@FEW
@given(st.integers(0, 2**31 - 1), st.integers(1, 20), st.one_of(st.integers(1, 70), st.integers(BLOCK, BLOCK + 70)))
def test_matches_reference_in_float64(seed: int, rows: int, width: int) -> None:
    g = torch.Generator().manual_seed(seed)
    gate_up = (torch.randn(rows, 2 * width, generator=g, dtype=torch.float64) * 4).to(DEVICE)
    dy = torch.randn(rows, width, generator=g, dtype=torch.float64).to(DEVICE)
    with buffers.poisoned():
        got = _run(swiglu, gate_up, dy)
    for a, b in zip(got, _run(reference, gate_up, dy), strict=True):
        assert rel_err(a, b) <= 1e-12


def test_saturated_gates_stay_finite() -> None:
    gate = torch.tensor([[-1e4, -80.0, 0.0, 80.0, 1e4]], device=DEVICE, requires_grad=True)
    up = torch.full_like(gate, 2.0, requires_grad=True)
    y = swiglu(gate, up)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(gate.grad).all() and torch.isfinite(up.grad).all()
    assert rel_err(y, reference(gate.detach(), up.detach())) <= 1e-6


def test_mismatched_halves_are_refused() -> None:
    with pytest.raises(ValueError, match="must match"):
        swiglu(torch.ones(2, 3, device=DEVICE), torch.ones(2, 4, device=DEVICE))
