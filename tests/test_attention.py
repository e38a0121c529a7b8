"""Property tests for causal GQA attention (contracts/attention.yaml) over random shapes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor import ops
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err


@st.composite
def problems(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (q, k, v) with Hkv dividing H and 1 <= Tq <= Tk."""
    hkv, rep = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    tk = draw(st.integers(1, 12))
    tq = draw(st.integers(1, tk))
    b, d = draw(st.integers(1, 2)), draw(st.integers(1, 9))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q = torch.randn(b, hkv * rep, tq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hkv, tk, d, generator=g, dtype=torch.float64) * 2
    return q, k, torch.randn(b, hkv, tk, d, generator=g, dtype=torch.float64)


def _reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    tq, tk = q.shape[2], k.shape[2]
    future = torch.arange(tk)[None, :] > torch.arange(tq)[:, None] + (tk - tq)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(future, float("-inf"))
    return torch.softmax(scores, -1) @ v


@given(problems())
def test_matches_reference(qkv: tuple[torch.Tensor, ...]) -> None:
    assert rel_err(ops.attention(*qkv), _reference(*qkv)) <= tolerance("ATTN-001", torch.float64)


@given(problems())
def test_outputs_within_visible_values(qkv: tuple[torch.Tensor, ...]) -> None:
    # Each output is a convex combination of the values it may see.
    q, k, v = qkv
    out = ops.attention(q, k, v).unflatten(1, (k.shape[1], -1))  # (B, Hkv, H/Hkv, Tq, D)
    offset = k.shape[2] - q.shape[2]
    for i in range(q.shape[2]):
        seen = v[:, :, : i + offset + 1]
        lo, hi = seen.amin(2)[:, :, None], seen.amax(2)[:, :, None]
        row = out[:, :, :, i]
        assert ((row >= lo - 1e-12) & (row <= hi + 1e-12)).all(), i


@given(problems())
def test_first_position_sees_only_itself(qkv: tuple[torch.Tensor, ...]) -> None:
    q, k, v = qkv
    tk = k.shape[2]
    earlier = torch.randn(*q.shape[:2], tk - q.shape[2], q.shape[3], generator=torch.Generator().manual_seed(0))
    full_q = torch.cat([earlier.double(), q], 2)
    out = ops.attention(full_q, k, v)
    first = v[:, :, :1].repeat_interleave(q.shape[1] // k.shape[1], 1)
    assert (out[:, :, :1] - first).abs().max().item() <= 1e-12


@given(problems(), st.integers(0, 11))
def test_future_changes_never_reach_the_past(qkv: tuple[torch.Tensor, ...], t: int) -> None:
    q, k, v = qkv
    tk, tq = k.shape[2], q.shape[2]
    t = min(t, tk - 1)
    qt = t - (tk - tq)  # the query row at key position t, if it is among the queries
    k2, v2, q2 = k.clone(), v.clone(), q.clone()
    k2[:, :, t + 1 :] += 3.0
    v2[:, :, t + 1 :] -= 5.0
    q2[:, :, max(qt + 1, 0) :] *= -1.5
    if qt >= 0:
        base, out = ops.attention(q, k, v), ops.attention(q2, k2, v2)
        diff = (out[:, :, : qt + 1] - base[:, :, : qt + 1]).abs().max().item()
        assert diff <= tolerance("ATTN-002", torch.float64)


@given(problems(), st.integers(1, 12))
def test_cached_suffix_equals_full_rows(qkv: tuple[torch.Tensor, ...], n: int) -> None:
    q, k, v = qkv
    n = min(n, q.shape[2])
    full = ops.attention(q, k, v)
    assert rel_err(ops.attention(q[:, :, -n:], k, v), full[:, :, -n:]) <= tolerance("ATTN-004", torch.float64)


@given(problems())
def test_gqa_equals_repeated_heads(qkv: tuple[torch.Tensor, ...]) -> None:
    q, k, v = qkv
    rep = q.shape[1] // k.shape[1]
    full = ops.attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))
    assert (ops.attention(q, k, v) - full).abs().max().item() <= tolerance("ATTN-003", torch.float64)


def test_kv_heads_must_divide_heads() -> None:
    q, k = torch.randn(1, 3, 4, 8), torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="n_kv_heads"):
        ops.attention(q, k, k)
