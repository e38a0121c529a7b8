"""Falsifiers for the ``packing`` contract (contracts/packing.yaml)."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from albor.data import load_manifest, load_windows, prepare
from albor.data.config import DataConfig
from albor.data.corpus import corpus_dir, read_corpus
from albor.data.files import sha256_file
from albor.data.fim import SENTINELS, fim_invert, parts_from_ids
from albor.data.packing import MANIFEST, document_order, pack, pack_windows, tokenize_documents
from albor.data.split import STDLIB_REPO
from albor.data.synthetic import TRICKY, clean_repos, tiny_tokenizer, write_repos
from albor.data.tokenizer import EOS, N_SPECIAL, decode, load_tokenizer, save_tokenizer, tokenizer_sha256
from albor.data.windows import write_npy
from albor.verify.contracts import declared, tolerance
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
        store = load_windows(out, split)
        windows = store[:]
        info = manifest.splits[split]
        assert windows.dtype == np.uint16 and store.shape == windows.shape == (info.windows, cfg.seq_len + 1)
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


@pytest.mark.claim("PACK-007")
def test_an_empty_val_split_is_refused_at_prepare(built: tuple[Path, DataConfig], tmp_path: Path) -> None:
    _, cfg = built
    with pytest.raises(
        ValueError, match=r"the val split has 0 tokens, fewer than one window of 16; raise val_fraction"
    ):
        prepare(cfg.source, tmp_path / "no-val", 300, 15, seed=3, shard_tokens=1024, val_fraction=0.0)
    assert not (tmp_path / "no-val" / MANIFEST).exists(), "no manifest describes data that cannot train"


@pytest.mark.claim("PACK-008")
def test_a_swapped_tokenizer_of_another_vocabulary_is_refused_even_when_rehashed(
    built: tuple[Path, DataConfig], tmp_path: Path
) -> None:
    out = _copy(built, tmp_path)
    other = tiny_tokenizer(vocab_size=280)
    digest = save_tokenizer(other, out / "tokenizer.json")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["tokenizer_sha256"] = digest  # the manifest re-hashed by hand: its sha256 now matches
    (out / MANIFEST).write_text(json.dumps(manifest))
    made_with = manifest["tokenizer_vocab"]
    assert other.get_vocab_size() != made_with
    with pytest.raises(ValueError, match=rf"a tokenizer of {other.get_vocab_size()} ids, .* one of {made_with:,}"):
        load_windows(out, "train")


# Trains a few steps on the data folder argv[1] in this process and prints its peak resident memory (KiB).
# One compute thread and one malloc arena, so that the peak holds what the data path keeps and not what
# the host's cores do: on a 16-core H200 host the unpinned peak grew 98 MiB between the two splits, on
# two cores 1 MiB; the thread pools and their arenas grow with the cores and vary with scheduling.
TRAIN_AND_MEASURE = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from albor.train.config import build_config
from albor.train.trainer import Trainer
data, source, runs = sys.argv[1:4]
cfg = build_config({
    "name": "rss", "runs_dir": runs, "device": "cpu", "micro_batch": 4, "eval_every": 10, "eval_windows": 4,
    "checkpoint_every": 10, "model": {"name": "rss", "n_layers": 1, "d_model": 16, "n_heads": 2, "n_kv_heads": 1,
    "d_ff": 24}, "data": {"vocab_size": 300, "seq_len": 255, "out": data, "source": source},
    "optim": {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 1, "max_steps": 10}}, [])
with Trainer(cfg) as trainer:
    trainer.fit()
from falsification.launch import own_peak_rss
print(own_peak_rss())
"""


