"""AdamW with decoupled weight decay on matrices only (contract ``adamw``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from albor.config import OptimConfig


def param_groups(params: Iterable[nn.Parameter], weight_decay: float) -> list[dict]:
    """Two AdamW groups of the trainable ``params``: matrices decay, vectors (RMSNorm gains) do not."""
    params = [p for p in params if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with the configured betas, eps and decoupled weight decay."""
    return torch.optim.AdamW(
        param_groups(model.parameters(), cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused
    )
