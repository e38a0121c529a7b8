"""The pack stage: FIM, tokenization on every core, EOS between documents, seq_len+1 windows, token shards.

Output: ``<out>/tokens/{train,val}-NNNNN.npy`` (windows as rows of uint16 when the vocabulary fits,
else uint32, uncompressed so that a rank reads only the rows it needs) and ``<out>/manifest.json``,
written last.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tokenizers import Tokenizer

from albor.data.config import DataConfig
from albor.data.corpus import SPLITS, Split, corpus_sha256, read_corpus
from albor.data.files import byte_chunks, parallel_map, sha256_file, staged_dir
from albor.data.fim import Part, fim_transform
from albor.data.tokenizer import (
    EOS,
    SPECIAL_TOKENS,
    PieceEncoder,
    load_tokenizer,
    tokenizer_from_json,
    tokenizer_sha256,
)
from albor.data.windows import Windows, write_npy
from albor.io import write_text_atomic

MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.json"
TOKENS_DIR = "tokens"
_CHUNK_BYTES = 1 << 20  # source bytes per task: many tasks per core, so the bar moves and the load evens out


class Shard(BaseModel):
    """One token shard: its file (relative to the data directory), its windows and its sha256."""

    model_config = ConfigDict(extra="forbid")
    file: str
    windows: int
    sha256: str


class SplitTokens(BaseModel):
    """Counts of one split: documents and their source bytes in, tokens and windows out."""

    model_config = ConfigDict(extra="forbid")
    documents: int
    source_bytes: int
    tokens: int
    windows: int
    tail_tokens: int
    shards: list[Shard]


class Manifest(BaseModel):
    """What a data directory holds and what made it; ``load_windows`` verifies against it."""

    model_config = ConfigDict(extra="forbid")
    format: Literal[2] = Field(2, description="2: uncompressed .npy token shards, read by row")
    config: dict[str, Any]
    vocab_size: int
    tokenizer_vocab: int
    seq_len: int
    dtype: str
    seed: int
    fim_rate: float
    fim_spm_rate: float
    special_tokens: dict[str, int]
    tokenizer_sha256: str
    corpus_sha256: str
    splits: dict[str, SplitTokens]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def document_order(n: int, seed: int) -> np.ndarray:
    """The seeded order documents are packed in, so any run of windows samples the whole split."""
    return np.random.default_rng(seed).permutation(n)


def _ids(docs: list[list[Part]], encoded: Iterator[list[int]]) -> Iterator[int]:
    for parts in docs:
        for p in parts:
            if isinstance(p, str):
                yield from next(encoded)
            else:
                yield p
        yield EOS


_encoder: PieceEncoder | None = None  # one per worker process, set by _start_encoder


def _start_encoder(tokenizer_json: str) -> None:
    global _encoder
    _encoder = PieceEncoder(tokenizer_from_json(tokenizer_json, "the pack stage's tokenizer"))


def _tokenize_chunk(docs: list[str], cfg: DataConfig) -> np.ndarray:
    assert _encoder is not None
    parts = [fim_transform(d, cfg.seed, cfg.fim_rate, cfg.fim_spm_rate) for d in docs]
    encoded = _encoder.encode_batch([p for ps in parts for p in ps if isinstance(p, str)])
    return np.fromiter(_ids(parts, iter(encoded)), dtype=token_dtype(cfg.vocab_size))


def tokenize_documents(tok: Tokenizer, docs: Sequence[str], cfg: DataConfig, desc: str = "tokenize") -> np.ndarray:
    """One token stream: each document FIM-transformed, its texts encoded, sentinels as ids, then EOS.

    Runs on every core, a chunk of documents per task.
    """
    sizes = [len(d.encode()) for d in docs]
    ranges = byte_chunks(sizes, _CHUNK_BYTES)
    chunks = [list(docs[r.start : r.stop]) for r in ranges]
    chunk_bytes = [sum(sizes[i] for i in r) for r in ranges]
    work = partial(_tokenize_chunk, cfg=cfg)
    streams = parallel_map(work, chunks, chunk_bytes, desc, _start_encoder, (tok.to_str(),))
    return np.concatenate(streams) if streams else np.zeros(0, dtype=token_dtype(cfg.vocab_size))


def pack_windows(stream: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``stream`` into consecutive windows of seq_len+1 tokens; returns (windows, the shorter tail)."""
    w = seq_len + 1
    n = len(stream) // w
    return stream[: n * w].reshape(n, w), stream[n * w :]


def _write_shards(windows: np.ndarray, split: Split, tmp: Path, per_shard: int) -> list[Shard]:
    shards = []
    for k, start in enumerate(range(0, len(windows), per_shard)):
        part = windows[start : start + per_shard]
        name = f"{split}-{k:05d}.npy"
        digest = write_npy(part, tmp / name)
        shards.append(Shard(file=f"{TOKENS_DIR}/{name}", windows=len(part), sha256=digest))
    return shards


