"""Falsifiers for the ``grad_accumulation`` contract (contracts/grad_accumulation.yaml)."""

from __future__ import annotations

import pytest
import torch

from albor import ops
from albor.config import ModelConfig
from albor.model import Decoder
from albor.optim.grad_accumulation import accumulate
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err

MODEL = ModelConfig(
    name="accum-test", n_layers=1, d_model=12, n_heads=3, n_kv_heads=1, d_ff=10, vocab_size=23, max_seq_len=16
)
T = 7


def _model(device: torch.device) -> Decoder:
    torch.manual_seed(0)
    return Decoder(MODEL.model_copy(update={"init_std": 0.3})).to(device, torch.float64)


def _micro_batches(device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Micro-batches of 1, 3 and 2 rows with 0, 9 and 11 ignored targets: unequal target counts."""
    g = torch.Generator().manual_seed(1)
    batches = []
    for rows, n_ignored in ((1, 0), (3, 9), (2, 11)):
        x = torch.randint(0, MODEL.vocab_size, (rows, T), generator=g)
        y = torch.randint(0, MODEL.vocab_size, (rows, T), generator=g)
        y.view(-1)[torch.randperm(rows * T, generator=g)[:n_ignored]] = ops.IGNORE_INDEX
        batches.append((x.to(device), y.to(device)))
    return batches


def _grads(model: Decoder) -> list[torch.Tensor | None]:
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return grads


def _full_batch(model: Decoder, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    x, y = (torch.cat(t) for t in zip(*batches, strict=True))
    loss = model(x, y)
    loss.backward()
    return loss.detach()


def _loss_sum(model: Decoder):
    return lambda x, y: model(x, y, reduction="sum")


@pytest.mark.claim("ACCUM-001")
def test_gradient_equals_full_batch(device: torch.device) -> None:
    model, batches = _model(device), _micro_batches(device)
    _full_batch(model, batches)
    want = _grads(model)
    accumulate(batches, _loss_sum(model))
    got = _grads(model)
    tol = tolerance("ACCUM-001", torch.float64)
    for (name, _), g, w in zip(model.named_parameters(), got, want, strict=True):
        assert g is not None and g.abs().max().item() > 0, f"no gradient written for {name}"
        assert rel_err(g, w) <= tol, name


@pytest.mark.claim("ACCUM-002")
def test_loss_equals_full_batch(device: torch.device) -> None:
    model, batches = _model(device), _micro_batches(device)
    want = _full_batch(model, batches)
    model.zero_grad(set_to_none=True)
    got = accumulate(batches, _loss_sum(model))
    assert rel_err(got, want) <= tolerance("ACCUM-002", torch.float64)


@pytest.mark.claim("ACCUM-003")
def test_data_parallel_average_equals_full_batch(device: torch.device) -> None:
    model, batches = _model(device), _micro_batches(device)
    _full_batch(model, batches)
    want = _grads(model)
    ranks = [batches[:1], batches[1:]]
    n_targets = sum(int((y != ops.IGNORE_INDEX).sum()) for _, y in batches)
    per_rank = []
    for rank_batches in ranks:
        accumulate(rank_batches, _loss_sum(model), n_targets, grad_scale=len(ranks))
        per_rank.append(_grads(model))
    for (name, _), w, *gs in zip(model.named_parameters(), want, *per_rank, strict=True):
        average = sum(gs) / len(ranks)
        assert rel_err(average, w) <= tolerance("ACCUM-003", torch.float64), name


@pytest.mark.claim("ACCUM-004")
def test_no_targets_refused(device: torch.device) -> None:
    model = _model(device)
    x = torch.zeros(1, T, dtype=torch.long, device=device)
    y = torch.full((1, T), ops.IGNORE_INDEX, device=device)
    with pytest.raises(ValueError, match=r"^the step has no targets to learn from$"):
        accumulate([(x, y)], _loss_sum(model))
    with pytest.raises(ValueError, match=r"^the step has no targets to learn from$"):
        accumulate([(x, y)], _loss_sum(model), n_targets=0)
    y[0, -1] = 3  # one target, at the last position: the smallest step there is
    loss = accumulate([(x, y)], _loss_sum(model))
    assert rel_err(loss, model(x, y).detach()) <= tolerance("ACCUM-002", torch.float64)


class _NoSync:
    """A stand-in for DDP's ``no_sync``: records, for every loss computed, whether it ran inside one."""

    def __init__(self) -> None:
        self.inside = False
        self.seen: list[bool] = []

    def __call__(self) -> _NoSync:
        return self

    def __enter__(self) -> None:
        self.inside = True

    def __exit__(self, *exc: object) -> None:
        self.inside = False


@pytest.mark.claim("ACCUM-005")
@pytest.mark.parametrize("k", [1, 2, 3])
def test_no_sync_on_every_micro_batch_but_the_last(device: torch.device, k: int) -> None:
    model, batches, no_sync = _model(device), _micro_batches(device)[:k], _NoSync()

    def loss_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        no_sync.seen.append(no_sync.inside)
        return model(x, y, reduction="sum")

    accumulate(batches, loss_sum, no_sync=no_sync)
    assert no_sync.seen == [True] * (k - 1) + [False], "the all-reduce must run exactly once, on the last"
    assert not no_sync.inside
