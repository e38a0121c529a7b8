"""DataCursor: which windows each rank trains on, in a seeded order that resumes exactly, on any world size.

Epoch e visits a fresh permutation of ALL windows (across shards, ALB-121), drawn from (seed, e).
An optimizer step consumes one global batch of G = B·W·A windows (micro-batch B, W ranks, A
accumulated micro-batches): step s of an epoch is the permutation's slice [s·G, (s+1)·G), and its
micro-batch i on rank r is the sub-slice at (i·W + r)·B. The epoch's tail that does not fill a
whole global batch is dropped. Everything follows from the number of micro-batches yielded so far.

The saved state names the optimizer steps taken and the global batch, not the ranks: a run saved
on W ranks resumes on W' ranks (with A' = G / (B·W') accumulated micro-batches) and its steps see
the same windows, re-sliced.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

STATE_VERSION = 2


def epoch_order(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of all window indices that epoch ``epoch`` visits."""
    return _permutation(n_windows, seed, epoch)


@lru_cache(maxsize=2)  # this epoch's order and the next one's
def _permutation(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_windows)


class DataCursor:
    """A rank's position in the data: ``next_batch()`` gives its next micro-batch of window indices."""

    def __init__(
        self, n_windows: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, grad_accum: int = 1
    ) -> None:
        if batch_size <= 0 or world_size <= 0 or grad_accum <= 0:
            raise ValueError(
                f"batch_size ({batch_size}), world_size ({world_size}) and grad_accum ({grad_accum}) must be positive"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if n_windows < batch_size * world_size * grad_accum:
            raise ValueError(
                f"{n_windows} windows cannot fill one global batch of {batch_size} × {world_size} ranks × "
                f"{grad_accum} micro-batches; lower the batch size or add data"
            )
        self.n_windows = n_windows
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.grad_accum = grad_accum
        self._step = 0

    @property
    def global_batch(self) -> int:
        """Windows one optimizer step consumes, over every rank and micro-batch."""
        return self.batch_size * self.world_size * self.grad_accum

    @property
    def batches_per_epoch(self) -> int:
        """Micro-batches this rank takes in one epoch (whole global batches; the remainder is dropped)."""
        return self.n_windows // self.global_batch * self.grad_accum

    @property
    def step(self) -> int:
        """Micro-batches yielded so far, over all epochs; restored by ``load_state_dict``, never reset."""
        return self._step

    @property
    def epoch(self) -> int:
        """The epoch the next batch comes from."""
        return self._step // self.batches_per_epoch

    def next_batch(self) -> np.ndarray:
        """This rank's window indices for the next micro-batch (``batch_size`` of them)."""
        step, micro = divmod(self._step, self.grad_accum)
        epoch, s = divmod(step, self.n_windows // self.global_batch)
        start = s * self.global_batch + (micro * self.world_size + self.rank) * self.batch_size
        self._step += 1
        return epoch_order(self.n_windows, self.seed, epoch)[start : start + self.batch_size].copy()

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state: the optimizer steps taken, and the data order they are valid for.

        Saved between optimizer steps only: a step's micro-batches are one unit.
        """
        steps, partial = divmod(self._step, self.grad_accum)
        if partial:
            raise ValueError(
                f"the cursor is {partial} micro-batches into a step of {self.grad_accum}; save between steps"
            )
        return {
            "version": STATE_VERSION,
            "steps": steps,
            "seed": self.seed,
            "n_windows": self.n_windows,
            "global_batch": self.global_batch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; refused when it was made for another data order or global batch.

        The ranks and the micro-batch split may differ from the saved run's: the global batch may not.
        """
        expected = self.state_dict() | {"steps": None}
        for key in ("version", "seed", "n_windows", "global_batch"):
            if state.get(key) != expected[key]:
                raise ValueError(
                    f"cursor state was saved with {key}={state.get(key)!r}, this cursor has {key}={expected[key]!r}; "
                    "resuming would change which windows each step sees"
                )
        steps = state.get("steps")
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"cursor state has an invalid steps {steps!r}")
        self._step = steps * self.grad_accum
