"""Falsifiers for the ``rmsnorm`` contract (contracts/rmsnorm.yaml)."""

from __future__ import annotations

import pytest
import torch

from albor import ops
from albor.contracts import tolerance
from albor.testing import rel_err

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
