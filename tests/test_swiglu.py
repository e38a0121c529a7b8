"""Property tests for SwiGLU (contracts/swiglu.yaml) over random shapes and values."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from albor import ops
from albor.contracts import tolerance
from albor.testing import rel_err

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
