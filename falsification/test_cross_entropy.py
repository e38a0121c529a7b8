"""Falsifiers for the ``cross_entropy`` contract (contracts/cross_entropy.yaml)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from albor import ops
from albor.ops.cross_entropy import linear_cross_entropy as reference_linear_cross_entropy
from albor.verify.contracts import declared, tolerance
from albor.verify.numerics import linear_ce_both_ways, rel_err

if importlib.util.find_spec("triton") is not None:  # without it the kernel tests (marked triton) skip
    from albor.kernels import buffers
    from albor.kernels.cross_entropy import chunk_rows, linear_cross_entropy

V = 37


def _data(device: torch.device, dtype: torch.dtype, n: int = 23, seed: int = 0, n_ignored: int = 5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, V, generator=g, dtype=torch.float64) * 3
    targets = torch.randint(0, V, (n,), generator=g)
    targets[torch.randperm(n, generator=g)[:n_ignored]] = ops.IGNORE_INDEX
    return logits.to(device, dtype), targets.to(device)


def _token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Float64 per-token loss of the non-ignored rows."""
    keep = targets != ops.IGNORE_INDEX
    z = logits.double()[keep]
    return torch.logsumexp(z, -1) - z.gather(1, targets[keep, None]).squeeze(1)


@pytest.mark.claim("CE-001")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_shift_invariance(device: torch.device, dtype: torch.dtype) -> None:
    logits, targets = _data(device, dtype)
    shift = torch.randn(logits.shape[0], 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 20
    base = ops.cross_entropy(logits, targets)
    shifted = ops.cross_entropy(logits + shift.to(device, dtype), targets)
    assert rel_err(shifted, base) <= tolerance("CE-001", dtype)


@pytest.mark.claim("CE-002")
def test_non_negative(device: torch.device) -> None:
    logits, targets = _data(device, torch.float32, n_ignored=0)
    # A target holding nearly all the mass is the hardest case for a loss that should stay >= 0.
    logits[0, targets[0]] = 80.0
    for i in range(logits.shape[0]):
        assert ops.cross_entropy(logits[i : i + 1], targets[i : i + 1]).item() >= 0, i
    for reduction in ("mean", "sum"):
        assert ops.cross_entropy(logits, targets, reduction=reduction).item() >= 0


@pytest.mark.claim("CE-003")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_uniform_logits_give_log_vocab(device: torch.device, dtype: torch.dtype) -> None:
    _, targets = _data(device, dtype)
    for value in (0.0, -3.5, 17.25):
        logits = torch.full((targets.shape[0], V), value, device=device, dtype=dtype)
        loss = ops.cross_entropy(logits, targets).item()
        assert abs(loss - math.log(V)) / math.log(V) <= tolerance("CE-003", dtype), value


@pytest.mark.claim("CE-004")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_token_mean_over_non_ignored(device: torch.device, dtype: torch.dtype) -> None:
    logits, targets = _data(device, dtype)
    logits.requires_grad_(True)
    loss = ops.cross_entropy(logits, targets)
    want = _token_losses(logits.detach(), targets).mean()
    assert rel_err(loss, want) <= tolerance("CE-004", dtype)
    loss.backward()
    ignored = targets == ops.IGNORE_INDEX
    assert (logits.grad[ignored] == 0).all(), "ignored rows must receive no gradient"
    assert (logits.grad[~ignored].abs().sum(-1) > 0).all(), "counted rows must receive a gradient"
    other = logits.detach().clone()
    other[ignored] = 1e3
    assert rel_err(ops.cross_entropy(other, targets), loss) <= tolerance("CE-004", dtype)


@pytest.mark.claim("CE-005")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sum_mean_relation(device: torch.device, dtype: torch.dtype) -> None:
    logits, targets = _data(device, dtype)
    n = int((targets != ops.IGNORE_INDEX).sum())
    total = ops.cross_entropy(logits, targets, reduction="sum")
    mean = ops.cross_entropy(logits, targets, reduction="mean")
    assert rel_err(total, mean.double() * n) <= tolerance("CE-005", dtype)


@pytest.mark.claim("CE-006")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_equals_explicit_logits(device: torch.device, dtype: torch.dtype, reduction: str) -> None:
    g = torch.Generator().manual_seed(1)
    _, targets = _data(device, dtype)
    hidden = torch.randn(targets.shape[0], 19, generator=g, dtype=torch.float64).to(device, dtype)
    weight = (torch.randn(V, 19, generator=g, dtype=torch.float64) * 0.3).to(device, dtype)
    results = linear_ce_both_ways(hidden, weight, targets, reduction)
    tol = tolerance("CE-006", dtype)
    for name, got, want in zip(("loss", "d/dhidden", "d/dweight"), *results, strict=True):
        assert rel_err(got, want) <= tol, name


@pytest.mark.claim("CE-007")
def test_ignored_id_and_defaults(device: torch.device) -> None:
    # The declared id (-100, what Hugging Face labels use), written out, is left out with no ignore_index given;
    # without reduction both functions take the token mean; an ignore_index passed is the one left out.
    g = torch.Generator().manual_seed(7)
    hidden = torch.randn(19, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(V, 8, generator=g, dtype=torch.float64)
    targets = torch.randint(0, V, (19,), generator=g)
    logits = hidden @ weight.t()

    def mean_over(rows: list[int]) -> float:
        return sum(torch.logsumexp(logits[n], 0).item() - logits[n, targets[n]].item() for n in rows) / len(rows)

    masked = targets.clone()
    masked[::3] = declared("cross_entropy", "ignore_index")
    want = mean_over([n for n in range(19) if n % 3])
    h, w, lg = hidden.to(device), weight.to(device), logits.to(device)
    assert abs(ops.cross_entropy(lg, masked.to(device)).item() - want) <= 1e-12
    assert abs(ops.linear_cross_entropy(h, w, masked.to(device)).item() - want) <= 1e-12
    skip = int(targets[0])
    want = mean_over([n for n in range(19) if targets[n] != skip])
    got = [ops.cross_entropy(lg, targets.to(device), ignore_index=skip),
           ops.linear_cross_entropy(h, w, targets.to(device), ignore_index=skip)]  # fmt: skip
    assert all(abs(x.item() - want) <= 1e-12 for x in got), "the ignore_index passed is left out"


# The Triton kernel, against the same float64 references.

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


@pytest.mark.triton
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


@pytest.mark.triton
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


@pytest.mark.triton
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
