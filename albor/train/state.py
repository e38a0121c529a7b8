"""TrainState: everything a run's next step depends on besides its config, in one object.

The weights, the optimizer's moments, the step, the tokens seen, the best validation loss, this
rank's data cursor and its RNG states. ``state_dict`` / ``load_state_dict`` round-trip all of it;
a checkpoint stores the tensors as files and ``progress()`` (the rest, JSON) for every rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from albor.data.cursor import DataCursor
from albor.model import Decoder
from albor.train import rng


@dataclass
class TrainState:
    """A run's resumable state on one rank."""

    model: Decoder
    optimizer: torch.optim.Optimizer
    cursor: DataCursor
    step: int = 0
    tokens_seen: int = 0
    best_val_loss: float | None = None

    def progress(self) -> dict[str, Any]:
        """The JSON part: counters, the best val loss, this rank's cursor and RNG states."""
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "best_val_loss": self.best_val_loss,
            "cursor": self.cursor.state_dict(),
            "rng": rng.capture(),
        }

    def load_progress(self, progress: dict[str, Any]) -> None:
        """Put back what ``progress()`` returned (the cursor refuses another data order or layout)."""
        self.cursor.load_state_dict(progress["cursor"])
        rng.restore(progress["rng"])
        self.step = progress["step"]
        self.tokens_seen = progress["tokens_seen"]
        self.best_val_loss = progress["best_val_loss"]

    def state_dict(self) -> dict[str, Any]:
        """All of it: the model's and the optimizer's state dicts, and the progress."""
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), **self.progress()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put back what ``state_dict()`` returned; the weights load strictly."""
        self.model.load_state_dict(state["model"], strict=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.load_progress(state)
