"""Closed-form references the battery compares the runtime with; they share no code with it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from albor.config import ModelConfig, OptimConfig


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


def muon_reference(
    p: torch.Tensor,
    g: torch.Tensor,
    buf: torch.Tensor,
    lr: float,
    weight_decay: float,
    momentum: float,
    coefficients: tuple[float, float, float],
    ns_steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Muon step on a matrix (Jordan 2024; lr scaled as in Liu et al. 2025), in the dtype of ``p``.

    Nesterov momentum, then ``ns_steps`` quintic Newton-Schulz iterations on the update normalised by its
    Frobenius norm, the learning rate scaled by 0.2·sqrt(max(rows, cols)), and decoupled weight decay.
    Returns the new parameter and momentum buffer.
    """
    buf = momentum * buf + g
    x = g + momentum * buf
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.T
    x = x / x.norm()
    a, b, c = coefficients
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    update = x if wide else x.T
    scaled = lr * 0.2 * math.sqrt(max(p.shape))
    return p * (1 - lr * weight_decay) - scaled * update, buf


def lr_reference(step: int, lr: float, min_lr: float, warmup: int, max_steps: int) -> float:
    """The learning rate at optimizer step ``step`` (from 0): linear warmup to lr over ``warmup`` steps,
    then half a cosine from lr at step ``warmup`` to min_lr at step max_steps - 1, min_lr after."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / (max_steps - 1 - warmup)) if max_steps - 1 > warmup else 1.0
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * t)) / 2


def decoder_logits(w: Mapping[str, torch.Tensor], cfg: ModelConfig, idx: torch.Tensor) -> torch.Tensor:
    """Logits (B, T, V) of the LLaMA decoder with weights ``w`` (named as in ``Decoder.state_dict()``), written out
    from the equations: RMSNorm, rotate-half RoPE of base rope_theta, causal GQA attention (query head h reads
    key head h // (H / H_kv)), SwiGLU, final RMSNorm, head (the embedding when there is no head weight)."""
    b, t = idx.shape
    d, h, h_kv = cfg.d_model, cfg.n_heads, cfg.n_kv_heads
    hd = d // h
    angles = torch.arange(t, dtype=torch.float64)[:, None] * cfg.rope_theta ** (
        -2 * torch.arange(hd // 2, dtype=torch.float64) / hd
    )
    cos, sin = angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]

    def norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + cfg.norm_eps) * gain

    def rope(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    future = torch.ones(t, t, dtype=torch.bool).triu(1)
    x = w["embed.weight"][idx]
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."
        q, k, v = (norm(x, w[p + "attn_norm"]) @ w[p + "attn.qkv.weight"].T).split([h * hd, h_kv * hd, h_kv * hd], -1)
        q, k = rope(q.reshape(b, t, h, hd)), rope(k.reshape(b, t, h_kv, hd))
        k = k.repeat_interleave(h // h_kv, dim=2)
        v = v.reshape(b, t, h_kv, hd).repeat_interleave(h // h_kv, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(hd)
        att = scores.masked_fill(future, -math.inf).softmax(-1)
        x = x + torch.einsum("bhqk,bkhd->bqhd", att, v).reshape(b, t, d) @ w[p + "attn.out.weight"].T
        gate, up = (norm(x, w[p + "ffn_norm"]) @ w[p + "ffn.gate_up.weight"].T).chunk(2, -1)
        x = x + (gate * torch.sigmoid(gate) * up) @ w[p + "ffn.down.weight"].T
    head = w["head.weight"] if "head.weight" in w else w["embed.weight"]
    return norm(x, w["norm"]) @ head.T


@dataclass
class ReferenceStep:
    """What one reference optimizer step computed, and the state it left."""

    loss: float
    grad_norm: float
    lr: float
    weights: dict[str, torch.Tensor]
    exp_avg: dict[str, torch.Tensor]
    exp_avg_sq: dict[str, torch.Tensor]


def training_reference(
    weights: Mapping[str, torch.Tensor],
    cfg: ModelConfig,
    optim: OptimConfig,
    windows: torch.Tensor,
    steps: int,
    ignore_index: int = -100,
) -> list[ReferenceStep]:
    """``steps`` optimizer steps in float64, each over all of ``windows`` (N, T + 1) at once, in this order:

    1. the loss: the mean over every target that is not ``ignore_index`` of -log softmax(logits)[target], where
       window n's targets are its tokens 1..T and its inputs its tokens 0..T-1 (next-token prediction);
    2. its gradient with respect to every weight;
    3. clipping by the global L2 norm of all gradients together: the factor min(1, grad_clip / (norm + 1e-6))
       (the convention of torch.nn.utils.clip_grad_norm_);
    4. AdamW (``adamw_reference``) at the schedule's lr for the step, decaying matrices only;
    5. gradients gone before the next step.
    """
    w = {k: v.detach().to(torch.float64).clone() for k, v in weights.items()}
    m = {k: torch.zeros_like(v) for k, v in w.items()}
    s = {k: torch.zeros_like(v) for k, v in w.items()}
    x, y = windows[:, :-1], windows[:, 1:].reshape(-1)
    keep = y != ignore_index
    out = []
    for step in range(steps):
        leaves = {k: v.clone().requires_grad_(True) for k, v in w.items()}
        logits = decoder_logits(leaves, cfg, x).reshape(-1, cfg.vocab_size)
        nll = torch.logsumexp(logits[keep], -1) - logits[keep].gather(1, y[keep, None]).squeeze(1)
        loss = nll.sum() / keep.sum()
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values())), strict=True))
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        factor = min(1.0, optim.grad_clip / (norm + 1e-6))
        lr = lr_reference(step, optim.lr, optim.min_lr, optim.warmup_steps, optim.max_steps)
        for k, g in grads.items():
            decay = optim.weight_decay if w[k].ndim >= 2 else 0.0
            w[k], m[k], s[k] = adamw_reference(
                w[k], g * factor, m[k], s[k], step + 1, lr, optim.betas, optim.eps, decay
            )
        out.append(ReferenceStep(float(loss.detach()), norm, lr, dict(w), dict(m), dict(s)))
    return out
