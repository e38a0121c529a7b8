"""Falsifiers for the ``rope`` contract (contracts/rope.yaml)."""

from __future__ import annotations

import pytest
import torch

from albor import ops
from albor.contracts import tolerance

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
