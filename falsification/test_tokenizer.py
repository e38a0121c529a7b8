"""Falsifiers for the ``tokenizer`` contract (contracts/tokenizer.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from albor.data import prepare
from albor.data.config import DataConfig
from albor.data.corpus import read_corpus
from albor.data.prepare import default_data_dir
from albor.data.synthetic import TRICKY, clean_repos, tiny_tokenizer, write_repos
from albor.data.tokenizer import (
    BOS,
    EOS,
    FIM_MIDDLE,
    FIM_PREFIX,
    FIM_SUFFIX,
    MIN_VOCAB,
    N_SPECIAL,
    PAD,
    SPECIAL_TOKENS,
    UNK,
    PieceEncoder,
    build_tokenizer,
    decode,
    encode,
    encode_batch,
    load_tokenizer,
    save_tokenizer,
    tokenizer_sample,
    train_tokenizer,
)
from albor.verify.contracts import declared

# Whitespace-heavy alphabets find indentation bugs faster than the full Unicode range alone.
CODE_TEXT = st.text(alphabet=" \t\r\n\f\v\u00a0\u3000<>/|_sfimdx=:()'\"#é😀", max_size=80)


@pytest.mark.claim("TOK-001")
@given(text=st.one_of(st.text(max_size=120), CODE_TEXT))
def test_round_trip_arbitrary_text(text: str) -> None:
    tok = tiny_tokenizer()
    assert decode(tok, encode(tok, text)) == text


@pytest.mark.claim("TOK-002")
def test_indentation_survives() -> None:
    tok = tiny_tokenizer()
    source = "".join(TRICKY) + "if a:\n\tif b:\n\t\t  c = 1\n        \td = 2\r\n\t\r\n    \n"
    for text in [*TRICKY, source]:
        ids = encode(tok, text)
        assert decode(tok, ids) == text
        assert decode(tok, ids).encode() == text.encode()


@pytest.mark.claim("TOK-003")
def test_special_token_ids(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    path = tmp_path / "tokenizer.json"
    save_tokenizer(tok, path)
    # The declared order (DESIGN.md, contracts/tokenizer.yaml), not the module's own list.
    specials = declared("tokenizer", "special_tokens")
    assert N_SPECIAL == len(specials) == 7
    for t in (tok, load_tokenizer(path)):
        assert [t.token_to_id(s) for s in specials] == list(range(len(specials)))
        assert [t.id_to_token(i) for i in range(len(specials))] == specials
    named = (UNK, BOS, EOS, PAD, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)
    assert [specials[i] for i in named] == specials, "each named id is its token's declared position"


@pytest.mark.claim("TOK-004")
@given(glue=st.lists(st.sampled_from([*SPECIAL_TOKENS, " ", "\n", "a", "<", ">", "|"]), max_size=30))
def test_special_strings_stay_text(glue: list[str]) -> None:
    tok = tiny_tokenizer()
    text = "".join(glue) + "".join(SPECIAL_TOKENS)
    ids = encode(tok, text)
    assert min(ids) >= N_SPECIAL, "raw text produced a special id"
    assert decode(tok, ids) == text


@pytest.mark.claim("TOK-005")
@pytest.mark.parametrize("text", ["a\ud800b", "\udfff", "ok\n\ud83d"])
def test_lone_surrogate_rejected(text: str) -> None:
    tok = tiny_tokenizer()
    position = next(i for i, c in enumerate(text) if 0xD800 <= ord(c) <= 0xDFFF)
    with pytest.raises(ValueError, match=f"lone surrogate .* at index {position}"):
        encode_batch(tok, ["fine", text])


@pytest.mark.claim("TOK-006")
def test_save_load_identical(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    path = tmp_path / "tokenizer.json"
    save_tokenizer(tok, path)
    loaded = load_tokenizer(path)
    texts = [*TRICKY, "x" * 300, ""]
    assert encode_batch(loaded, texts) == encode_batch(tok, texts)
    bad = tmp_path / "broken.json"
    bad.write_text('{"model": ')
    with pytest.raises(ValueError, match=r"broken\.json"):
        load_tokenizer(bad)
    with pytest.raises(ValueError, match=r"missing\.json"):
        load_tokenizer(tmp_path / "missing.json")


@pytest.mark.claim("TOK-007")
@given(texts=st.lists(st.one_of(st.text(max_size=80), CODE_TEXT), max_size=8))
def test_piece_encoder_matches_tokenizer(texts: list[str]) -> None:
    tok = tiny_tokenizer()
    encoder = PieceEncoder(tok)
    texts = [*texts, *TRICKY, "a\x1cb\x1d \x1e\x1f\x85 \u2028x\u3000 y's 'LL 12\u0663"]
    assert encoder.encode_batch(texts) == encode_batch(tok, texts)
    assert encoder.encode_batch(texts[::-1]) == encode_batch(tok, texts[::-1])


@pytest.mark.slow
@pytest.mark.claim("TOK-008")
def test_a_capped_tokenizer_trains_on_a_seeded_sample_of_train(tmp_path: Path) -> None:
    source = write_repos(tmp_path / "src", clean_repos(n_repos=6, files_per_repo=6))
    whole = prepare(source, tmp_path / "whole", vocab_size=600, seq_len=16)
    train, val = read_corpus(whole, "train"), read_corpus(whole, "val")
    total = sum(len(t.encode()) for t in train)
    cap = total // 3
    sampled = prepare(source, tmp_path / "sampled", vocab_size=600, seq_len=16, tokenizer_sample_bytes=cap)
    sample = tokenizer_sample(train, cap, 0)
    size = sum(len(t.encode()) for t in sample)
    assert 0 < size <= cap and set(sample) <= set(train) and val, "train documents only"
    left = [t for t in train if t not in sample]
    assert left and all(size + len(t.encode()) > cap for t in left), "the sample must take every document that fits"
    assert sample != tokenizer_sample(train, cap, 1), "another seed draws another sample"
    assert tokenizer_sample(train, total, 5) == train, "a cap at the split's size takes it all, in order"

    def vocab(data: Path) -> dict[str, int]:
        return load_tokenizer(data / "tokenizer.json").get_vocab()

    assert vocab(sampled) == train_tokenizer(sample, 600).get_vocab(), "the prepared tokenizer is the sample's"
    assert vocab(sampled) != vocab(whole), "a third of the split must train another tokenizer"
    full = prepare(source, tmp_path / "full", vocab_size=600, seq_len=16, tokenizer_sample_bytes=total)
    assert vocab(full) == vocab(whole)
    configs = [DataConfig(tokenizer_sample_bytes=b) for b in (None, cap, total)]
    assert len({default_data_dir(c) for c in configs}) == 3, "the cap is part of the data's fingerprint"


@pytest.mark.claim("TOK-009")
def test_training_keeps_its_size_its_floor_and_merges_only_repeated_pairs() -> None:
    assert MIN_VOCAB == N_SPECIAL + 256 == 263
    assert tiny_tokenizer().get_vocab_size() == 300
    # "ab" twice ("ab", " ab"); every other pair once: only "ab" is merged, though room is left for five.
    tok = train_tokenizer(["ab ab", "xyz"], MIN_VOCAB + 5)
    assert tok.get_vocab_size() == MIN_VOCAB + 1 and tok.token_to_id("ab") == MIN_VOCAB
    assert train_tokenizer(["ab ab"], MIN_VOCAB).get_vocab_size() == MIN_VOCAB  # the floor itself is taken
    with pytest.raises(ValueError, match=r"^vocab_size 262 is below 263 \(7 special tokens \+ 256 bytes\)$"):
        train_tokenizer(["ab ab"], MIN_VOCAB - 1)


@pytest.mark.claim("TOK-010")
def test_decode_writes_special_ids_as_their_tokens() -> None:
    tok = tiny_tokenizer()
    ids = [FIM_PREFIX, *encode(tok, "x = 1"), FIM_SUFFIX, FIM_MIDDLE, EOS]
    assert decode(tok, ids) == "<|fim_prefix|>x = 1<|fim_suffix|><|fim_middle|></s>"


@pytest.mark.claim("TOK-011")
def test_a_given_tokenizer_is_checked_copied_or_refused(tmp_path: Path) -> None:
    displaced = Tokenizer(models.BPE())
    displaced.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    displaced.train_from_iterator(["a b"], trainers.BpeTrainer(special_tokens=["<pad>", *SPECIAL_TOKENS]))
    path = tmp_path / "displaced.json"
    path.write_text(displaced.to_str())
    with pytest.raises(ValueError, match=f"^{path}: special token '<unk>' has id 1, expected 0$"):
        load_tokenizer(path)

    given_path = tmp_path / "given.json"
    save_tokenizer(tiny_tokenizer(), given_path)
    for vocab in (300, 301):  # as many ids as the model's vocabulary, or fewer
        out = tmp_path / f"data-{vocab}"
        out.mkdir()
        built = build_tokenizer(DataConfig(vocab_size=vocab, tokenizer=given_path), out)
        assert load_tokenizer(built).to_str() == load_tokenizer(given_path).to_str()
    more = f"^data.tokenizer: {given_path} has 300 ids, more than data.vocab_size=299$"
    with pytest.raises(ValueError, match=more):
        build_tokenizer(DataConfig(vocab_size=299, tokenizer=given_path), tmp_path)


@pytest.mark.claim("TOK-005")
def test_a_lone_surrogate_through_the_piece_encoder_names_its_text() -> None:
    message = (
        r"^text 1 holds a lone surrogate '\\ud800' at index 1; only valid Unicode can be tokenized "
        r"\(decode bytes with errors='strict' or 'replace' first\)$"
    )
    with pytest.raises(ValueError, match=message):
        PieceEncoder(tiny_tokenizer()).encode_batch(["fine", "a\ud800b"])
