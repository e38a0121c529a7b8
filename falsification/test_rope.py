"""Falsifiers for the ``rope`` contract (contracts/rope.yaml)."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor import ops
from albor.ops.rope import rope_tables
from albor.verify.contracts import declared, tolerance
from albor.verify.numerics import rel_err, rounded_once_excess

if importlib.util.find_spec("triton") is not None:  # without it the kernel tests (marked triton) skip
    from albor.kernels import buffers
    from albor.kernels.rope import apply_rope

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _qk(device: torch.device, dtype: torch.dtype, t: int = 13, hd: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(3, t, 4, hd, generator=g, dtype=torch.float64).to(device, dtype)
    k = torch.randn(3, t, 2, hd, generator=g, dtype=torch.float64).to(device, dtype)
    return q, k


@pytest.mark.claim("ROPE-001")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_norm_preserved(device: torch.device, dtype: torch.dtype) -> None:
    q, k = _qk(device, dtype)
    cos, sin = ops.rope_tables(torch.arange(1000, 1013, device=device), q.shape[-1], dtype=torch.float64)
    rq, rk = ops.apply_rope(q, k, cos, sin)
    for x, r in ((q, rq), (k, rk)):
        n_in, n_out = x.double().norm(dim=-1), r.double().norm(dim=-1)
        assert ((n_out - n_in).abs() / n_in).max().item() <= tolerance("ROPE-001", dtype)


@pytest.mark.claim("ROPE-002")
def test_relative_position(device: torch.device) -> None:
    q, k = _qk(device, torch.float64, t=1)
    hd = q.shape[-1]

    def score(m: int, n: int) -> torch.Tensor:
        cq, sq = ops.rope_tables(torch.tensor([m], device=device), hd, dtype=torch.float64)
        ck, sk = ops.rope_tables(torch.tensor([n], device=device), hd, dtype=torch.float64)
        rq, _ = ops.apply_rope(q, k, cq, sq)
        _, rk = ops.apply_rope(q, k, ck, sk)
        return (rq[:, :, :2] * rk).sum(-1)

    base = score(7, 3)
    tol = tolerance("ROPE-002", torch.float64)
    for m, n in ((4, 0), (100, 96), (1027, 1023)):
        assert (score(m, n) - base).abs().max().item() <= tol
    assert (score(9, 3) - base).abs().max().item() > 1e-3, "a different offset must change the score"


@pytest.mark.claim("ROPE-003")
def test_backward_matches_reference(device: torch.device) -> None:
    q, k = _qk(device, torch.float64, t=5, hd=6)
    cos, sin = ops.rope_tables(torch.arange(3, 8, device=device), q.shape[-1], dtype=torch.float64)
    q.requires_grad_(True)
    k.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: ops.apply_rope(a, b, cos, sin), (q, k))


@pytest.mark.claim("ROPE-004")
def test_position_zero_identity_and_rotation(device: torch.device) -> None:
    q, k = _qk(device, torch.float64, t=2)
    cos, sin = ops.rope_tables(torch.arange(0, 2, device=device), q.shape[-1], dtype=torch.float64)
    rq, rk = ops.apply_rope(q, k, cos, sin)
    tol = tolerance("ROPE-004", torch.float64)
    assert (rq[:, 0] - q[:, 0]).abs().max().item() <= tol
    assert (rk[:, 0] - k[:, 0]).abs().max().item() <= tol
    assert (rq[:, 1] - q[:, 1]).abs().max().item() > 1e-3, "position 1 must rotate q"
    assert (rk[:, 1] - k[:, 1]).abs().max().item() > 1e-3, "position 1 must rotate k"


@pytest.mark.claim("ROPE-005")
@given(base=st.floats(1.5, 1e6), half=st.integers(1, 48), start=st.integers(0, 100_000))
def test_tables_are_the_declared_angles(base: float, half: int, start: int) -> None:
    hd, positions = 2 * half, [start, start + 1, start + 2, start + 997]
    tol = tolerance("ROPE-005", torch.float64)
    at = torch.tensor(positions)
    given_base = (base, rope_tables(at, hd, base, torch.float64))
    default_base = (declared("rope", "base"), rope_tables(at, hd, dtype=torch.float64))
    for b, tables in (given_base, default_base):
        angles = [[m * b ** (-2 * i / hd) for i in range(half)] for m in positions]
        for table, f in zip(tables, (math.cos, math.sin), strict=True):
            want = torch.tensor([[f(a) for a in row] for row in angles], dtype=torch.float64)
            assert table.shape == (len(positions), half)
            assert (table - want).abs().max().item() <= tol * max(1, start), (b, hd)


@pytest.mark.claim("ROPE-006")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tables_rounded_once_on_the_positions_device(dtype: torch.dtype) -> None:
    at = torch.tensor([0, 1, 7, 4095])
    cos, sin = rope_tables(at, 12, 500000.0, dtype)
    cos64, sin64 = rope_tables(at, 12, 500000.0, torch.float64)
    assert cos.dtype == sin.dtype == dtype and cos.shape == sin.shape == (4, 6)
    assert torch.equal(cos, cos64.to(dtype)) and torch.equal(sin, sin64.to(dtype)), "float64 angles, rounded once"
    # Built where the positions are: the meta device has no default to fall back on.
    meta = rope_tables(at.to("meta"), 12, 500000.0, dtype)
    assert all(t.device.type == "meta" and t.shape == (4, 6) for t in meta)
    for odd in (1, 7):
        with pytest.raises(ValueError, match=f"^head_dim must be even for RoPE, got {odd}$"):
            rope_tables(at, odd)


@pytest.mark.claim("ROPE-007")
def test_bfloat16_rotation_rounded_once(device: torch.device) -> None:
    # bfloat16 queries and keys with bfloat16 tables (a bfloat16 model's buffers): the rotation runs in float32
    # and rounds once, so every element is within half a bfloat16 ulp of the float64 rotation of the same inputs.
    q, k = _qk(device, torch.bfloat16, t=16, hd=64, seed=4)
    cos, sin = rope_tables(torch.arange(1000, 1016, device=device), 64, dtype=torch.bfloat16)
    rq, rk = ops.apply_rope(q, k, cos, sin)
    for got, x in ((rq, q), (rk, k)):
        x64, c, s = x.double(), cos.double()[:, None, :], sin.double()[:, None, :]
        x1, x2 = x64[..., :32], x64[..., 32:]
        want = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
        assert got.dtype == torch.bfloat16 and rounded_once_excess(got, want) <= 0, "not rounded once"


# The Triton kernel, against the same float64 references.

DTYPES = [torch.float32, torch.bfloat16]
B, T, H, HKV, D = 2, 5, 6, 2, 10  # odd T, H not a power of two, D/2 = 5


def _case(device: torch.device, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, T, (H + 2 * HKV) * D, generator=g, dtype=torch.float64).to(device, dtype)
    dq = torch.randn(B, T, H, D, generator=g, dtype=torch.float64).to(device, dtype)
    dk = torch.randn(B, T, HKV, D, generator=g, dtype=torch.float64).to(device, dtype)
    cos, sin = rope_tables(torch.arange(1000, 1000 + T, device=device), D)
    return qkv, dq, dk, cos, sin


def _split(qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, _ = qkv.split([H * D, HKV * D, HKV * D], dim=-1)
    return q.view(B, T, H, D), k.view(B, T, HKV, D)


def _reference(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dq, dk):
    """Rotated q, k and their input gradients in float64, from the same (rounded) inputs."""
    q64, k64 = q.double().requires_grad_(True), k.double().requires_grad_(True)
    c, s = cos.double()[:, None, :], sin.double()[:, None, :]

    def rot(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., : D // 2], x[..., D // 2 :]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)

    rq, rk = rot(q64), rot(k64)
    torch.autograd.backward((rq, rk), (dq.double(), dk.double()))
    return rq.detach(), rk.detach(), q64.grad, k64.grad


def _kernel(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, dq, dk):
    leaf = qkv.clone().requires_grad_(True)
    with buffers.poisoned():
        rq, rk = apply_rope(*_split(leaf), cos, sin)
        torch.autograd.backward((rq, rk), (dq, dk))
    gq, gk = _split(leaf.grad)
    return rq.detach(), rk.detach(), gq, gk


@pytest.mark.triton
@pytest.mark.claim("ROPE-101")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_forward_matches_float64(device: torch.device, dtype: torch.dtype) -> None:
    qkv, _, _, cos, sin = _case(device, dtype)
    with buffers.poisoned():
        rq, rk = apply_rope(*_split(qkv), cos, sin)
    ref_q, ref_k, _, _ = _reference(*_split(qkv), cos, sin, torch.zeros_like(rq), torch.zeros_like(rk))
    assert rq.dtype == rk.dtype == dtype
    assert rel_err(rq, ref_q) <= tolerance("ROPE-101", dtype)
    assert rel_err(rk, ref_k) <= tolerance("ROPE-101", dtype)


@pytest.mark.triton
@pytest.mark.claim("ROPE-102")
@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_backward_matches_float64(device: torch.device, dtype: torch.dtype) -> None:
    qkv, dq, dk, cos, sin = _case(device, dtype, seed=1)
    _, _, gq, gk = _kernel(qkv, cos, sin, dq, dk)
    _, _, ref_gq, ref_gk = _reference(*_split(qkv), cos, sin, dq, dk)
    assert rel_err(gq, ref_gq) <= tolerance("ROPE-102", dtype)
    assert rel_err(gk, ref_gk) <= tolerance("ROPE-102", dtype)
