"""Unit and property tests of albor.data.tokenizer (the contract's falsifiers are in falsification/)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from albor.data.synthetic import python_source, tiny_tokenizer
from albor.data.tokenizer import (
    MIN_VOCAB,
    decode,
    encode,
    encode_batch,
    save_tokenizer,
    tokenizer_sample,
    tokenizer_sha256,
    train_tokenizer,
)


def test_vocab_below_specials_and_bytes_refused() -> None:
    with pytest.raises(ValueError, match=f"below {MIN_VOCAB}"):
        train_tokenizer(["x = 1\n"], MIN_VOCAB - 1)


def test_trains_to_the_requested_vocab() -> None:
    assert tiny_tokenizer().get_vocab_size() == 300


@given(texts=st.lists(st.text(max_size=40), max_size=6))
def test_batch_equals_one_by_one(texts: list[str]) -> None:
    tok = tiny_tokenizer()
    assert encode_batch(tok, texts) == [encode(tok, t) for t in texts]


def test_merges_compress_code() -> None:
    tok = tiny_tokenizer()
    text = python_source(3)  # one of the modules it was trained on
    ids = encode(tok, text)
    assert len(ids) < 0.9 * len(text.encode()) and decode(tok, ids) == text


def test_sha256_tracks_the_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    digest = save_tokenizer(tiny_tokenizer(), a)
    save_tokenizer(tiny_tokenizer(290), b)
    assert tokenizer_sha256(a) == digest != tokenizer_sha256(b)


@given(st.lists(st.text(max_size=40), max_size=30), st.integers(1, 400), st.integers(0, 2**31 - 1))
def test_sample_is_a_maximal_capped_subsequence(texts: list[str], cap: int, seed: int) -> None:
    sample = tokenizer_sample(texts, cap, seed)
    assert sample == tokenizer_sample(texts, cap, seed), "the same seed draws the same sample"
    size = sum(len(t.encode()) for t in sample)
    assert size <= cap
    # In the original order: walking texts, each sampled document is found in turn.
    rest = iter(range(len(texts)))
    picked = [next(i for i in rest if texts[i] == t) for t in sample]
    left = sorted(set(range(len(texts))) - set(picked))
    assert all(size + len(texts[i].encode()) > cap for i in left), "every document that fits is taken"
