"""Falsifiers for the ``swiglu`` contract (contracts/swiglu.yaml)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from albor import ops
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err

if importlib.util.find_spec("triton") is not None:  # without it the kernel tests (marked triton) skip
    from albor.kernels import buffers
    from albor.kernels.swiglu import BLOCK, swiglu


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


# The Triton kernel, against the same float64 references.

DTYPES = [torch.float32, torch.bfloat16]


def _case(device: torch.device, dtype: torch.dtype, shape: tuple[int, ...], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    gate_up = torch.randn(*shape[:-1], 2 * shape[-1], generator=g, dtype=torch.float64) * 3
    dy = torch.randn(*shape, generator=g, dtype=torch.float64)
    return gate_up.to(device, dtype), dy.to(device, dtype)


def _reference(gate_up: torch.Tensor, dy: torch.Tensor):
    """Output and the gradient of the fused gate/up input in float64, from the same (rounded) inputs."""
    leaf = gate_up.double().requires_grad_(True)
    gate, up = leaf.chunk(2, dim=-1)
    y = gate * torch.sigmoid(gate) * up
    y.backward(dy.double())
    return y.detach(), leaf.grad


def _kernel(gate_up: torch.Tensor, dy: torch.Tensor):
    leaf = gate_up.clone().requires_grad_(True)
    with buffers.poisoned():
        y = swiglu(*leaf.chunk(2, dim=-1))
        y.backward(dy)
    return y.detach(), leaf.grad


@pytest.mark.triton
@pytest.mark.claim("SWIGLU-101")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_forward_matches_float64(device: torch.device, dtype: torch.dtype) -> None:
    gate_up, dy = _case(device, dtype, (3, 5, 45))
    with buffers.poisoned():
        y = swiglu(*gate_up.chunk(2, dim=-1))
    assert y.dtype == dtype and y.shape == dy.shape
    assert rel_err(y, _reference(gate_up, dy)[0]) <= tolerance("SWIGLU-101", dtype)


@pytest.mark.triton
@pytest.mark.claim("SWIGLU-102")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_gradients_match_float64(device: torch.device, dtype: torch.dtype) -> None:
    gate_up, dy = _case(device, dtype, (3, 5, 45), seed=1)
    _, grad = _kernel(gate_up, dy)
    _, ref = _reference(gate_up, dy)
    tol = tolerance("SWIGLU-102", dtype)
    width = dy.shape[-1]
    assert rel_err(grad[..., :width], ref[..., :width]) <= tol, "gate gradient"
    assert rel_err(grad[..., width:], ref[..., width:]) <= tol, "up gradient"


@pytest.mark.triton
@pytest.mark.claim("SWIGLU-103")
def test_kernel_writes_stay_in_bounds(device: torch.device) -> None:
    # On CUDA more than one column block per row; everywhere a width that no block size divides.
    width = BLOCK + 37 if device.type == "cuda" else 45
    gate_up, dy = _case(device, torch.float32, (5, width), seed=2)
    y, grad = _kernel(gate_up, dy)
    y_ref, grad_ref = _reference(gate_up, dy)
    tol = tolerance("SWIGLU-103", torch.float32)
    assert rel_err(y, y_ref) <= tol and rel_err(grad, grad_ref) <= tol
