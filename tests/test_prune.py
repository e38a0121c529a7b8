"""Property tests for WANDA pruning masks (contracts/prune.yaml)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor.ladder.prune import parse_pattern, prune_mask


@given(st.integers(0, 10_000), st.integers(1, 9), st.integers(1, 40), st.floats(0.0, 0.99))
def test_each_row_drops_exactly_its_share(seed: int, rows: int, cols: int, s: float) -> None:
    scores = torch.rand(rows, cols, generator=torch.Generator().manual_seed(seed))
    keep = prune_mask(scores, sparsity=s)
    assert ((~keep).sum(1) == int(s * cols)).all()
    if 0 < int(s * cols) < cols:
        assert (
            scores[~keep].max() <= scores.max()
            and (scores.masked_fill(keep, -1).max(1).values <= scores.masked_fill(~keep, 2).min(1).values).all()
        )


@given(st.integers(0, 10_000), st.integers(1, 9), st.integers(1, 10))
def test_n_of_m_keeps_the_highest_of_each_group(seed: int, rows: int, groups: int) -> None:
    scores = torch.rand(rows, groups * 4, generator=torch.Generator().manual_seed(seed))
    keep = prune_mask(scores, pattern=(2, 4)).reshape(rows, groups, 4)
    g = scores.reshape(rows, groups, 4)
    assert (keep.sum(-1) == 2).all()
    assert (g.masked_fill(keep, -1).max(-1).values <= g.masked_fill(~keep, 2).min(-1).values).all()


def test_patterns_parse_or_are_refused() -> None:
    assert parse_pattern("2:4") == (2, 4)
    for bad in ("4:2", "2-4", "0:4", "a:b"):
        with pytest.raises(ValueError, match="--pattern"):
            parse_pattern(bad)
    with pytest.raises(ValueError, match="groups of 4"):
        prune_mask(torch.rand(2, 6), pattern=(2, 4))
