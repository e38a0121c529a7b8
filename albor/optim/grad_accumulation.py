"""Gradient accumulation weighted by target tokens, so micro-batches add up to one batch (contract
``grad_accumulation``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch

from albor.ops import IGNORE_INDEX

LossSum = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def count_targets(targets: torch.Tensor) -> int:
    """Number of targets that count toward the loss."""
    return int((targets != IGNORE_INDEX).sum())


def accumulate(
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_sum: LossSum,
    n_targets: int | None = None,
    grad_scale: float = 1.0,
    no_sync: Callable[[], AbstractContextManager] | None = None,
) -> torch.Tensor:
    """Backward over micro-batches so that the gradients equal those of one batch of all of them.

    Each micro-batch's summed loss is divided by the step's total target count ``n_targets``
    (counted here when not given; data-parallel callers pass the count over all ranks and
    ``grad_scale`` = world size, since DDP averages gradients). ``no_sync`` skips the gradient
    all-reduce on every micro-batch but the last. Returns the step's token-mean loss over these
    micro-batches, as a device tensor.
    """
    if n_targets is None:
        n_targets = sum(count_targets(y) for _, y in micro_batches)
    if n_targets <= 0:
        raise ValueError("the step has no targets to learn from")
    total: torch.Tensor | None = None
    for i, (x, y) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with nullcontext() if last or no_sync is None else no_sync():
            loss = loss_sum(x, y) / n_targets
            (loss * grad_scale).backward()
        # Summed on the device: a host tensor here would force a copy that waits for the backward.
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None
    return total
