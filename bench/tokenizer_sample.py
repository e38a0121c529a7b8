"""The tokenizer trained on a seeded sample of the train split (``data.tokenizer_sample_bytes``) against the
tokenizer trained on all of it, in one process: training seconds, and how well each compresses the val split
(tokens per byte; more tokens per byte is a longer sequence for the same text, so a costlier step and a
higher loss per byte).

Example: python bench/tokenizer_sample.py --fractions 0.5 0.25 --vocab-size 32768
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from tokenizers import Tokenizer

from albor.data.config import DataConfig
from albor.data.corpus import build_corpus, read_corpus
from albor.data.tokenizer import tokenizer_sample, train_tokenizer


def _tokens_per_byte(tok: Tokenizer, texts: list[str]) -> float:
    ids = sum(len(e.ids) for e in tok.encode_batch(texts))
    return ids / sum(len(t.encode()) for t in texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--vocab-size", type=int, default=32768)
    parser.add_argument("--max-source-bytes", type=int, default=DataConfig().max_source_bytes)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cfg = DataConfig(out=Path(scratch), vocab_size=args.vocab_size, max_source_bytes=args.max_source_bytes)
        build_corpus(cfg, Path(scratch))
        train, val = read_corpus(Path(scratch), "train"), read_corpus(Path(scratch), "val")
    total = sum(len(t.encode()) for t in train)
    rows = []
    for fraction in [1.0, *args.fractions]:
        texts = train if fraction == 1.0 else tokenizer_sample(train, int(total * fraction), args.seed)
        start = time.perf_counter()
        tok = train_tokenizer(texts, args.vocab_size)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "fraction": fraction,
                "train_mb": sum(len(t.encode()) for t in texts) / 1e6,
                "seconds": round(seconds, 2),
                "val_tokens_per_byte": round(_tokens_per_byte(tok, val), 5),
            }
        )
    whole = rows[0]
    for row in rows:
        row["time_ratio"] = round(row["seconds"] / whole["seconds"], 3)
        row["tokens_per_byte_ratio"] = round(row["val_tokens_per_byte"] / whole["val_tokens_per_byte"], 4)
        print(json.dumps(row))
    print(json.dumps({"machine": platform.processor() or platform.machine(), "train_mb": total / 1e6}))


if __name__ == "__main__":
    main()
