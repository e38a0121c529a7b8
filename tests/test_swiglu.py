"""Property tests for SwiGLU (contracts/swiglu.yaml) over random shapes and values."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from albor import ops
from albor.ops.swiglu import swiglu as reference
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err

if importlib.util.find_spec("triton") is not None:  # without it the kernel tests (marked triton) skip
    from albor.kernels import buffers
    from albor.kernels.swiglu import BLOCK, swiglu

shapes = st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple)
seeds = st.integers(0, 2**31 - 1)


def _gu(seed: int, shape: tuple[int, ...], spread: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    gate = torch.randn(shape, generator=g, dtype=torch.float64) * spread
    return gate, torch.randn(shape, generator=g, dtype=torch.float64) * 2


@given(seeds, shapes, st.sampled_from([torch.float64, torch.float32, torch.bfloat16]))
def test_value(seed: int, shape: tuple[int, ...], dtype: torch.dtype) -> None:
    gate, up = (t.to(dtype) for t in _gu(seed, shape))
    g64, u64 = gate.double(), up.double()
    assert rel_err(ops.swiglu(gate, up), g64 * torch.sigmoid(g64) * u64) <= tolerance("SWIGLU-001", dtype)


@given(seeds, shapes, st.floats(-10, 10))
def test_linear_in_up(seed: int, shape: tuple[int, ...], a: float) -> None:
    gate, up = _gu(seed, shape)
    assert (ops.swiglu(gate, a * up) - a * ops.swiglu(gate, up)).abs().max().item() <= 1e-12 * max(1, abs(a))


@given(seeds, shapes)
def test_odd_part_is_gate_times_up(seed: int, shape: tuple[int, ...]) -> None:
    # silu(g) - silu(-g) = g, so the odd part of swiglu in the gate is g·u.
    gate, up = _gu(seed, shape)
    diff = ops.swiglu(gate, up) - ops.swiglu(-gate, up)
    assert (diff - gate * up).abs().max().item() <= 1e-12 * (1 + (gate * up).abs().max().item())


@given(seeds, shapes)
def test_gradients_closed_form(seed: int, shape: tuple[int, ...]) -> None:
    gate, up = _gu(seed, shape)
    dy = _gu(seed + 1, shape)[0]
    gate.requires_grad_(True)
    up.requires_grad_(True)
    ops.swiglu(gate, up).backward(dy)
    sig = torch.sigmoid(gate.detach())
    tol = tolerance("SWIGLU-003", torch.float64)
    assert rel_err(gate.grad, sig * (1 + gate.detach() * (1 - sig)) * up.detach() * dy) <= tol
    assert rel_err(up.grad, gate.detach() * sig * dy) <= tol


@given(seeds, st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple))
def test_gradcheck(seed: int, shape: tuple[int, ...]) -> None:
    gate, up = _gu(seed, shape)
    assert torch.autograd.gradcheck(ops.swiglu, (gate.requires_grad_(True), up.requires_grad_(True)))


# The Triton kernel, against the same float64 references.

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FEW = settings(max_examples=max(5, settings.default.max_examples // 5))  # the interpreter is slow


def _run(fn, gate_up: torch.Tensor, dy: torch.Tensor):
    leaf = gate_up.clone().requires_grad_(True)
    y = fn(*leaf.chunk(2, dim=-1))
    y.backward(dy)
    return y.detach(), leaf.grad


@pytest.mark.triton
@FEW
@given(st.integers(0, 2**31 - 1), st.integers(1, 20), st.one_of(st.integers(1, 70), st.integers(BLOCK, BLOCK + 70)))
def test_kernel_matches_reference_in_float64(seed: int, rows: int, width: int) -> None:
    g = torch.Generator().manual_seed(seed)
    gate_up = (torch.randn(rows, 2 * width, generator=g, dtype=torch.float64) * 4).to(DEVICE)
    dy = torch.randn(rows, width, generator=g, dtype=torch.float64).to(DEVICE)
    with buffers.poisoned():
        got = _run(swiglu, gate_up, dy)
    for a, b in zip(got, _run(reference, gate_up, dy), strict=True):
        assert rel_err(a, b) <= 1e-12


@pytest.mark.triton
def test_kernel_saturated_gates_stay_finite() -> None:
    gate = torch.tensor([[-1e4, -80.0, 0.0, 80.0, 1e4]], device=DEVICE, requires_grad=True)
    up = torch.full_like(gate, 2.0, requires_grad=True)
    y = swiglu(gate, up)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(gate.grad).all() and torch.isfinite(up.grad).all()
    assert rel_err(y, reference(gate.detach(), up.detach())) <= 1e-6


@pytest.mark.triton
def test_kernel_mismatched_halves_are_refused() -> None:
    with pytest.raises(ValueError, match="must match"):
        swiglu(torch.ones(2, 3, device=DEVICE), torch.ones(2, 4, device=DEVICE))
