"""Property tests for SLERP merging (contracts/merge.yaml)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor.ladder.merge import merge_state, slerp


@given(st.integers(0, 10_000), st.integers(2, 64), st.floats(0.0, 1.0))
def test_unit_vectors_stay_on_the_sphere(seed: int, n: int, t: float) -> None:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    a, b = (a / a.norm()).float(), (b / b.norm()).float()
    out = slerp(a, b, t)
    if abs(float(a @ b)) <= 0.9995:
        assert abs(out.norm().item() - 1) < 1e-4


@given(st.integers(0, 10_000), st.floats(0.0, 1.0))
def test_symmetric_in_t(seed: int, t: float) -> None:
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(9, 5, generator=g), torch.randn(9, 5, generator=g)
    assert torch.allclose(slerp(a, b, t), slerp(b, a, 1 - t), atol=1e-5)


def test_refuses_mismatched_inputs() -> None:
    with pytest.raises(ValueError, match="shapes"):
        slerp(torch.zeros(3), torch.zeros(4), 0.5)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        slerp(torch.ones(3), torch.ones(3), 1.5)
    with pytest.raises(ValueError, match="differ in tensors"):
        merge_state({"a": torch.ones(1)}, {"b": torch.ones(1)}, 0.5)
