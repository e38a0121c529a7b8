"""Parameter groups, AdamW, the LR schedule, global-norm clipping and gradient accumulation.

The trainer calls these functions; the tests compare them to the closed forms kept here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from albor.config import OptimConfig
from albor.falsify import faults
from albor.ops import IGNORE_INDEX


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices decay, vectors (RMSNorm gains) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, cfg: OptimConfig, fused: bool = False) -> torch.optim.AdamW:
    """AdamW with the configured betas, eps and decoupled weight decay."""
    if faults.active("optimizer_ignores_hparams"):
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, fused=fused)
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused
    )


def adamw_reference(
    p: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One AdamW step in closed form (Loshchilov & Hutter 2019), ``step`` counting from 1.

    Returns the new parameter and moments; the decay multiplies p by (1 - lr·wd), apart from the
    gradient moments.
    """
    b1, b2 = betas
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat = m / (1 - b1**step)
    v_hat = v / (1 - b2**step)
    p = p * (1 - lr * weight_decay) - lr * m_hat / (v_hat.sqrt() + eps)
    return p, m, v


def lr_at(step: int, cfg: OptimConfig) -> float:
    """LR at optimizer step ``step`` (0-based): linear warmup, then cosine to min_lr at the last step.

    Warmup reaches lr at step warmup_steps - 1; the cosine starts at lr at step warmup_steps and
    lands on min_lr exactly at step max_steps - 1. Past that it stays at min_lr.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if faults.active("cosine_ignored"):
        return cfg.lr
    span = cfg.max_steps - 1 - cfg.warmup_steps
    progress = 1.0 if span <= 0 else min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping, as a device tensor (reading it is the caller's sync).
    """
    params = [p for p in params if p.grad is not None]
    grads = [p.grad for p in params]
    if faults.active("clip_per_block"):
        norms = [torch.nn.utils.clip_grad_norm_([p], max_norm) for p in params]
        return torch.linalg.vector_norm(torch.stack(norms))
    total = torch.nn.utils.get_total_norm(grads, 2.0)
    used = total**4 if faults.active("clip_norm_fourth_power") else total
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, used)
    return total


LossSum = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def count_targets(targets: torch.Tensor) -> int:
    """Number of targets that count toward the loss."""
    return int((targets != IGNORE_INDEX).sum())


def accumulate(
    micro_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_sum: LossSum,
    params: Sequence[torch.Tensor],
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
        if faults.active("grad_accum_not_written"):
            for p in params:
                p.grad = None
        last = i == len(micro_batches) - 1
        with nullcontext() if last or no_sync is None else no_sync():
            loss = loss_sum(x, y) / n_targets
            (loss * grad_scale).backward()
        # Summed on the device: a host tensor here would force a copy that waits for the backward.
        total = loss.detach() if total is None else total + loss.detach()
    assert total is not None
    return total
