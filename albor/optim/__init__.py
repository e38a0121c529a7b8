"""The optimizer's parts, one module per contract: AdamW and its parameter groups, Muon for the hidden
matrices, the LR schedule, global-norm clipping, and token-weighted gradient accumulation."""

from __future__ import annotations

import torch
from torch import nn

from albor.config import OptimConfig
from albor.optim import adamw, muon


def build_optimizer(model: nn.Module, cfg: OptimConfig, fused: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``cfg.name`` names, built for ``model``; ``fused``: torch's fused AdamW (CUDA)."""
    builder = muon.build_optimizer if cfg.name == "muon" else adamw.build_optimizer
    return builder(model, cfg, fused=fused)
