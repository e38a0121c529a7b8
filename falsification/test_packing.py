"""Falsifiers for the ``packing`` contract (contracts/packing.yaml)."""

from __future__ import annotations

import shutil
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from albor.data import load_manifest, load_windows, prepare
from albor.data.config import DataConfig
from albor.data.corpus import corpus_dir, read_corpus
from albor.data.fim import SENTINELS, fim_invert, parts_from_ids
from albor.data.packing import MANIFEST, document_order, pack, pack_windows, tokenize_documents
from albor.data.split import STDLIB_REPO
from albor.data.synthetic import TRICKY, clean_repos, tiny_tokenizer, write_repos
from albor.data.tokenizer import EOS, N_SPECIAL, decode, load_tokenizer, save_tokenizer
from albor.verify.contracts import declared
from falsification.corpora import SPECIAL_TEXT, parquet_source, stdlib_sample

OPTIONS = dict(shard_tokens=1024, val_fraction=0.2)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DataConfig]:
    root = tmp_path_factory.mktemp("packing")
    repos = clean_repos(n_repos=8, files_per_repo=3)
    repos["repo0"]["tricky.py"] = "".join(TRICKY)
    src = write_repos(root / "src", repos)
    out = prepare(src, root / "data", 300, 15, seed=3, fim_rate=0.5, **OPTIONS)
    return out, DataConfig(source=str(src), out=out, vocab_size=300, seq_len=15, seed=3, fim_rate=0.5, **OPTIONS)


def _copy(built: tuple[Path, DataConfig], tmp_path: Path) -> Path:
    return Path(shutil.copytree(built[0], tmp_path / "data"))


@pytest.mark.claim("PACK-001")
@given(n=st.integers(0, 500), seq_len=st.integers(1, 40), seed=st.integers(0, 1000))
def test_packing_keeps_every_token(n: int, seq_len: int, seed: int) -> None:
    stream = np.random.default_rng(seed).integers(0, 65535, size=n).astype(np.uint16)
    windows, tail = pack_windows(stream, seq_len)
    assert windows.shape[1] == seq_len + 1
    assert len(tail) <= seq_len
    assert np.array_equal(np.concatenate([windows.reshape(-1), tail]), stream)


@pytest.mark.claim("PACK-002")
@given(docs=st.lists(st.text(min_size=1, max_size=60), min_size=1, max_size=12), seed=st.integers(0, 99))
def test_stream_documents_separated_by_eos(docs: list[str], seed: int) -> None:
    tok = tiny_tokenizer()
    cfg = DataConfig(vocab_size=300, seq_len=15, seed=seed, fim_rate=0.5)
    stream = tokenize_documents(tok, docs, cfg).tolist()
    assert stream.count(EOS) == len(docs) and stream[-1] == EOS
    ends = [i for i, t in enumerate(stream) if t == EOS]
    starts = [0] + [e + 1 for e in ends[:-1]]
    recovered = [
        fim_invert(parts_from_ids(stream[s:e], lambda r: decode(tok, r))) for s, e in zip(starts, ends, strict=True)
    ]
    assert recovered == docs


@pytest.mark.claim("PACK-003")
def test_shards_match_manifest(built: tuple[Path, DataConfig]) -> None:
    out, cfg = built
    manifest = load_manifest(out)
    tok = load_tokenizer(out / "tokenizer.json")
    assert manifest.dtype == "uint16" and manifest.seq_len == cfg.seq_len and manifest.seed == cfg.seed
    assert manifest.fim_rate == cfg.fim_rate and manifest.fim_spm_rate == cfg.fim_spm_rate
    assert manifest.special_tokens == {t: i for i, t in enumerate(declared("tokenizer", "special_tokens"))}
    for split in ("train", "val"):
        windows = load_windows(out, split)
        info = manifest.splits[split]
        assert windows.dtype == np.uint16 and windows.shape == (info.windows, cfg.seq_len + 1)
        assert len(info.shards) > 1, "the fixture is meant to span several shards"
        assert info.tokens == windows.size + info.tail_tokens
        docs = read_corpus(out, split)
        docs = [docs[i] for i in document_order(len(docs), cfg.seed)]
        expected, _ = pack_windows(tokenize_documents(tok, docs, cfg), cfg.seq_len)
        assert np.array_equal(windows, expected)


