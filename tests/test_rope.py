"""Property tests for RoPE (contracts/rope.yaml) over random shapes, positions and head sizes."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from albor import ops
from albor.contracts import tolerance

seeds = st.integers(0, 2**31 - 1)
head_dims = st.integers(1, 12).map(lambda h: 2 * h)
positions = st.integers(0, 5000)


def _x(seed: int, t: int, heads: int, hd: int) -> torch.Tensor:
    return torch.randn(2, t, heads, hd, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    cos, sin = ops.rope_tables(pos, x.shape[-1], dtype=torch.float64)
    return ops.apply_rope(x, x, cos, sin)[0]


@given(seeds, st.integers(1, 9), st.integers(1, 4), head_dims, positions)
def test_norm_preserved(seed: int, t: int, heads: int, hd: int, start: int) -> None:
    x = _x(seed, t, heads, hd)
    r = _rope(x, torch.arange(start, start + t))
    rel = ((r.norm(dim=-1) - x.norm(dim=-1)).abs() / x.norm(dim=-1)).max().item()
    assert rel <= tolerance("ROPE-001", torch.float64)


@given(seeds, head_dims, positions, positions, st.integers(-1000, 1000))
def test_score_depends_on_offset_only(seed: int, hd: int, m: int, n: int, shift: int) -> None:
    q, k = _x(seed, 1, 1, hd), _x(seed + 1, 1, 1, hd)
    shift = max(shift, -min(m, n))

    def score(a: int, b: int) -> float:
        return (_rope(q, torch.tensor([a])) * _rope(k, torch.tensor([b]))).sum().item()

    scale = q.norm().item() * k.norm().item()
    assert abs(score(m, n) - score(m + shift, n + shift)) <= tolerance("ROPE-002", torch.float64) * scale


@given(seeds, st.integers(1, 4), head_dims)
def test_position_zero_is_identity(seed: int, heads: int, hd: int) -> None:
    x = _x(seed, 1, heads, hd)
    assert (_rope(x, torch.tensor([0])) - x).abs().max().item() <= tolerance("ROPE-004", torch.float64)


@given(seeds, head_dims, positions, positions)
def test_rotations_compose(seed: int, hd: int, m: int, n: int) -> None:
    x = _x(seed, 1, 2, hd)
    twice = _rope(_rope(x, torch.tensor([m])), torch.tensor([n]))
    assert (twice - _rope(x, torch.tensor([m + n]))).abs().max().item() <= 1e-9 * x.abs().max().item()
