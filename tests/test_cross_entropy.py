"""Property tests for cross entropy (contracts/cross_entropy.yaml) over random logits and targets."""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from albor import ops
from albor.contracts import tolerance
from albor.testing import linear_ce_both_ways, rel_err


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