def _synthetic_data(out: Path, built: tuple[Path, DataConfig], train_windows: int) -> Path:
    """A data folder of ``train_windows`` random windows of 256 tokens, as pack would describe it."""
    _, cfg = built
    tokens = out / "tokens"
    tokens.mkdir(parents=True)
    shutil.copyfile(built[0] / "tokenizer.json", out / "tokenizer.json")
    tok_vocab = load_tokenizer(out / "tokenizer.json").get_vocab_size()
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", train_windows), ("val", 64)):
        shards = []
        for k, start in enumerate(range(0, n, 100_000)):
            rows = rng.integers(0, tok_vocab, (min(100_000, n - start), 256), dtype=np.uint16)
            name = f"tokens/{split}-{k:05d}.npy"
            shards.append({"file": name, "windows": len(rows), "sha256": write_npy(rows, out / name)})
        splits[split] = {"documents": 1, "source_bytes": n, "tokens": n * 256, "windows": n, "tail_tokens": 0,
                         "shards": shards}  # fmt: skip
    data_cfg = DataConfig(source=cfg.source, out=out, vocab_size=300, seq_len=255)
    manifest = load_manifest(built[0]).model_dump() | {
        "config": data_cfg.fingerprint_fields(), "seq_len": 255, "splits": splits, "fim_rate": 0.5,
        "tokenizer_sha256": tokenizer_sha256(out / "tokenizer.json"), "tokenizer_vocab": tok_vocab, "seed": 0,
    }  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest))
    return out


@pytest.mark.claim("PACK-009")
@pytest.mark.slow
def test_a_ranks_memory_does_not_hold_the_train_split(built: tuple[Path, DataConfig], tmp_path: Path) -> None:
    peaks = {}
    for label, n in (("small", 1_000), ("large", 320_000)):  # 0.5 MB and 164 MB of train windows
        data = _synthetic_data(tmp_path / label, built, n)
        cmd = [sys.executable, "-c", TRAIN_AND_MEASURE, str(data), built[1].source, str(tmp_path / f"runs-{label}")]
        env = {**os.environ, "MALLOC_ARENA_MAX": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        peaks[label] = int(proc.stdout.strip().splitlines()[-1])
    grown = peaks["large"] - peaks["small"]
    assert grown <= tolerance("PACK-009") * 320_000 * 256 * 2, f"peak memory grew by {grown / 2**20:.0f} MiB"


@pytest.fixture(scope="module")
def real_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real standard-library modules, and a repository file holding the special tokens' text, as Parquet."""
    files = {(STDLIB_REPO, p): text for p, text in stdlib_sample().items() if not p.startswith("concurrent/")}
    files[("acme/tokens", "tokens.py")] = SPECIAL_TEXT
    return parquet_source(tmp_path_factory.mktemp("real") / "part-0.parquet", files)


@pytest.mark.claim("PACK-010")
@pytest.mark.parametrize("fim_rate", [0.0, 0.5])
def test_real_source_packs_to_its_text(real_source: Path, tmp_path: Path, fim_rate: float) -> None:
    out = prepare(real_source, tmp_path / "data", 300, 63, fim_rate=fim_rate, val_fraction=0.2, shard_tokens=4096)
    tok = load_tokenizer(out / "tokenizer.json")
    for split in ("train", "val"):
        docs = read_corpus(out, split)
        assert docs, f"the {split} split is empty"
        ids = load_windows(out, split)[:].reshape(-1).tolist()
        special = {t for t in ids if t < N_SPECIAL}
        assert special <= ({EOS} if fim_rate == 0 else {EOS, *SENTINELS}), f"special ids {special} in {split}"
        ends = [i for i, t in enumerate(ids) if t == EOS]
        assert len(ends) >= len(docs) - 1, "one EOS after every document that fits the windows"
        # Every document that lies whole between two EOS in the windows decodes back to a corpus document.
        texts = [fim_invert(parts_from_ids(ids[a + 1 : b], lambda r: decode(tok, r))) for a, b in pairwise(ends)]
        assert set(texts) <= set(docs) and len(texts) >= len(docs) - 3
    assert SPECIAL_TEXT in read_corpus(out, "train") + read_corpus(out, "val")


def _shards(tmp_path: Path, sizes: list[int], width: int, dtype: str) -> tuple[np.ndarray, list[Path], list[str]]:
    """Shards of ``sizes`` rows of random tokens written by ``write_npy``, and the array they make together."""
    whole = np.random.default_rng(len(sizes)).integers(0, 60000, (sum(sizes), width)).astype(dtype)
    paths, digests, start = [], [], 0
    for i, n in enumerate(sizes):
        paths.append(tmp_path / f"shard-{i}.npy")
        digests.append(write_npy(whole[start : start + n], paths[-1]))
        start += n
    return whole, paths, digests


@pytest.mark.claim("PACK-011")
@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=4),
    st.sampled_from(["uint16", "uint32"]),
    st.data(),
)
def test_windows_read_what_numpy_reads_of_the_shards_together(sizes: list[int], dtype: str, data) -> None:
    import tempfile

    from albor.data.windows import Windows

    with tempfile.TemporaryDirectory() as tmp:
        whole, paths, digests = _shards(Path(tmp), sizes, 7, dtype)
        w = Windows(paths, digests, sizes, 7, dtype)
        n = len(whole)
        assert (len(w), w.shape) == (n, (n, 7))
        # Any order, repeats, negative indices, runs across shard boundaries, and both ends.
        idx = [*data.draw(st.lists(st.integers(-n, n - 1), max_size=12)), 0, n - 1, -n]
        assert np.array_equal(w[np.array(idx)], whole[idx]) and w[np.array(idx)].dtype == whole.dtype
        run = data.draw(st.integers(0, n - 1))
        assert np.array_equal(w[run:], whole[run:]) and np.array_equal(w[::-1], whole[::-1])
        assert np.array_equal(w[run], whole[run]) and w[run].shape == (7,)
        assert np.array_equal(w[np.arange(run, n)], whole[run:]), "a sorted run across shards"
        for bad in ([n], [-n - 1], [[0, 1]]):
            with pytest.raises(IndexError) as e:
                w[np.array(bad)]
            assert str(e.value) == f"window indices must be a 1-d array within [0, {n})"
        fds = [s.fd for s in w._shards]
        del w, e  # the error's traceback holds the frame, and the frame the reader
        gc.collect()
        for fd in fds:
            with pytest.raises(OSError):
                os.fstat(fd)


