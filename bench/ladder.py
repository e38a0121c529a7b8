"""The ladder at a CPU scale: teacher, distilled student (online; and a same-steps student without the teacher),
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
    max_source_bytes=1_500_000,
    vocab_size=1024,
    seq_len=64,
    teacher={"n_layers": 3, "d_model": 96, "d_ff": 256},
    student={"n_layers": 1, "d_model": 48, "d_ff": 128},
    teacher_steps=250,
    student_steps=200,
    finetune_steps=40,
    micro_batch=16,
    distill_mode="online",
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
