"""Property tests for cross entropy (contracts/cross_entropy.yaml) over random logits and targets."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from albor import ops
from albor.ops.cross_entropy import linear_cross_entropy as reference
from albor.verify.contracts import tolerance
from albor.verify.numerics import linear_ce_both_ways, rel_err

if importlib.util.find_spec("triton") is not None:  # without it the kernel tests (marked triton) skip
    from albor.kernels import buffers
    from albor.kernels.cross_entropy import chunk_rows, linear_cross_entropy, tile


@st.composite
def batches(draw: st.DrawFn, min_counted: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random float64 logits (N, V) and targets with some ignored, at least ``min_counted`` not."""
    n, vocab = draw(st.integers(1, 13)), draw(st.integers(2, 40))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    logits = torch.randn(n, vocab, generator=g, dtype=torch.float64) * draw(st.floats(0.1, 10))
    targets = torch.randint(0, vocab, (n,), generator=g)
    ignored = torch.rand(n, generator=g) < draw(st.floats(0, 0.7))
    ignored[: min(min_counted, n)] = False
    return logits, targets.masked_fill(ignored, ops.IGNORE_INDEX)


def _token_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    keep = targets != ops.IGNORE_INDEX
    return torch.logsumexp(logits[keep], -1) - logits[keep].gather(1, targets[keep, None]).squeeze(1)


@given(batches(), st.floats(-50, 50))
def test_shift_invariant(batch: tuple[torch.Tensor, torch.Tensor], c: float) -> None:
    logits, targets = batch
    shift = c * torch.linspace(-1, 1, logits.shape[0], dtype=torch.float64)[:, None]
    base = ops.cross_entropy(logits, targets)
    assert rel_err(ops.cross_entropy(logits + shift, targets), base) <= tolerance("CE-001", torch.float64)


