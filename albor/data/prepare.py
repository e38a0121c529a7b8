"""``prepare``: corpus, tokenizer and pack in one call, cached by configuration in a data directory."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from albor.data.config import DataConfig
from albor.data.corpus import build_corpus
from albor.data.packing import MANIFEST, Manifest, pack, verify
from albor.data.tokenizer import build_tokenizer


def default_data_dir(cfg: DataConfig) -> Path:
    """The cache folder of ``cfg``'s data: ``$ALBOR_CACHE/data/...``, else ``~/.cache/albor/data/...``.

    Its name carries a hash of every field that shapes the data, so two configurations never share
    (or rebuild) one folder.
    """
    root = Path(os.environ["ALBOR_CACHE"]) if os.environ.get("ALBOR_CACHE") else Path.home() / ".cache" / "albor"
    digest = hashlib.sha256(json.dumps(cfg.fingerprint_fields(), sort_keys=True).encode()).hexdigest()[:10]
    return root / "data" / f"vocab{cfg.vocab_size}-seq{cfg.seq_len}-seed{cfg.seed}-{digest}"


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` so that concurrent ``prepare`` calls build it once."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached(cfg: DataConfig, out: Path) -> Manifest | None:
    """The manifest of ``out`` when it was built from ``cfg`` and still verifies, else None."""
    if not (out / MANIFEST).is_file():
        return None
    try:
        manifest = verify(out)
    except ValueError as e:
        print(f"rebuilding {out}: {e}")
        return None
    if manifest.config != cfg.fingerprint_fields():
        print(f"rebuilding {out}: it was built with another configuration")
        return None
    return manifest


def summary(manifest: Manifest, seconds: dict[str, float], stage_bytes: dict[str, int] | None = None) -> str:
    """Token counts, tokens per byte, and each stage's time and MB/s of source (``stage_bytes``; pack's
    bytes come from the manifest)."""
    lines = [f"tokenizer: vocab {manifest.tokenizer_vocab:,} (model vocab {manifest.vocab_size:,})"]
    for split, s in manifest.splits.items():
        lines.append(
            f"{split}: {s.documents:,} documents, {s.source_bytes / 1e6:.2f} MB -> {s.tokens:,} tokens "
            f"({s.tokens / max(s.source_bytes, 1):.3f} tokens/byte), {s.windows:,} windows of {manifest.seq_len + 1}, "
            f"{len(s.shards)} shard(s), {s.tail_tokens} tail tokens dropped"
        )
    rates = {**(stage_bytes or {}), "pack": sum(s.source_bytes for s in manifest.splits.values())}
    lines.append(
        "time: "
        + ", ".join(
            f"{k} {v:.1f} s ({rates[k] / 1e6 / max(v, 1e-9):.1f} MB/s)" for k, v in seconds.items() if k in rates
        )
        + f", total {sum(seconds.values()):.1f} s"
    )
    return "\n".join(lines)


def prepare_config(cfg: DataConfig) -> Path:
    """Build (or reuse) the data directory ``cfg`` describes; returns it."""
    out = Path(cfg.out) if cfg.out is not None else default_data_dir(cfg)
    with _locked(out):
        if cached(cfg, out) is not None:
            print(f"data: reusing {out}")
            return out
        (out / MANIFEST).unlink(missing_ok=True)
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        report = build_corpus(cfg, out)
        seconds["corpus"] = time.perf_counter() - t
        print(report.format())
        t = time.perf_counter()
        build_tokenizer(cfg, out)
        seconds["tokenizer"] = time.perf_counter() - t
        t = time.perf_counter()
        manifest = pack(cfg, out)
        seconds["pack"] = time.perf_counter() - t
        train_bytes = report.splits["train"]["bytes"]
        # A sample fills its cap to within one document.
        tokenized = min(train_bytes, cfg.tokenizer_sample_bytes or train_bytes)
        print(summary(manifest, seconds, {"corpus": report.stages[0][2], "tokenizer": tokenized}))
        print(f"data: wrote {out / MANIFEST}")
    return out


def prepare(
    source: str | Path | None,
    out: Path | None,
    vocab_size: int,
    seq_len: int,
    seed: int = 0,
    fim_rate: float = 0.5,
    **options: Any,
) -> Path:
    """Run corpus, tokenizer and pack into ``out`` and return it; an existing output of the same
    configuration that still verifies is reused. ``source=None`` is the embedded default; ``options``
    are the other ``DataConfig`` fields; ``out=None`` is ``default_data_dir(cfg)``.
    """
    cfg = DataConfig(
        source=None if source is None else str(source),
        out=out,
        vocab_size=vocab_size,
        seq_len=seq_len,
        seed=seed,
        fim_rate=fim_rate,
        **options,
    )
    return prepare_config(cfg)
