"""Property tests for RoPE (contracts/rope.yaml) over random shapes, positions and head sizes."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from albor import ops
from albor.ops.rope import apply_rope as reference
from albor.ops.rope import rope_tables
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err

if importlib.util.find_spec("triton") is not None:  # without it the kernel tests (marked triton) skip
    from albor.kernels import buffers
    from albor.kernels.rope import apply_rope

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


# The Triton kernel, against the same float64 references.

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FEW = settings(max_examples=max(5, settings.default.max_examples // 5))  # the interpreter is slow


def _run(fn, q: torch.Tensor, k: torch.Tensor, cos, sin, dq, dk):
    q, k = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    rq, rk = fn(q, k, cos, sin)
    torch.autograd.backward((rq, rk), (dq, dk))
    return rq.detach(), rk.detach(), q.grad, k.grad


@pytest.mark.triton
@FEW
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 2),
    st.integers(1, 9),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 12).map(lambda h: 2 * h),
    st.integers(0, 5000),
)
def test_kernel_matches_reference_in_float64(seed: int, b: int, t: int, h: int, hkv: int, hd: int, start: int) -> None:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(DEVICE)

    cos, sin = rope_tables(torch.arange(start, start + t, device=DEVICE), hd, dtype=torch.float64)
    args = (r(b, t, h, hd), r(b, t, hkv, hd), cos, sin, r(b, t, h, hd), r(b, t, hkv, hd))
    with buffers.poisoned():
        got = _run(apply_rope, *args)
    for a, want in zip(got, _run(reference, *args), strict=True):
        assert rel_err(a, want) <= 1e-12


@pytest.mark.triton
def test_kernel_float32_tables_with_bfloat16_heads() -> None:
    q, k = torch.randn(1, 3, 2, 8, device=DEVICE).bfloat16(), torch.randn(1, 3, 1, 8, device=DEVICE).bfloat16()
    cos, sin = rope_tables(torch.arange(3, device=DEVICE), 8)
    for a, b in zip(apply_rope(q, k, cos, sin), reference(q, k, cos, sin), strict=True):
        assert a.dtype == torch.bfloat16 and rel_err(a, b) <= 1e-2


@pytest.mark.triton
@pytest.mark.parametrize(
    ("q", "k", "tables", "match"),
    [
        ((1, 3, 2, 8), (1, 3, 1, 8), (3, 3), "cos"),
        ((1, 3, 2, 7), (1, 3, 1, 7), (3, 3), "even"),
        ((1, 3, 2, 8), (1, 4, 1, 8), (3, 4), "equal B, T"),
    ],
)
def test_kernel_bad_shapes_are_refused(q, k, tables, match: str) -> None:
    cos = torch.ones(tables, device=DEVICE)
    with pytest.raises(ValueError, match=match):
        apply_rope(torch.ones(q, device=DEVICE), torch.ones(k, device=DEVICE), cos, cos)
