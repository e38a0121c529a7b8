"""Rotary position embedding reference, rotate-half convention (Su et al. 2021).

Pairs are (x[i], x[i + d/2]); pair i at position m turns by m·θ_i with θ_i = base^(-2i/d).
"""

from __future__ import annotations

import torch


def rope_tables(
    positions: torch.Tensor, head_dim: int, theta: float = 10000.0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape (T, head_dim/2) for the given integer positions.

    Angles are computed in float64 and rounded once to ``dtype``.
    """
    if head_dim % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {head_dim}")
    inv = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float64) / head_dim)
    angles = positions.to(torch.float64)[:, None] * inv[None, :]
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    dtype = torch.promote_types(x.dtype, torch.float32)
    x1, x2 = x[..., :half].to(dtype), x[..., half:].to(dtype)
    # x is (B, T, H, D); the tables are (T, D/2) and broadcast over batch and heads.
    c, s = cos.to(dtype)[:, None, :], sin.to(dtype)[:, None, :]
    return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).to(x.dtype)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries (B, T, H, D) and keys (B, T, Hkv, D) by the tables from ``rope_tables``."""
    return _rotate(q, cos, sin), _rotate(k, cos, sin)