@given(batches())
def test_matches_token_mean_and_non_negative(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, targets = batch
    want = _token_losses(logits, targets)
    loss = ops.cross_entropy(logits, targets)
    assert loss.item() >= 0 and (want >= 0).all()
    assert rel_err(loss, want.mean()) <= tolerance("CE-004", torch.float64)


@given(batches(), st.floats(-100, 100))
def test_uniform_logits_give_log_vocab(batch: tuple[torch.Tensor, torch.Tensor], value: float) -> None:
    logits, targets = batch
    loss = ops.cross_entropy(torch.full_like(logits, value), targets).item()
    assert abs(loss - math.log(logits.shape[1])) <= tolerance("CE-003", torch.float64) * math.log(logits.shape[1])


@given(batches())
def test_argmax_target_bounded_by_log_vocab(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    # A target holding the largest logit has probability at least 1/V.
    logits, _ = batch
    loss = ops.cross_entropy(logits, logits.argmax(-1)).item()
    assert 0 <= loss <= math.log(logits.shape[1]) + 1e-12


@given(batches())
def test_sum_is_mean_times_count(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, targets = batch
    n = int((targets != ops.IGNORE_INDEX).sum())
    total = ops.cross_entropy(logits, targets, reduction="sum")
    assert rel_err(total, ops.cross_entropy(logits, targets) * n) <= tolerance("CE-005", torch.float64)


@given(batches())
def test_gradient_is_softmax_minus_onehot_over_count(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    logits, targets = batch
    logits.requires_grad_(True)
    ops.cross_entropy(logits, targets).backward()
    keep = targets != ops.IGNORE_INDEX
    want = torch.softmax(logits.detach(), -1)
    want[keep] -= torch.nn.functional.one_hot(targets[keep], logits.shape[1]).double()
    want[~keep] = 0
    assert rel_err(logits.grad, want / keep.sum()) <= 1e-12


@given(batches(), st.integers(1, 17), st.sampled_from(["mean", "sum"]))
def test_linear_matches_explicit_logits(batch: tuple[torch.Tensor, torch.Tensor], d: int, reduction: str) -> None:
    logits, targets = batch
    g = torch.Generator().manual_seed(d)
    hidden = torch.randn(logits.shape[0], d, generator=g, dtype=torch.float64)
    weight = torch.randn(logits.shape[1], d, generator=g, dtype=torch.float64)
    grads = linear_ce_both_ways(hidden, weight, targets, reduction)
    for got, want in zip(*grads, strict=True):
        assert rel_err(got, want) <= tolerance("CE-006", torch.float64)


# The Triton kernel, against the same float64 references.

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FEW = settings(max_examples=max(5, settings.default.max_examples // 5))  # the interpreter is slow


def _case(seed: int, n: int, d: int, v: int, n_ignored: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    weight = torch.randn(v, d, generator=g, dtype=torch.float64)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[torch.randperm(n, generator=g)[:n_ignored]] = -100
    return hidden.to(DEVICE, dtype), weight.to(DEVICE, dtype), targets.to(DEVICE)


def _run(fn, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str):
    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    loss = fn(h, w, targets, reduction=reduction)
    loss.backward()
    return loss.detach(), h.grad, w.grad


@pytest.mark.triton
@given(st.integers(1, 10**5), st.integers(1, 4096), st.integers(2, 200_000))
def test_kernel_chunk_logits_stay_near_four_hidden_sizes(n: int, d: int, v: int) -> None:
    rows = chunk_rows(n, d, v)
    assert 1 <= rows <= n and rows * v <= 4 * n * d + v


@pytest.mark.triton
@FEW
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 20),
    st.integers(1, 6),
    st.integers(2, 70),
    st.integers(0, 20),
    st.sampled_from(["mean", "sum"]),
)
def test_kernel_matches_reference_in_float64(seed: int, n: int, d: int, v: int, n_ignored: int, reduction: str) -> None:
    case = _case(seed, n, d, v, n_ignored=min(n_ignored, n - 1))
    with buffers.poisoned():
        got = _run(linear_cross_entropy, *case, reduction)
    for a, b in zip(got, _run(reference, *case, reduction), strict=True):
        assert rel_err(a, b) <= 1e-12


@pytest.mark.triton
def test_kernel_vocabulary_over_several_blocks() -> None:
    # The online softmax over column blocks: the largest logit sits in the last, partial block.
    _, block_v = tile(10**6)
    hidden, weight, targets = _case(0, 3, 2, block_v + 37)
    weight[-5:] *= 40
    with buffers.poisoned():
        got = _run(linear_cross_entropy, hidden, weight, targets, "mean")
    for a, b in zip(got, _run(reference, hidden, weight, targets, "mean"), strict=True):
        assert rel_err(a, b) <= 1e-12


@pytest.mark.triton
def test_kernel_out_of_range_target_poisons_the_loss() -> None:
    hidden, weight, targets = _case(1, 5, 3, 11)
    targets[2] = 11
    assert math.isnan(linear_cross_entropy(hidden, weight, targets).item())


@pytest.mark.triton
def test_kernel_all_ignored_matches_reference() -> None:
    hidden, weight, targets = _case(2, 4, 3, 7, n_ignored=4)
    got, want = (
        _run(linear_cross_entropy, hidden, weight, targets, "mean"),
        _run(reference, hidden, weight, targets, "mean"),
    )
    assert math.isnan(got[0].item()) and math.isnan(want[0].item())
    assert got[1].abs().max().item() == 0 and got[2].abs().max().item() == 0
    assert linear_cross_entropy(hidden, weight, targets, reduction="sum").item() == 0


@pytest.mark.triton
def test_kernel_forward_without_gradients() -> None:
    hidden, weight, targets = _case(3, 6, 3, 9)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets)
    assert rel_err(loss, reference(hidden, weight, targets)) <= 1e-12


@pytest.mark.triton
def test_kernel_autocast_matches_reference_under_autocast() -> None:
    hidden, weight, targets = _case(4, 9, 5, 13, dtype=torch.float32)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        got = _run(linear_cross_entropy, hidden, weight, targets, "mean")
        want = _run(reference, hidden, weight, targets, "mean")
    assert got[1].dtype == got[2].dtype == torch.float32, "gradients reach float32 leaves in their dtype"
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) <= 2e-2


@pytest.mark.triton
@pytest.mark.parametrize(
    ("shapes", "reduction", "match"),
    [(((4, 3), (7, 3), (4,)), "none", "reduction"), (((4, 3), (7, 2), (4,)), "mean", "hidden"),
     (((4, 3), (7, 3), (5,)), "mean", "targets")],
)  # fmt: skip
def test_kernel_bad_arguments_are_refused(shapes, reduction: str, match: str) -> None:
    h, w, t = shapes
    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(torch.ones(h), torch.ones(w), torch.zeros(t, dtype=torch.long), reduction=reduction)
