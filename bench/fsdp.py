"""FSDP2 on one GPU against the unsharded path, and an asynchronous checkpoint's pause against a synchronous one.

Both stacks run in this one process on the same GPU at the 350M shape (the ``mixed`` stack of
bench/throughput.py: compiled, bf16, the Triton linear + cross-entropy kernel), on the real prepared
corpus: tokens/s and peak memory of ``Trainer.train_step``, then, for the sharded run, how long
``Trainer.save()`` keeps training waiting, written synchronously and in the background.

    python bench/fsdp.py --micro-bs 16 [--steps 20] [field=value ...]

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from throughput import albor_config

from albor.train.trainer import Trainer


def _stack(overrides: list[str], micro_bs: int, steps: int, warmup: int, parallel: str, async_write: bool) -> dict:
    extra = [f"parallel={parallel}", f"async_checkpoint={str(async_write).lower()}"]
    cfg = albor_config([*overrides, *extra], micro_bs, steps + warmup + 4, "mixed", 1.0)
    # albor_config names every run "bench": each stack needs a run directory of its own.
    cfg = cfg.model_copy(update={"name": f"bench-{parallel}-{'async' if async_write else 'sync'}"})
    torch.cuda.reset_peak_memory_stats()
    with Trainer(cfg) as trainer:
        for _ in range(warmup):
            trainer.train_step()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        torch.cuda.synchronize()
        tok_s = trainer.tokens_per_step * steps / (time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2**30
        pauses = []
        for _ in range(2):  # the second save also completes the first one when written in the background
            trainer.train_step()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            trainer.save()
            pauses.append(time.perf_counter() - t0)
        trainer.finish_pending_save()
    return {
        "parallel": parallel,
        "async_checkpoint": async_write,
        "micro_bs": micro_bs,
        "tok_s": round(tok_s),
        "peak_mem_gb": round(peak, 2),
        "save_pause_s": [round(p, 3) for p in pauses],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--micro-bs", type=int, default=16)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=6)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    for parallel, async_write in (("ddp", False), ("fsdp", False), ("fsdp", True)):
        row = _stack(args.overrides, args.micro_bs, args.steps, args.warmup, parallel, async_write)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
