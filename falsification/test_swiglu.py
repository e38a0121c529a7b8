"""Falsifiers for the ``swiglu`` contract (contracts/swiglu.yaml)."""

from __future__ import annotations

import pytest
import torch

from albor import ops
from albor.contracts import tolerance
from albor.testing import rel_err


def _gu(device: torch.device, dtype: torch.dtype, shape: tuple[int, ...] = (3, 5, 29), seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gate = torch.randn(*shape, generator=g, dtype=torch.float64) * 3
    up = torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 0.5
    return gate.to(device, dtype), up.to(device, dtype)


@pytest.mark.claim("SWIGLU-001")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_matches_float64_reference(device: torch.device, dtype: torch.dtype) -> None:
    gate, up = _gu(device, dtype)
    y = ops.swiglu(gate, up)
    g64, u64 = gate.double(), up.double()
    assert y.dtype == dtype
    assert rel_err(y, g64 * torch.sigmoid(g64) * u64) <= tolerance("SWIGLU-001", dtype)


@pytest.mark.claim("SWIGLU-002")
def test_backward_gradcheck(device: torch.device) -> None:
    gate, up = _gu(device, torch.float64, shape=(2, 3, 7))
    gate.requires_grad_(True)
    up.requires_grad_(True)
    assert torch.autograd.gradcheck(ops.swiglu, (gate, up))


@pytest.mark.claim("SWIGLU-003")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_backward_closed_form(device: torch.device, dtype: torch.dtype) -> None:
    gate, up = _gu(device, dtype)
    gate.requires_grad_(True)
    up.requires_grad_(True)
    dy = _gu(device, dtype, seed=1)[0]
    ops.swiglu(gate, up).backward(dy)
    g64, u64, dy64 = gate.detach().double(), up.detach().double(), dy.double()
    sig = torch.sigmoid(g64)
    dsilu = sig * (1 + g64 * (1 - sig))
    tol = tolerance("SWIGLU-003", dtype)
    assert rel_err(gate.grad, dsilu * u64 * dy64) <= tol, "d/dgate must be silu'(g)·up·dy"
    assert rel_err(up.grad, g64 * sig * dy64) <= tol, "d/dup must be silu(g)·dy"
