"""Causal grouped-query attention reference, through ``F.scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of q (B, H, Tq, D) over k, v (B, Hkv, Tk, D), Hkv dividing H.

    Queries are the last Tq positions of the Tk keys (bottom-right alignment), so the same call
    serves training (Tq = Tk) and cached decoding (Tq < Tk).
    """
    n_heads, n_kv = q.shape[1], k.shape[1]
    if n_heads % n_kv:
        raise ValueError(f"n_kv_heads ({n_kv}) must divide n_heads ({n_heads})")
    tq, tk = q.shape[2], k.shape[2]
    gqa = n_heads != n_kv
    if tq == tk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    mask = torch.ones(tq, tk, dtype=torch.bool, device=q.device).tril(diagonal=tk - tq)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
