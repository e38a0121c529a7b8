"""Property tests for gradient accumulation (contracts/grad_accumulation.yaml) over random splits."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor import ops
from albor.optim.grad_accumulation import accumulate, count_targets
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err

D, V = 5, 7


@st.composite
def steps(draw: st.DrawFn) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
    """A random step: rows split into micro-batches of random sizes, some targets ignored, and the weights."""
    n = draw(st.integers(2, 24))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=5)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(n, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, V, (n,), generator=g)
    y[torch.rand(n, generator=g) < draw(st.floats(0, 0.8))] = ops.IGNORE_INDEX
    y[draw(st.integers(0, n - 1))] = draw(st.integers(0, V - 1))
    bounds = [0, *cuts, n]
    micro = [(x[a:b], y[a:b]) for a, b in pairwise(bounds)]
    a = torch.randn(D, D, generator=g, dtype=torch.float64).requires_grad_(True)
    w = torch.randn(V, D, generator=g, dtype=torch.float64).requires_grad_(True)
    return micro, [a, w]


def _loss_sum(params: list[torch.Tensor]):
    a, w = params
    return lambda x, y: ops.linear_cross_entropy(torch.tanh(x @ a), w, y, reduction="sum")


def _full(micro, params) -> tuple[torch.Tensor, list[torch.Tensor]]:
    x, y = (torch.cat(t) for t in zip(*micro, strict=True))
    a, w = params
    loss = ops.linear_cross_entropy(torch.tanh(x @ a), w, y)
    return loss.detach(), list(torch.autograd.grad(loss, params))


@given(steps())
def test_equals_full_batch(step) -> None:
    micro, params = step
    want_loss, want_grads = _full(micro, params)
    loss = accumulate(micro, _loss_sum(params))
    assert rel_err(loss, want_loss) <= tolerance("ACCUM-002", torch.float64)
    for p, want in zip(params, want_grads, strict=True):
        assert rel_err(p.grad, want) <= tolerance("ACCUM-001", torch.float64)


@given(steps(), st.integers(1, 4))
def test_data_parallel_split(step, world: int) -> None:
    micro, params = step
    _, want_grads = _full(micro, params)
    n_targets = sum(count_targets(y) for _, y in micro)
    total = [torch.zeros_like(p) for p in params]
    for rank in range(world):
        mine = micro[rank::world]
        if not mine:
            continue
        for p in params:
            p.grad = None
        accumulate(mine, _loss_sum(params), n_targets=n_targets, grad_scale=world)
        total = [t + p.grad for t, p in zip(total, params, strict=True)]
    for t, want in zip(total, want_grads, strict=True):
        assert rel_err(t / world, want) <= tolerance("ACCUM-003", torch.float64)


@given(steps())
def test_order_of_micro_batches_irrelevant(step) -> None:
    micro, params = step
    loss = accumulate(micro, _loss_sum(params))
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    assert rel_err(accumulate(micro[::-1], _loss_sum(params)), loss) <= 1e-13
    for p, g in zip(params, grads, strict=True):
        assert rel_err(p.grad, g) <= 1e-13


def test_no_sync_skips_all_but_last() -> None:
    entered = []

    class Recorder:
        def __enter__(self) -> None:
            entered.append(True)

        def __exit__(self, *exc: object) -> None:
            return None

    x, w = torch.randn(4, D, dtype=torch.float64), torch.randn(V, D, dtype=torch.float64, requires_grad=True)
    micro = [(x[i : i + 1], torch.tensor([i])) for i in range(4)]
    accumulate(micro, lambda a, y: ops.linear_cross_entropy(a, w, y, reduction="sum"), no_sync=Recorder)
    assert len(entered) == 3


def test_all_ignored_refused() -> None:
    w = torch.randn(V, D, requires_grad=True)
    y = torch.full((3,), ops.IGNORE_INDEX)
    with pytest.raises(ValueError, match="no targets"):
        accumulate([(torch.randn(3, D), y)], lambda a, t: ops.linear_cross_entropy(a, w, t, reduction="sum"))
