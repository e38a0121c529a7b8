"""Throughput of the data pipeline on this machine, in MB/s of Python source.

Runs the real stages (corpus, tokenizer, pack) on a source (default: the embedded default corpus)
into a scratch directory and reports wall-clock MB/s on all cores. Then, on the train documents
with the same tokenizer: the pack stage's tokenization (FIM + the piece-caching encoder) in this
process alone, and, as the peer anchor, Hugging Face ``encode_batch_fast``, what a pipeline without
FIM or caching would run. "Per core" is MB per CPU-second (the stage pools' worker processes are
not children of this one, so their CPU time is not counted: only MB/s is reported for those).

Example: python bench/data_throughput.py --vocab-size 8192 --seq-len 256
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from albor.data.config import DataConfig
from albor.data.corpus import build_corpus, read_corpus
from albor.data.files import n_workers
from albor.data.fim import fim_transform
from albor.data.packing import pack
from albor.data.tokenizer import PieceEncoder, build_tokenizer, load_tokenizer


def _cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@contextmanager
def measure(spent: dict[str, float]) -> Iterator[None]:
    """Fill ``spent`` with the block's wall and CPU seconds."""
    wall, cpu = time.perf_counter(), _cpu_seconds()
    yield
    spent["wall"], spent["cpu"] = time.perf_counter() - wall, _cpu_seconds() - cpu


def row(stage: str, nbytes: int, spent: dict[str, float], per_core: bool = True) -> dict[str, Any]:
    mb = nbytes / 1e6
    r = {"stage": stage, "MB": round(mb, 2), "seconds": round(spent["wall"], 2), "MB_s": round(mb / spent["wall"], 2)}
    if per_core:
        r |= {"cores_busy": round(spent["cpu"] / spent["wall"], 2), "MB_s_per_core": round(mb / spent["cpu"], 2)}
    print(json.dumps(r), flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=None, help="folder or Parquet; default: the embedded default corpus")
    ap.add_argument("--vocab-size", type=int, default=8192)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--max-source-bytes", type=int, default=None, help="default: DataConfig's")
    a = ap.parse_args()
    cap = {"max_source_bytes": a.max_source_bytes} if a.max_source_bytes else {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        cfg = DataConfig(source=a.source, out=out, vocab_size=a.vocab_size, seq_len=a.seq_len, **cap)
        t: dict[str, float] = {}
        with measure(t):
            report = build_corpus(cfg, out)
        row("corpus (all cores)", report.stages[0][2], t, per_core=False)
        with measure(t):
            build_tokenizer(cfg, out)
        row("tokenizer training", report.splits["train"]["bytes"], t)
        with measure(t):
            manifest = pack(cfg, out)
        ours = row(
            "pack: FIM + tokenize + pack (all cores)", sum(s.source_bytes for s in manifest.splits.values()), t, False
        )
        docs, tok = read_corpus(out, "train"), load_tokenizer(out / "tokenizer.json")
        nbytes = sum(len(d.encode()) for d in docs)
        texts = [
            p for d in docs for p in fim_transform(d, cfg.seed, cfg.fim_rate, cfg.fim_spm_rate) if isinstance(p, str)
        ]
        with measure(t):
            PieceEncoder(tok).encode_batch(texts)
        row("tokenization, one process (FIM texts, piece cache)", nbytes, t)
        with measure(t):
            tok.encode_batch_fast(docs)
        peer = row("peer: encode_batch_fast (all cores)", nbytes, t)
    print(
        json.dumps(
            {
                "pack_vs_peer": round(ours["MB_s"] / peer["MB_s"], 2),
                "cores": n_workers(),
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "cpu": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
