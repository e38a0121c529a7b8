"""Falsifiers for the Triton SwiGLU kernel (contracts/swiglu.yaml, SWIGLU-1xx).

gate and up are the two halves of one fused projection, as the model passes them. Without CUDA the
kernel runs in Triton's interpreter on the CPU. Every kernel buffer is NaN-poisoned and guarded.
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
from albor.kernels.swiglu import BLOCK, swiglu
from albor.testing import rel_err

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


@pytest.mark.claim("SWIGLU-101")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_forward_matches_float64(device: torch.device, dtype: torch.dtype) -> None:
    gate_up, dy = _case(device, dtype, (3, 5, 45))
    with buffers.poisoned():
        y = swiglu(*gate_up.chunk(2, dim=-1))
    assert y.dtype == dtype and y.shape == dy.shape
    assert rel_err(y, _reference(gate_up, dy)[0]) <= tolerance("SWIGLU-101", dtype)


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


@pytest.mark.claim("SWIGLU-103")
def test_kernel_writes_stay_in_bounds(device: torch.device) -> None:
    # On CUDA more than one column block per row; everywhere a width that no block size divides.
    width = BLOCK + 37 if device.type == "cuda" else 45
    gate_up, dy = _case(device, torch.float32, (5, width), seed=2)
    y, grad = _kernel(gate_up, dy)
    y_ref, grad_ref = _reference(gate_up, dy)
    tol = tolerance("SWIGLU-103", torch.float32)
    assert rel_err(y, y_ref) <= tol and rel_err(grad, grad_ref) <= tol