def pack(cfg: DataConfig, out: Path) -> Manifest:
    """Run the pack stage: corpus and tokenizer in ``out`` to token shards and the manifest."""
    tok_path = out / TOKENIZER
    tok = load_tokenizer(tok_path)
    window = cfg.seq_len + 1
    per_shard = max(1, cfg.shard_tokens // window)
    splits: dict[str, SplitTokens] = {}
    with staged_dir(out / TOKENS_DIR) as tmp:
        for split in SPLITS:
            docs = read_corpus(out, split)
            docs = [docs[i] for i in document_order(len(docs), cfg.seed)]
            stream = tokenize_documents(tok, docs, cfg, desc=f"tokenize {split}")
            windows, tail = pack_windows(stream, cfg.seq_len)
            splits[split] = SplitTokens(
                documents=len(docs),
                source_bytes=sum(len(d.encode()) for d in docs),
                tokens=len(stream),
                windows=len(windows),
                tail_tokens=len(tail),
                shards=_write_shards(windows, split, tmp, per_shard),
            )
        for split, fix in (("train", "lower seq_len or add source"), ("val", "raise val_fraction or add source")):
            if splits[split].windows == 0:
                raise ValueError(
                    f"the {split} split has {splits[split].tokens} tokens, fewer than one window of {window}; "
                    f"{fix} (training evaluates on the val split)"
                )
        (out / MANIFEST).unlink(missing_ok=True)  # a manifest never describes shards it did not list
    manifest = Manifest(
        config=cfg.fingerprint_fields(),
        vocab_size=cfg.vocab_size,
        tokenizer_vocab=tok.get_vocab_size(),
        seq_len=cfg.seq_len,
        dtype=token_dtype(cfg.vocab_size).name,
        seed=cfg.seed,
        fim_rate=cfg.fim_rate,
        fim_spm_rate=cfg.fim_spm_rate,
        special_tokens={s: i for i, s in enumerate(SPECIAL_TOKENS)},
        tokenizer_sha256=tokenizer_sha256(tok_path),
        corpus_sha256=corpus_sha256(out),
        splits=splits,
    )
    write_text_atomic(out / MANIFEST, manifest.model_dump_json(indent=2) + "\n")
    return manifest


def load_manifest(out: Path) -> Manifest:
    """The manifest of a data directory; a missing or malformed one is an error naming the file."""
    path = out / MANIFEST
    try:
        return Manifest(**json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise ValueError(f"{path}: no manifest; build the data with `albor data prepare`") from e
    except (OSError, ValueError, TypeError, ValidationError) as e:
        raise ValueError(f"{path}: malformed manifest: {e}") from e


def check_tokenizer(out: Path, manifest: Manifest) -> None:
    """Raise when ``out/tokenizer.json`` is not the tokenizer the shards were made with."""
    path = out / TOKENIZER
    if not path.is_file():
        raise ValueError(f"{path}: tokenizer is missing")
    digest = tokenizer_sha256(path)
    if digest != manifest.tokenizer_sha256:
        raise ValueError(
            f"{path}: tokenizer does not match {out / MANIFEST} (sha256 {digest[:12]}…, manifest has "
            f"{manifest.tokenizer_sha256[:12]}…); the token shards were made with another tokenizer"
        )
    # The manifest can be re-hashed by hand; the data's own fingerprint (its vocabulary) cannot.
    vocab = load_tokenizer(path).get_vocab_size()
    if vocab != manifest.tokenizer_vocab or vocab > manifest.config.get("vocab_size", vocab):
        raise ValueError(
            f"{path}: a tokenizer of {vocab:,} ids, but the shards were made with one of "
            f"{manifest.tokenizer_vocab:,} (data vocab_size {manifest.config.get('vocab_size')}); "
            "the token shards were made with another tokenizer"
        )


def check_same_tokenizer(out: Path, tokenizer: Path) -> None:
    """Raise unless ``tokenizer`` (a checkpoint's) is the one the shards of ``out`` were made with.

    A data folder rebuilt from other sources keeps its vocabulary size and context, so only the
    tokenizer's hash tells that its ids mean other text.
    """
    manifest = load_manifest(out)
    digest = tokenizer_sha256(tokenizer)
    if digest != manifest.tokenizer_sha256:
        raise ValueError(
            f"{tokenizer} (sha256 {digest[:12]}…) is not the tokenizer of the data in {out} "
            f"({manifest.tokenizer_sha256[:12]}…): the data folder was rebuilt since; its windows mean other text"
        )


def _check_shard(out: Path, shard: Shard) -> Path:
    path = out / shard.file
    if not path.is_file():
        raise ValueError(f"{path}: token shard is missing")
    if sha256_file(path) != shard.sha256:
        raise ValueError(f"{path}: token shard is corrupt or truncated (sha256 differs from {out / MANIFEST})")
    return path


def load_windows(out: Path, split: Split) -> Windows:
    """The windows of ``split``, (n_windows, seq_len + 1), checked against the manifest and read on demand.

    The tokenizer and every shard must match their sha256 (each checked once, here); rows are read
    from the shards as they are indexed, so no split is loaded whole.
    """
    out = Path(out)
    manifest = load_manifest(out)
    if split not in manifest.splits:
        raise ValueError(f"{out / MANIFEST}: no split {split!r}; it has {sorted(manifest.splits)}")
    check_tokenizer(out, manifest)
    shards = manifest.splits[split].shards
    return Windows(
        [out / s.file for s in shards], [s.sha256 for s in shards], [s.windows for s in shards],
        manifest.seq_len + 1, manifest.dtype,
    )  # fmt: skip


def verify(out: Path) -> Manifest:
    """Check a whole data directory (tokenizer and every shard of every split); returns its manifest."""
    manifest = load_manifest(out)
    check_tokenizer(out, manifest)
    for split in manifest.splits.values():
        for shard in split.shards:
            _check_shard(out, shard)
    return manifest
