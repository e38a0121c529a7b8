"""The ByteLevel BPE tokenizer: training, saving, loading, and the lossless encode/decode used everywhere.

Special tokens take fixed ids (DESIGN.md). They are never matched inside raw text: the same strings
occur in real source (``"<s>"`` in test_re.py), and the byte-level pre-tokenizer splits every one of
them into several pieces, so raw text never encodes to a special id. Special ids enter a sequence
only as ids (EOS between documents, FIM sentinels).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import regex
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from albor.data.config import DataConfig
from albor.data.corpus import read_corpus
from albor.data.files import sha256_file
from albor.io import write_text_atomic

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>")
UNK, BOS, EOS, PAD, FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE = range(len(SPECIAL_TOKENS))
N_SPECIAL = len(SPECIAL_TOKENS)
MIN_VOCAB = N_SPECIAL + 256
# The split of the ByteLevel pre-tokenizer (GPT-2's pattern). BPE never merges across its pieces, so a
# text's ids are its pieces' ids concatenated, and a piece seen before need not be encoded again.
PRETOKEN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
_MAX_CACHED_PIECES = 1 << 20


def _bare() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train a ByteLevel BPE of ``vocab_size`` ids (specials at 0..6, then the 256 bytes, then merges)."""
    if vocab_size < MIN_VOCAB:
        raise ValueError(f"vocab_size {vocab_size} is below {MIN_VOCAB} (7 special tokens + 256 bytes)")
    tok = _bare()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    _check_specials(tok, "the trained tokenizer")
    tok.encode_special_tokens = True
    return tok


def _check_specials(tok: Tokenizer, where: str) -> None:
    for i, s in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(s) != i:
            raise ValueError(f"{where}: special token {s!r} has id {tok.token_to_id(s)}, expected {i}")


def save_tokenizer(tok: Tokenizer, path: Path) -> str:
    """Write ``tok`` atomically as JSON; returns its sha256."""
    write_text_atomic(path, tok.to_str())
    return sha256_file(path)


def tokenizer_from_json(text: str, where: str) -> Tokenizer:
    """A tokenizer from its JSON, ready for lossless encoding (special strings in text stay text)."""
    try:
        tok = Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
        raise ValueError(f"{where}: cannot load tokenizer: {e}") from e
    _check_specials(tok, where)
    tok.encode_special_tokens = True  # not part of the JSON, so it is set on every load
    return tok


def load_tokenizer(path: Path) -> Tokenizer:
    """Load ``<out>/tokenizer.json`` ready for lossless encoding."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot load tokenizer: {e}") from e
    return tokenizer_from_json(text, str(path))


def tokenizer_sha256(path: Path) -> str:
    """The sha256 of a tokenizer file; manifests record it so that shards and tokenizer cannot drift."""
    return sha256_file(path)


def _check_text(texts: Sequence[str]) -> None:
    for i, t in enumerate(texts):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(
                f"text {i} holds a lone surrogate {t[e.start]!r} at index {e.start}; only valid Unicode can be "
                "tokenized (decode bytes with errors='strict' or 'replace' first)"
            ) from e


def encode_batch(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, on every core; raw text never yields a special id."""
    try:
        return [e.ids for e in tok.encode_batch_fast(list(texts))]
    except Exception:  # a lone surrogate fails inside the Rust binding; say which text and where
        _check_text(texts)
        raise


class PieceEncoder:
    """``encode_batch`` for a corpus, about 1.5x faster on source code: each distinct pre-token piece
    goes through the tokenizer once and is looked up after that. The ids are exactly ``encode_batch``'s."""

    def __init__(self, tok: Tokenizer) -> None:
        self.tok = tok
        self._ids: dict[str, list[int]] = {}

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        pieces = [PRETOKEN.findall(t) for t in texts]
        new = list(set().union(*pieces) - self._ids.keys())
        if len(self._ids) + len(new) > _MAX_CACHED_PIECES:
            self._ids.clear()
        try:
            self._ids.update(zip(new, encode_batch(self.tok, new), strict=True))
        except ValueError:
            _check_text(texts)  # name the text and the position, not the piece
            raise
        out = []
        for ps in pieces:
            ids: list[int] = []
            for p in ps:
                ids += self._ids[p]
            out.append(ids)
        return out


def encode(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of one text."""
    return encode_batch(tok, [text])[0]


def decode(tok: Tokenizer, ids: Sequence[int]) -> str:
    """The text of ``ids``, special tokens written out; ``decode(encode(t)) == t`` for every valid string."""
    return tok.decode(list(ids), skip_special_tokens=False)


def tokenizer_sample(texts: Sequence[str], max_bytes: int, seed: int) -> list[str]:
    """The documents of ``texts`` that the tokenizer trains on under a ``max_bytes`` cap: taken in an order
    shuffled by ``seed``, each that still fits (UTF-8 bytes), and returned in their original order."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    taken, total = [], 0
    for i in order:
        size = len(texts[i].encode())
        if total + size <= max_bytes:
            taken.append(i)
            total += size
    return [texts[i] for i in sorted(taken)]


def build_tokenizer(cfg: DataConfig, out: Path) -> Path:
    """Run the tokenizer stage into ``out/tokenizer.json``: train on the train split of ``out``'s corpus
    (on ``tokenizer_sample`` of it when ``cfg.tokenizer_sample_bytes`` is set), or copy ``cfg.tokenizer``
    when one is given (a fine-tune keeps its base model's ids)."""
    path = out / "tokenizer.json"
    if cfg.tokenizer is None:
        texts = read_corpus(out, "train")
        if cfg.tokenizer_sample_bytes is not None:
            texts = tokenizer_sample(texts, cfg.tokenizer_sample_bytes, cfg.seed)
        tok = train_tokenizer(texts, cfg.vocab_size)
    else:
        tok = load_tokenizer(cfg.tokenizer)
        if tok.get_vocab_size() > cfg.vocab_size:
            raise ValueError(
                f"data.tokenizer: {cfg.tokenizer} has {tok.get_vocab_size()} ids, more than "
                f"data.vocab_size={cfg.vocab_size}"
            )
    save_tokenizer(tok, path)
    return path
