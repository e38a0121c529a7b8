"""Falsifiers for the Triton RoPE kernel (contracts/rope.yaml, ROPE-1xx).

q and k are slices of one fused projection, as the model passes them. Without CUDA the kernel runs
in Triton's interpreter on the CPU. Every kernel buffer is NaN-poisoned and guarded.
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
from albor.kernels.rope import apply_rope
from albor.ops.rope import rope_tables
from albor.testing import rel_err

DTYPES = [torch.float32, torch.bfloat16]
B, T, H, HKV, D = 2, 5, 6, 2, 10  # odd T, H not a power of two, D/2 = 5


def _case(device: torch.device, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, (H + 2 * HKV) * D, generator=g, dtype=torch.float64).to(device, dtype)
    dq = torch.randn(B, T, H, D, generator=g, dtype=torch.float64).to(device, dtype)
    dk = torch.randn(B, T, HKV, D, generator=g, dtype=torch.float64).to(device, dtype)
    cos, sin = rope_tables(torch.arange(1000, 1000 + T, device=device), D)
    return qkv, dq, dk, cos, sin


def _split(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, _ = qkv.split([H * D, HKV * D, HKV * D], dim=-1)
    return q.view(B, T, H, D), k.view(B, T, HKV, D)


def _reference(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dq, dk):
    """Rotated q, k and their input gradients in float64, from the same (rounded) inputs."""
    q64, k64 = q.double().requires_grad_(True), k.double().requires_grad_(True)
    c, s = cos.double()[:, None, :], sin.double()[:, None, :]

    def rot(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)

    rq, rk = rot(q64), rot(k64)
    torch.autograd.backward((rq, rk), (dq.double(), dk.double()))
    return rq.detach(), rk.detach(), q64.grad, k64.grad


def _kernel(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dq, dk):
    leaf = qkv.clone().requires_grad_(True)
    with buffers.poisoned():
        rq, rk = apply_rope(*_split(leaf), cos, sin)
        torch.autograd.backward((rq, rk), (dq, dk))
    gq, gk = _split(leaf.grad)
    return rq.detach(), rk.detach(), gq, gk


@pytest.mark.claim("ROPE-101")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_forward_matches_float64(device: torch.device, dtype: torch.dtype) -> None:
    qkv, _, _, cos, sin = _case(device, dtype)
    with buffers.poisoned():
        rq, rk = apply_rope(*_split(qkv), cos, sin)
    ref_q, ref_k, _, _ = _reference(*_split(qkv), cos, sin, torch.zeros_like(rq), torch.zeros_like(rk))
    assert rq.dtype == rk.dtype == dtype
    assert rel_err(rq, ref_q) <= tolerance("ROPE-101", dtype)
    assert rel_err(rk, ref_k) <= tolerance("ROPE-101", dtype)


@pytest.mark.claim("ROPE-102")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_backward_matches_float64(device: torch.device, dtype: torch.dtype) -> None:
    qkv, dq, dk, cos, sin = _case(device, dtype, seed=1)
    _, _, gq, gk = _kernel(qkv, cos, sin, dq, dk)
    _, _, ref_gq, ref_gk = _reference(*_split(qkv), cos, sin, dq, dk)
    assert rel_err(gq, ref_gq) <= tolerance("ROPE-102", dtype)
    assert rel_err(gk, ref_gk) <= tolerance("ROPE-102", dtype)
