"""Property tests for global-norm clipping (contracts/grad_clip.yaml) over random parameter sets."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from albor.optim.grad_clip import clip_grad_norm
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err

shapes = st.lists(st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple), min_size=1, max_size=5)


def _params(shapes: list[tuple[int, ...]], seed: int, spread: float) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = []
    for i, s in enumerate(shapes):
        p = torch.zeros(s, dtype=torch.float64, requires_grad=True)
        p.grad = torch.randn(s, generator=g, dtype=torch.float64) * spread ** (i % 3)
        params.append(p)
    return params


def _norm(params: list[torch.Tensor]) -> float:
    return torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])).item()


@given(shapes, st.integers(0, 2**31 - 1), st.floats(0.1, 10.0), st.floats(1e-2, 10.0))
def test_clip_properties(shapes: list[tuple[int, ...]], seed: int, spread: float, max_norm: float) -> None:
    params = _params(shapes, seed, spread)
    before = [p.grad.clone() for p in params]
    norm = _norm(params)
    returned = clip_grad_norm(params, max_norm).item()
    assert abs(returned - norm) <= tolerance("CLIP-004", torch.float64) * norm
    after = _norm(params)
    assert after <= max_norm * (1 + tolerance("CLIP-001", torch.float64))
    factor = min(1.0, max_norm / (norm + 1e-6))
    if factor == 1.0:
        assert all(torch.equal(p.grad, g) for p, g in zip(params, before, strict=True))
    for p, g in zip(params, before, strict=True):
        assert rel_err(p.grad, g * factor) <= tolerance("CLIP-002", torch.float64)


@given(shapes, st.integers(0, 2**31 - 1), st.floats(1e-2, 10.0))
def test_nearly_idempotent(shapes: list[tuple[int, ...]], seed: int, max_norm: float) -> None:
    # Not bitwise: a clipped norm sits 1e-6 below max_norm, inside the band that the +1e-6 still scales.
    params = _params(shapes, seed, 3.0)
    clip_grad_norm(params, max_norm)
    once = [p.grad.clone() for p in params]
    clip_grad_norm(params, max_norm)
    for p, g in zip(params, once, strict=True):
        assert rel_err(p.grad, g) <= 2e-6 / max_norm


@given(shapes, st.integers(0, 2**31 - 1))
def test_parameters_without_gradient_are_skipped(shapes: list[tuple[int, ...]], seed: int) -> None:
    params = _params(shapes, seed, 2.0)
    bare = torch.zeros(3, requires_grad=True)
    norm = _norm(params)
    assert abs(clip_grad_norm([bare, *params], 0.5).item() - norm) <= 1e-12 * norm
    assert bare.grad is None