def _damage(out: Path, how: str) -> str:
    shard = out / load_manifest(out).splits["train"].shards[1].file
    if how == "flip":
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))
    elif how == "truncate":
        shard.write_bytes(shard.read_bytes()[:-40])
    elif how == "delete":
        shard.unlink()
    elif how == "manifest":
        (out / MANIFEST).unlink()
        return MANIFEST
    elif how == "tokenizer":
        save_tokenizer(tiny_tokenizer(290), out / "tokenizer.json")
        return "tokenizer.json"
    return shard.name


@pytest.mark.claim("PACK-004")
@pytest.mark.parametrize("how", ["flip", "truncate", "delete", "manifest", "tokenizer"])
def test_bad_data_refused(built: tuple[Path, DataConfig], tmp_path: Path, how: str) -> None:
    out = _copy(built, tmp_path)
    name = _damage(out, how)
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        load_windows(out, "train")


@pytest.mark.claim("PACK-005")
def test_failed_pack_leaves_no_partial_output(built: tuple[Path, DataConfig], tmp_path: Path) -> None:
    out, cfg = built
    out = _copy(built, tmp_path)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    val_shard = next(corpus_dir(out).glob("val-*.parquet"))
    val_shard.write_bytes(val_shard.read_bytes()[:100])  # the val split is packed after train
    before[val_shard.relative_to(out)] = val_shard.read_bytes()
    with pytest.raises(ValueError, match=val_shard.name):
        pack(cfg.model_copy(update={"out": out}), out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.claim("PACK-006")
def test_prepare_reuses_cache(built: tuple[Path, DataConfig], tmp_path: Path) -> None:
    _, cfg = built
    out = _copy(built, tmp_path)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert prepare(cfg.source, out, 300, 15, seed=3, fim_rate=0.5, **OPTIONS) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamp
    prepare(cfg.source, out, 300, 15, seed=3, fim_rate=0.25, **OPTIONS)
    assert load_manifest(out).fim_rate == 0.25


@pytest.fixture(scope="module")
def real_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real standard-library modules, and a repository file holding the special tokens' text, as Parquet."""
    files = {(STDLIB_REPO, p): text for p, text in stdlib_sample().items() if not p.startswith("concurrent/")}
    files[("acme/tokens", "tokens.py")] = SPECIAL_TEXT
    return parquet_source(tmp_path_factory.mktemp("real") / "part-0.parquet", files)


@pytest.mark.claim("PACK-007")
@pytest.mark.parametrize("fim_rate", [0.0, 0.5])
def test_real_source_packs_to_its_text(real_source: Path, tmp_path: Path, fim_rate: float) -> None:
    out = prepare(real_source, tmp_path / "data", 300, 63, fim_rate=fim_rate, val_fraction=0.2, shard_tokens=4096)
    tok = load_tokenizer(out / "tokenizer.json")
    for split in ("train", "val"):
        docs = read_corpus(out, split)
        assert docs, f"the {split} split is empty"
        ids = load_windows(out, split).reshape(-1).tolist()
        special = {t for t in ids if t < N_SPECIAL}
        assert special <= ({EOS} if fim_rate == 0 else {EOS, *SENTINELS}), f"special ids {special} in {split}"
        ends = [i for i, t in enumerate(ids) if t == EOS]
        assert len(ends) >= len(docs) - 1, "one EOS after every document that fits the windows"
        # Every document that lies whole between two EOS in the windows decodes back to a corpus document.
        texts = [fim_invert(parts_from_ids(ids[a + 1 : b], lambda r: decode(tok, r))) for a, b in pairwise(ends)]
        assert set(texts) <= set(docs) and len(texts) >= len(docs) - 3
    assert SPECIAL_TEXT in read_corpus(out, "train") + read_corpus(out, "val")
