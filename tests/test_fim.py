"""Unit and property tests of albor.data.fim."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from albor.data.fim import fim_invert, fim_transform, parts_from_ids
from albor.data.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX


@given(p=st.text(max_size=20), m=st.text(max_size=20), s=st.text(max_size=20))
def test_invert_psm_and_spm(p: str, m: str, s: str) -> None:
    assert fim_invert([FIM_PREFIX, p, FIM_SUFFIX, s, FIM_MIDDLE, m]) == p + m + s
    assert fim_invert([FIM_PREFIX, FIM_SUFFIX, s, FIM_MIDDLE, p + m]) == p + m + s


@pytest.mark.parametrize(
    "parts",
    [
        [FIM_SUFFIX, "a", FIM_PREFIX, "b", FIM_MIDDLE, "c"],
        [FIM_PREFIX, "a", FIM_PREFIX, "b"],
        ["lead", FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE],
        [FIM_PREFIX, "a", FIM_SUFFIX, "b"],
        [2, "a"],
    ],
)
def test_malformed_transform_refused(parts: list[str | int]) -> None:
    with pytest.raises(ValueError, match="not a FIM transform"):
        fim_invert(parts)


def test_untouched_and_empty_documents() -> None:
    assert fim_transform("", 0, 1.0, 0.5) == [""]
    assert fim_transform("abc", 0, 0.0, 0.5) == ["abc"]
    assert fim_invert([""]) == ""


def test_parts_from_ids_without_sentinels() -> None:
    assert parts_from_ids([10, 11], lambda run: "".join(map(chr, run))) == ["\n\x0b"]
    assert parts_from_ids([], str) == []


@given(doc=st.text(min_size=2, max_size=50))
def test_seed_changes_the_cut(doc: str) -> None:
    cuts = {tuple(map(str, fim_transform(doc, seed, 1.0, 0.0))) for seed in range(40)}
    assert len(cuts) > 1
