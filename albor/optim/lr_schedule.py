"""Linear warmup, then cosine decay to min_lr at the last step (contract ``lr_schedule``)."""

from __future__ import annotations

import math

from albor.config import OptimConfig


def lr_at(step: int, cfg: OptimConfig) -> float:
    """LR at optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr at the last step.

    Warmup reaches lr at step warmup_steps - 1; the cosine starts at lr at step warmup_steps and
    lands on min_lr exactly at step max_steps - 1. Past that it stays at min_lr.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = cfg.max_steps - 1 - cfg.warmup_steps
    progress = 1.0 if span <= 0 else min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))
