"""DataCursor: which windows each rank trains on, in a seeded order that resumes exactly.

Epoch e visits a fresh permutation of ALL windows (across shards, ALB-121), drawn from (seed, e).
Global batch b of an epoch is the permutation's slice [b·B·W, (b+1)·B·W); rank r takes the r-th
sub-slice of B. The epoch's tail that does not fill a whole global batch is dropped. Everything
follows from the number of batches yielded so far (``step``), which is the whole saved state.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

STATE_VERSION = 1


def epoch_order(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of all window indices that epoch ``epoch`` visits."""
    return _permutation(n_windows, seed, epoch)


@lru_cache(maxsize=2)  # this epoch's order and the next one's
def _permutation(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n_windows)


class DataCursor:
    """A rank's position in the data: ``next_batch()`` gives its next window indices."""

    def __init__(self, n_windows: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        if batch_size <= 0 or world_size <= 0:
            raise ValueError(f"batch_size ({batch_size}) and world_size ({world_size}) must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if n_windows < batch_size * world_size:
            raise ValueError(
                f"{n_windows} windows cannot fill one global batch of {batch_size} × {world_size} ranks; "
                "lower the batch size or add data"
            )
        self.n_windows = n_windows
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self._step = 0

    @property
    def batches_per_epoch(self) -> int:
        """Whole global batches in one epoch (the remainder of the permutation is dropped)."""
        return self.n_windows // (self.batch_size * self.world_size)

    @property
    def step(self) -> int:
        """Batches yielded so far, over all epochs; restored by ``load_state_dict``, never reset."""
        return self._step

    @property
    def epoch(self) -> int:
        """The epoch the next batch comes from."""
        return self._step // self.batches_per_epoch

    def next_batch(self) -> np.ndarray:
        """This rank's window indices for the next batch (``batch_size`` of them)."""
        epoch, b = divmod(self._step, self.batches_per_epoch)
        start = (b * self.world_size + self.rank) * self.batch_size
        self._step += 1
        return epoch_order(self.n_windows, self.seed, epoch)[start : start + self.batch_size].copy()

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable state: the step, and what it is only valid for."""
        return {
            "version": STATE_VERSION,
            "step": self._step,
            "seed": self.seed,
            "n_windows": self.n_windows,
            "batch_size": self.batch_size,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; refused when it was made for another data order or layout."""
        expected = self.state_dict()
        for key in ("version", "seed", "world_size", "n_windows", "batch_size", "rank"):
            if state.get(key) != expected[key]:
                raise ValueError(
                    f"cursor state was saved with {key}={state.get(key)!r}, this cursor has {key}={expected[key]!r}; "
                    "resuming would change which windows each step sees"
                )
        step = state.get("step")
        if not isinstance(step, int) or step < 0:
            raise ValueError(f"cursor state has an invalid step {step!r}")
        self._step = step
