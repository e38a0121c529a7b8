"""Unit and property tests of ``albor.eval.perplexity``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from albor.config import ModelConfig
from albor.data.synthetic import tiny_tokenizer
from albor.data.tokenizer import encode
from albor.eval.perplexity import evaluate_perplexity, token_byte_lengths
from albor.model import Decoder

CFG = ModelConfig(
    name="ppl-unit", n_layers=1, d_model=12, n_heads=2, n_kv_heads=1, d_ff=20, vocab_size=29, max_seq_len=9
)


@pytest.fixture(scope="module")
def model() -> Decoder:
    torch.manual_seed(0)
    return Decoder(CFG.model_copy(update={"init_std": 0.3})).double()


@settings(max_examples=15)
@given(n=st.integers(1, 6), seq_len=st.integers(1, 9), batch=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_token_mean_over_any_batching(model: Decoder, n: int, seq_len: int, batch: int, seed: int) -> None:
    windows = np.random.default_rng(seed).integers(0, CFG.vocab_size, (n, seq_len + 1))
    res = evaluate_perplexity(model, windows, batch, "cpu")
    per_window = [evaluate_perplexity(model, windows[i : i + 1], 1, "cpu").loss for i in range(n)]
    assert res.tokens == n * seq_len
    assert math.isclose(res.loss, sum(per_window) / n, rel_tol=1e-12)
    assert res.ppl == math.exp(res.loss)


@settings(max_examples=15)
@given(n=st.integers(1, 5), seq_len=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_bits_per_byte_is_the_summed_loss_over_the_bytes(model: Decoder, n: int, seq_len: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    windows = rng.integers(0, CFG.vocab_size, (n, seq_len + 1))
    lengths = rng.integers(1, 5, CFG.vocab_size)
    res = evaluate_perplexity(model, windows, 2, "cpu", token_bytes=lengths)
    assert res.bytes == lengths[windows[:, 1:]].sum()
    assert math.isclose(res.bits_per_byte * res.bytes * math.log(2), res.loss * res.tokens, rel_tol=1e-12)
    assert evaluate_perplexity(model, windows, 2, "cpu").bits_per_byte is None


def test_byte_lengths_must_cover_the_vocabulary(model: Decoder) -> None:
    with pytest.raises(ValueError, match=r"token_bytes must give one length per id .*\(29,\)"):
        evaluate_perplexity(model, np.ones((2, 3), dtype=np.int64), 2, "cpu", token_bytes=np.ones(28))
    with pytest.raises(ValueError, match="stand for no source bytes"):
        evaluate_perplexity(model, np.ones((2, 3), dtype=np.int64), 2, "cpu", token_bytes=np.zeros(29))


@pytest.mark.parametrize(
    ("shape", "kwargs", "match"),
    [
        ((5,), {}, "must be"),
        ((3, 1), {}, "seq_len >= 1"),
        ((3, 4), {"batch_size": 0}, "batch_size"),
        ((3, 4), {"max_windows": 0}, "max_windows"),
        ((0, 4), {}, "no windows"),
    ],
)
def test_bad_input_named(model: Decoder, shape: tuple[int, ...], kwargs: dict, match: str) -> None:
    args = {"batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        evaluate_perplexity(model, np.ones(shape, dtype=np.int64), device="cpu", **args)


@given(text=st.text(max_size=60))
def test_byte_lengths_sum_to_the_texts_utf8_bytes(text: str) -> None:
    tok = tiny_tokenizer()
    lengths = token_byte_lengths(tok, 310)
    assert lengths[:7].sum() == 0 and lengths[tok.get_vocab_size() :].sum() == 0
    assert sum(lengths[i] for i in encode(tok, text)) == len(text.encode())


def test_byte_lengths_need_room_for_the_vocabulary() -> None:
    with pytest.raises(ValueError, match="below the tokenizer's vocabulary of 300"):
        token_byte_lengths(tiny_tokenizer(), 299)
