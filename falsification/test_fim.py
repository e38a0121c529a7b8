"""Falsifiers for the ``fim`` contract (contracts/fim.yaml)."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from albor.data.fim import SENTINELS, fim_invert, fim_transform, parts_from_ids
from albor.data.synthetic import tiny_tokenizer
from albor.data.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, decode, encode
from albor.verify.contracts import tolerance

DOCS = st.text(max_size=200)
SEEDS = st.integers(0, 2**32 - 1)


def _texts(parts: list[str | int]) -> str:
    return "".join(p for p in parts if isinstance(p, str))


@pytest.mark.claim("FIM-001")
@given(doc=DOCS, seed=SEEDS, spm=st.sampled_from([0.0, 0.5, 1.0]))
def test_fim_permutes_characters(doc: str, seed: int, spm: float) -> None:
    parts = fim_transform(doc, seed, 1.0, spm)
    assert Counter(_texts(parts)) == Counter(doc)
    assert len(_texts(parts)) == len(doc)


@pytest.mark.claim("FIM-002")
@given(doc=DOCS, seed=SEEDS, rate=st.sampled_from([0.5, 1.0]), spm=st.sampled_from([0.0, 0.5, 1.0]))
def test_fim_invertible_from_sentinels(doc: str, seed: int, rate: float, spm: float) -> None:
    parts = fim_transform(doc, seed, rate, spm)
    assert fim_invert(parts) == doc
    tok = tiny_tokenizer()
    ids = [i for p in parts for i in (encode(tok, p) if isinstance(p, str) else [p])]
    assert [i for i in ids if i in SENTINELS] == [p for p in parts if isinstance(p, int)]
    assert fim_invert(parts_from_ids(ids, lambda run: decode(tok, run))) == doc


@pytest.mark.claim("FIM-003")
@given(doc=st.text(min_size=1, max_size=200), seed=SEEDS)
def test_fim_deterministic(doc: str, seed: int) -> None:
    first = fim_transform(doc, seed, 1.0, 0.5)
    assert fim_transform(doc, seed, 1.0, 0.5) == first
    assert first[0] == FIM_PREFIX
    # The cut points are character offsets: every piece is a slice of the document.
    pieces = [p for p in first if isinstance(p, str)]
    if first[1] == FIM_SUFFIX:  # SPM: suffix, then prefix + middle
        suffix, head = pieces
        assert doc == head + suffix
    else:
        prefix, suffix, middle = pieces
        assert doc == prefix + middle + suffix


@pytest.mark.claim("FIM-004")
@pytest.mark.parametrize(("rate", "spm"), [(0.5, 0.5), (0.9, 0.2), (0.1, 1.0)])
def test_fim_rates(rate: float, spm: float) -> None:
    tol = tolerance("FIM-004")
    docs = [f"def f{i}():\n    return {i}\n" for i in range(2000)]
    outs = [fim_transform(d, 7, rate, spm) for d in docs]
    fim = [o for o in outs if len(o) > 1]
    assert abs(len(fim) / len(docs) - rate) <= tol
    spm_share = sum(o[1] == FIM_SUFFIX for o in fim) / len(fim)
    assert abs(spm_share - spm) <= tol
    assert all(fim_transform(d, 7, 0.0, spm) == [d] for d in docs[:200])


@pytest.mark.claim("FIM-005")
@pytest.mark.parametrize("doc", ["a", "ab"])
def test_cut_points_are_two_uniform_draws_edges_included(doc: str) -> None:
    # PSM only, so prefix and middle give both cuts: (i, j) = (len(prefix), len(prefix) + len(middle)).
    n, seeds = len(doc), 9000
    seen: Counter[tuple[int, int]] = Counter()
    for seed in range(seeds):
        _, prefix, _, _, _, middle = fim_transform(doc, seed, 1.0, 0.0)
        seen[(len(prefix), len(prefix) + len(middle))] += 1
    # Two independent draws from 0..n, sorted: a pair of equal points once, of different ones twice.
    want = {(i, j): (1 if i == j else 2) / (n + 1) ** 2 for i in range(n + 1) for j in range(i, n + 1)}
    assert set(seen) == set(want), sorted(seen)
    tol = tolerance("FIM-005")
    for pair, p in want.items():
        assert abs(seen[pair] / seeds - p) <= tol, (pair, seen[pair] / seeds, p)


# Pinned transforms: a prepared data folder is reused by its configuration's fingerprint, which names no
# code, so the draw for a (seed, document) must stay what it was when the folder was built.
PINNED = [
    ("def f():\n    return 1\n", 0, [FIM_PREFIX, FIM_SUFFIX, "  return 1\n", FIM_MIDDLE, "def f():\n  "]),
    ("def f():\n    return 1\n", 7, [FIM_PREFIX, FIM_SUFFIX, " f():\n    return 1\n", FIM_MIDDLE, "def"]),
    ("x = '\ud800'\n", 0, [FIM_PREFIX, FIM_SUFFIX, "'\ud800'\n", FIM_MIDDLE, "x = "]),
    ("x = '\ud800'\n", 7, [FIM_PREFIX, "x = '", FIM_SUFFIX, "'\n", FIM_MIDDLE, "\ud800"]),
]


@pytest.mark.claim("FIM-006")
@pytest.mark.parametrize(("doc", "seed", "parts"), PINNED)
def test_the_draw_for_a_document_is_pinned(doc: str, seed: int, parts: list[str | int]) -> None:
    assert fim_transform(doc, seed, 1.0, 0.5) == parts


ORDER = "not a FIM transform: sentinels must open the document in the order PRE, SUF, MID"


@pytest.mark.claim("FIM-007")
def test_inversion_joins_split_texts_and_refuses_what_no_transform_makes() -> None:
    pre, suf, mid = SENTINELS
    assert fim_invert([pre, "de", "f", suf, "()", mid, " ", "f"]) == "def f()"
    assert fim_invert(["plain ", "text"]) == "plain text"
    repeated = [pre, "a", suf, "b", mid, "c", mid]
    with pytest.raises(ValueError, match=f"unexpected or repeated sentinel {mid} in {re.escape(repr(repeated))}"):
        fim_invert(repeated)
    with pytest.raises(ValueError, match="unexpected or repeated sentinel 2 in"):
        fim_invert([pre, "a", 2, suf, mid])
    for bad in ([suf, "a", pre, "b", mid, "c"], [pre, "a", mid, "b"], ["lead", pre, "a", suf, "b", mid, "c"]):
        with pytest.raises(ValueError, match=f"^{ORDER}$"):
            fim_invert(bad)
