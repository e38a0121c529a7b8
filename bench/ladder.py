"""The ladder at a CPU scale: teacher, distilled student (and a same-steps student without the teacher),
instruct LoRA, SLERP merge, 2:4 WANDA prune, Q4_K_M GGUF where llama.cpp is installed, each with its card.

`python bench/ladder.py --root runs/ladder-cpu --record` makes it on a slice of the standard library, prints
the ladder table and copies the cards to `spec/ladder/`, where the book's ladder page reads them.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from albor.ladder.model_card import CARD, card_path, ladder_table, read_card
from falsification.ladder_runs import LadderScale, build_ladder

SCALE = LadderScale(
    synthetic=False,
    max_source_bytes=3_000_000,
    vocab_size=2048,
    seq_len=128,
    teacher={"n_layers": 4, "d_model": 128, "d_ff": 320},
    student={"n_layers": 2, "d_model": 64, "d_ff": 160},
    teacher_steps=400,
    student_steps=300,
    finetune_steps=60,
    micro_batch=16,
    top_k=32,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=Path("runs/ladder-cpu"))
    p.add_argument("--record", action="store_true", help="copy the cards to spec/ladder/")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    variants = build_ladder(args.root, SCALE)
    cards = [read_card(card_path(path)) for path in variants.values()]
    print(ladder_table(cards))
    print(f"built in {time.perf_counter() - t0:.0f} s")
    if args.record:
        out = Path(__file__).parent.parent / "spec" / "ladder"
        shutil.rmtree(out, ignore_errors=True)
        for name, path in variants.items():
            (out / name).mkdir(parents=True)
            shutil.copy(card_path(path), out / name / CARD)


if __name__ == "__main__":
    main()
