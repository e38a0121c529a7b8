"""Falsifiers for the fused linear + cross-entropy kernel (contracts/cross_entropy.yaml, CE-1xx).

The shapes make several chunks with a short last one, and some ignored targets. Without CUDA the
row kernel runs in Triton's interpreter on the CPU. Every kernel buffer is NaN-poisoned and guarded.
"""

from __future__ import annotations

import os

import pytest
import torch

from falsification.settings import TRITON_MISSING

pytest.importorskip("triton", reason=TRITON_MISSING)

if not torch.cuda.is_available():  # before triton is first imported: kernels run in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from albor import ops
from albor.contracts import tolerance
from albor.kernels import buffers
from albor.kernels.cross_entropy import chunk_rows, linear_cross_entropy
from albor.ops.cross_entropy import linear_cross_entropy as reference_linear_cross_entropy
from albor.testing import rel_err

DTYPES = [torch.float32, torch.bfloat16]
N, D, V = 13, 3, 31  # chunks of 5, 5 and 3 rows


def _case(device: torch.device, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, D, generator=g, dtype=torch.float64)
    weight = torch.randn(V, D, generator=g, dtype=torch.float64)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[torch.randperm(N, generator=g)[:3]] = ops.IGNORE_INDEX
    return hidden.to(device, dtype), weight.to(device, dtype), targets.to(device)


def _reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str):
    """Loss and gradients in float64 from the same (rounded) inputs."""
    h, w = hidden.double().requires_grad_(True), weight.double().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(h @ w.t(), targets, ignore_index=ops.IGNORE_INDEX, reduction=reduction)
    loss.backward()
    return loss.detach(), h.grad, w.grad


def _kernel(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str):
    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    with buffers.poisoned():
        loss = linear_cross_entropy(h, w, targets, reduction=reduction)
        loss.backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.claim("CE-101")
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_loss_matches_float64(device: torch.device, dtype: torch.dtype, reduction: str) -> None:
    rows = chunk_rows(N, D, V)
    assert -(-N // rows) >= 3 and N % rows, "the shape must give several chunks and a short last one"
    hidden, weight, targets = _case(device, dtype)
    with buffers.poisoned():
        loss = linear_cross_entropy(hidden, weight, targets, reduction=reduction)
    assert rel_err(loss, _reference(hidden, weight, targets, reduction)[0]) <= tolerance("CE-101", dtype)


@pytest.mark.claim("CE-102")
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_gradients_match_float64(device: torch.device, dtype: torch.dtype, reduction: str) -> None:
    hidden, weight, targets = _case(device, dtype, seed=1)
    _, dh, dw = _kernel(hidden, weight, targets, reduction)
    _, dh_ref, dw_ref = _reference(hidden, weight, targets, reduction)
    ignored = targets == ops.IGNORE_INDEX
    assert dh[ignored].abs().max().item() == 0, "ignored rows must receive no gradient"
    assert rel_err(dh, dh_ref) <= tolerance("CE-102", dtype), "hidden gradient"
    assert rel_err(dw, dw_ref) <= tolerance("CE-102", dtype), "head gradient"


@pytest.mark.cuda
@pytest.mark.claim("CE-103")
def test_kernel_peak_memory_below_reference(device: torch.device) -> None:
    n, d, v = 8192, 1024, 32768
    g = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(n, d, generator=g, device=device, dtype=torch.bfloat16)
    weight = torch.randn(v, d, generator=g, device=device, dtype=torch.bfloat16) * 0.02
    targets = torch.randint(0, v, (n,), generator=g, device=device)

    def peak(fn) -> int:
        h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(h, w, targets).backward()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base

    fused, reference = peak(linear_cross_entropy), peak(reference_linear_cross_entropy)
    mib = f"fused peak {fused / 2**20:.0f} MiB, reference {reference / 2**20:.0f} MiB"
    assert fused <= tolerance("CE-103") * reference, mib
