"""Closed-form references the battery compares the runtime with; they share no code with it."""

from __future__ import annotations

import torch


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
