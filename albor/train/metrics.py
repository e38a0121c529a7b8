"""A run's metrics: one JSON line per step or evaluation in ``metrics.jsonl``, TensorBoard events if asked."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from albor.io import write_text_atomic


@dataclass
class StepMetrics:
    """What one optimizer step reports."""

    step: int
    loss: float
    lr: float
    grad_norm: float
    tokens: int
    tok_s: float
    mfu: float | None
    mfu_with_head: float | None


class MetricsLog:
    """Appends records to ``run_dir/metrics.jsonl`` (and to ``run_dir/tensorboard`` when asked)."""

    def __init__(self, run_dir: Path, tensorboard: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.tensorboard = tensorboard
        self._writer: Any = None  # a SummaryWriter, once open() ran with tensorboard on

    def open(self) -> None:
        if self.tensorboard and self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.path.parent / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in record.items():
                if key not in ("kind", "step") and isinstance(value, int | float):
                    self._writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])
            self._writer.flush()

    def truncate_after(self, step: int) -> None:
        """Drop the records logged after ``step`` (a killed run wrote them past its last checkpoint).

        A run killed while appending leaves a partial last line; it is dropped with the rest.
        """
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record["step"] <= step:
                keep.append(line)
        write_text_atomic(self.path, "".join(f"{line}\n" for line in keep))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
