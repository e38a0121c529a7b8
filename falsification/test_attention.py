"""Falsifiers for the ``attention`` contract (contracts/attention.yaml)."""

from __future__ import annotations

import math

import pytest
import torch

from albor import ops
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err


def _qkv(
    device: torch.device,
    dtype: torch.dtype,
    tq: int = 11,
    tk: int = 11,
    h: int = 6,
    hkv: int = 2,
    d: int = 10,
    seed: int = 0,
):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, h, tq, d, generator=g, dtype=torch.float64)
    k = torch.randn(2, hkv, tk, d, generator=g, dtype=torch.float64)
    v = torch.randn(2, hkv, tk, d, generator=g, dtype=torch.float64)
    return q.to(device, dtype), k.to(device, dtype), v.to(device, dtype)


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(QKᵀ/√d + M)V in float64 with the bottom-right causal mask, kv heads repeated."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    tq, tk = q.shape[2], k.shape[2]
    i = torch.arange(tq, device=q.device)[:, None] + (tk - tq)
    j = torch.arange(tk, device=q.device)[None, :]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(j > i, float("-inf"))
    return torch.softmax(scores, -1) @ v


@pytest.mark.claim("ATTN-001")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("h", "hkv"), [(6, 6), (6, 2), (5, 1)])
def test_matches_float64_reference(device: torch.device, dtype: torch.dtype, h: int, hkv: int) -> None:
    q, k, v = _qkv(device, dtype, h=h, hkv=hkv)
    out = ops.attention(q, k, v)
    assert out.shape == q.shape and out.dtype == dtype
    assert rel_err(out, reference(q, k, v)) <= tolerance("ATTN-001", dtype)


@pytest.mark.claim("ATTN-002")
def test_causal(device: torch.device) -> None:
    q, k, v = _qkv(device, torch.float64)
    base = ops.attention(q, k, v)
    tol = tolerance("ATTN-002", torch.float64)
    for t in (0, 4, 9):
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        fresh = _qkv(device, torch.float64, seed=t + 1)
        for x, y in zip((q2, k2, v2), fresh, strict=True):
            x[:, :, t + 1 :] = y[:, :, t + 1 :]
        out = ops.attention(q2, k2, v2)
        assert (out[:, :, : t + 1] - base[:, :, : t + 1]).abs().max().item() <= tol, f"future leaked into t <= {t}"
        assert (out[:, :, t + 1 :] - base[:, :, t + 1 :]).abs().max().item() > 1e-3, "later outputs must change"


@pytest.mark.claim("ATTN-003")
@pytest.mark.parametrize(("h", "hkv"), [(6, 2), (6, 3), (4, 1)])
def test_gqa_equals_repeated_kv(device: torch.device, h: int, hkv: int) -> None:
    q, k, v = _qkv(device, torch.float64, h=h, hkv=hkv)
    rep = h // hkv
    full = ops.attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1))
    assert (ops.attention(q, k, v) - full).abs().max().item() <= tolerance("ATTN-003", torch.float64)


@pytest.mark.claim("ATTN-004")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("tq", [1, 3, 10])
def test_cached_equals_last_rows(device: torch.device, dtype: torch.dtype, tq: int) -> None:
    q, k, v = _qkv(device, dtype, tq=13, tk=13)
    full = ops.attention(q, k, v)
    cached = ops.attention(q[:, :, -tq:].contiguous(), k, v)
    assert rel_err(cached, full[:, :, -tq:]) <= tolerance("ATTN-004", dtype)
    # Built on the inputs' device, the mask works wherever they are: the meta device has no default to fall back on.
    meta = [x.to("meta") for x in (q[:, :, -tq:], k, v)]
    assert ops.attention(*meta).shape == cached.shape


@pytest.mark.claim("ATTN-003")
def test_heads_that_do_not_group_refused() -> None:
    q, k, v = _qkv(torch.device("cpu"), torch.float32, tq=5, tk=5, h=4, hkv=3, d=6)
    with pytest.raises(ValueError, match=r"^n_kv_heads \(3\) must divide n_heads \(4\)$"):
        ops.attention(q, k, v)


@pytest.mark.claim("ATTN-005")
@pytest.mark.parametrize("tq", [9, 4])
def test_backward_matches_reference(device: torch.device, tq: int) -> None:
    q, k, v = _qkv(device, torch.float64, tq=tq, tk=9, h=4, hkv=2, d=6)
    dy = torch.randn(q.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7)).to(device)
    grads = []
    for fn in (ops.attention, reference):
        leaves = [x.clone().requires_grad_(True) for x in (q, k, v)]
        fn(*leaves).backward(dy)
        grads.append([x.grad for x in leaves])
    for name, got, want in zip("qkv", *grads, strict=True):
        assert rel_err(got, want) <= tolerance("ATTN-005", torch.float64), f"d/d{name}"