@pytest.mark.claim("PACK-011")
def test_a_shard_other_than_the_manifest_says_is_refused_naming_both(tmp_path: Path) -> None:
    from albor.data.packing import token_dtype
    from albor.data.windows import Windows

    assert (token_dtype(1 << 16), token_dtype((1 << 16) + 1)) == (np.dtype(np.uint16), np.dtype(np.uint32))
    _, paths, digests = _shards(tmp_path, [3], 7, "uint16")
    cases = {
        "rows": ((4, 7, "uint16"), f"{paths[0]}: holds (3, 7) uint16, the manifest says (4, 7) uint16"),
        "width": ((3, 6, "uint16"), f"{paths[0]}: holds (3, 7) uint16, the manifest says (3, 6) uint16"),
        "dtype": ((3, 7, "uint32"), f"{paths[0]}: holds (3, 7) uint16, the manifest says (3, 7) uint32"),
    }
    for (rows, width, dtype), message in cases.values():
        with pytest.raises(ValueError) as e:
            Windows(paths, digests, [rows], width, dtype)
        assert str(e.value) == message
    fortran = tmp_path / "fortran.npy"
    np.save(fortran, np.asfortranarray(np.zeros((3, 7), np.uint16)))
    with pytest.raises(ValueError) as e:
        Windows([fortran], [sha256_file(fortran)], [3], 7, "uint16")
    assert str(e.value) == f"{fortran}: holds (3, 7) uint16 (Fortran order), the manifest says (3, 7) uint16"
    for version in ((2, 0), (3, 0)):
        other = tmp_path / f"v{version[0]}.npy"
        with other.open("wb") as f:
            np.lib.format.write_array(f, np.zeros((3, 7), np.uint16), version=version)
        if version == (2, 0):
            assert np.array_equal(Windows([other], [sha256_file(other)], [3], 7, "uint16")[:], np.zeros((3, 7)))
        else:
            with pytest.raises(ValueError, match=rf"^{other}: not a token shard: \(3, 0\)$"):
                Windows([other], [sha256_file(other)], [3], 7, "uint16")
    with pytest.raises(ValueError, match="Object arrays cannot be saved when allow_pickle=False"):
        write_npy(np.array([{"a": 1}], dtype=object), tmp_path / "pickle.npy")
