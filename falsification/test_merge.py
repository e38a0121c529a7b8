"""Falsifiers for the ``merge`` contract (contracts/merge.yaml)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from albor.checkpoint import load_for_inference
from albor.ladder.merge import merge_checkpoints, slerp
from albor.verify.contracts import tolerance
from falsification.exports import code_tokenizer, random_decoder, save_run

DTYPES = [torch.float32, torch.bfloat16]


def _pair(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)


def _slerp64(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """The SLERP formula in float64, written out."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    cos = float(a64 @ b64 / (a64.norm() * b64.norm()))
    theta = math.acos(max(-1.0, min(1.0, cos)))
    out = (math.sin((1 - t) * theta) * a64 + math.sin(t * theta) * b64) / math.sin(theta)
    return out.view(a.shape)


@pytest.mark.claim("MERGE-001")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_endpoints_bitwise(dtype: torch.dtype, tmp_path: Path) -> None:
    a, b = _pair((37, 23), dtype)
    assert torch.equal(slerp(a, b, 0.0), a) and slerp(a, b, 0.0).dtype == dtype
    assert torch.equal(slerp(a, b, 1.0), b)
    first = save_run(tmp_path / "a", random_decoder(seed=0), code_tokenizer())
    second = save_run(tmp_path / "b", random_decoder(seed=1), code_tokenizer())
    for t, want in ((0.0, first), (1.0, second)):
        merge_checkpoints(first, second, t, tmp_path / f"m{t}", "test")
        got, ref = (
            load_for_inference(tmp_path / f"m{t}").model.state_dict(),
            load_for_inference(want).model.state_dict(),
        )
        assert all(torch.equal(got[k], ref[k]) for k in ref), t


@pytest.mark.claim("MERGE-002")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t", [0.25, 0.5, 0.9])
def test_linear_fallback_exact(dtype: torch.dtype, t: float) -> None:
    a, _ = _pair((41, 17), torch.float32, 3)
    for b in (2.5 * a, a + 1e-4 * torch.randn(a.shape, generator=torch.Generator().manual_seed(4))):
        a_d, b_d = a.to(dtype), b.to(dtype)
        got = slerp(a_d, b_d, t)
        want = (a_d.double() + t * (b_d.double() - a_d.double())).to(dtype)
        assert torch.isfinite(got.float()).all()
        err = ((got.double() - want.double()).norm() / want.double().norm()).item()
        assert err <= tolerance("MERGE-002", dtype), err


@pytest.mark.claim("MERGE-003")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_self_merge_identity(dtype: torch.dtype) -> None:
    a, _ = _pair((29, 31), dtype, 5)
    for t in (0.0, 0.1, 0.5, 0.73, 1.0):
        assert torch.equal(slerp(a, a.clone(), t), a), t


@pytest.mark.claim("MERGE-004")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_matches_float64_slerp(dtype: torch.dtype, t: float) -> None:
    a, b = _pair((53, 19), torch.float32, 6)
    u = a / a.norm()
    w = b - (u.flatten() @ b.flatten()) * u
    w = w / w.norm()
    # cos θ from nearly opposite to about 11°, all beyond the linear fallback; the norms differ.
    for c in (-0.9, 0.0, 0.5, 0.98):
        b_c = 3.0 * (c * u + math.sqrt(1 - c * c) * w)
        a_d, b_d = a.to(dtype), b_c.to(dtype)
        got, want = slerp(a_d, b_d, t), _slerp64(a_d, b_d, t)
        assert got.dtype == dtype
        err = ((got.double() - want).norm() / want.norm()).item()
        assert err <= tolerance("MERGE-004", dtype), (c, err)
