"""Unit and property tests of ``albor.generate``: prompt fitting, text streaming, sampling."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from tokenizers import Tokenizer

from albor import generate as gen
from albor.data.tokenizer import encode, train_tokenizer
from albor.generate import Sampling, fit_prompt, next_token, stream_text


@pytest.fixture(scope="module")
def byte_tokenizer() -> Tokenizer:
    """Specials and the 256 bytes only, so a multi-byte character always spans several tokens."""
    return train_tokenizer(["x"], 263)


@given(n=st.integers(1, 60), max_new=st.integers(1, 40), max_seq_len=st.integers(2, 50))
def test_fit_prompt_keeps_the_tail(n: int, max_new: int, max_seq_len: int) -> None:
    assume(max_new < max_seq_len)
    ids = list(range(100, 100 + n))
    room = max_seq_len - max_new
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fit_prompt(ids, max_new, max_seq_len)
    assert out == ids[-room:] if n > room else out == ids
    assert len(caught) == (n > room)


@pytest.mark.parametrize(
    ("ids", "max_new", "match"), [([], 4, "empty"), ([9], 0, "max_new_tokens"), ([9], 8, "max_new")]
)
def test_fit_prompt_refuses(ids: list[int], max_new: int, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_prompt(ids, max_new, 8)


@given(
    text=st.text(max_size=30),
    stops=st.lists(st.text(st.sampled_from("ab\né€ "), min_size=1, max_size=3), max_size=3),
)
def test_stream_text_stops_at_the_first_stop_to_appear(byte_tokenizer: Tokenizer, text: str, stops: list[str]) -> None:
    ids = encode(byte_tokenizer, text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gen, "generate", lambda *args, **kwargs: iter(ids))
        pieces = list(stream_text(None, byte_tokenizer, [2], 99, stops))  # type: ignore[arg-type]
    expected = text
    for n in range(1, len(ids) + 1):
        decoded = byte_tokenizer.decode(ids[:n])
        cut = gen.first_stop(decoded, stops)
        if cut is not None:
            expected = decoded[:cut]
            break
    assert "".join(pieces) == expected
    assert all(pieces) and not any(s in "".join(pieces) for s in stops)
    assert not any("\ufffd" in p for p in pieces) or "\ufffd" in text


def test_next_token_edges() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    g = torch.Generator().manual_seed(0)
    assert next_token(logits, Sampling(), g) == 1
    assert {next_token(logits, Sampling(temperature=5.0, top_k=1), g) for _ in range(20)} == {1}
    assert {next_token(logits, Sampling(temperature=5.0, top_p=1e-9), g) for _ in range(20)} == {1}


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 0}, "top_p")]
)
def test_sampling_validated(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Sampling(**kwargs)
