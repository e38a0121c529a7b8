"""What the compiled step keeps for backward: the tensors AOTAutograd's partitioner saves for one block.

One pre-norm block of a preset's shape is compiled with Inductor's partitioner (the trainer's compile,
at ``activation_memory_budget`` 1.0) under bf16 autocast (``falsification.backward``), and the forward
graph's saved tensors are listed with their bytes per token; weights' bf16 casts are listed apart,
since they do not grow with the batch. The last line scales the per-token sum to a micro-batch of the
preset's context and every layer. Runs on CUDA where there is one, else on the CPU (whose attention op
saves differently).

    python bench/saved_tensors.py [--preset pretrain-350m] [--micro-bs 32] [--out FILE] [field=value ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from albor.model import Block
from albor.ops.dispatch import Kernels
from albor.train.config import load_config
from falsification.backward import saved_tensors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. recompute=[swiglu]")
    ap.add_argument("--preset", default="pretrain-350m")
    ap.add_argument("--micro-bs", type=int, default=32)
    ap.add_argument("--out", type=Path, help="also write the rows as JSON lines here")
    args = ap.parse_args()
    cfg = load_config(args.preset, args.overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    block = Block(cfg.model, Kernels(), frozenset(cfg.recompute)).to(device)
    rows = saved_tensors(block, device)
    per_token = sum(r["bytes_per_token"] for r in rows)
    for r in rows:
        if r["alias_of"]:
            print(f"{r['name']:<22} {r['shape']!s:<22} {r['dtype']:<9} a view of {r['alias_of']}")
            continue
        size = (
            f"{r['bytes_per_token'] / 1024:7.2f} KiB/token"
            if r["bytes_per_token"]
            else f"{r['bytes'] / 2**20:7.2f} MiB"
        )
        print(f"{r['name']:<22} {r['shape']!s:<22} {r['dtype']:<9} {size}")
    m = cfg.model
    tokens = args.micro_bs * m.max_seq_len * m.n_layers
    total = {"device": str(device), "per_token_per_layer_kib": per_token / 1024, "gib": per_token * tokens / 2**30}
    print(f"{per_token / 1024:.2f} KiB per token per layer: {total['gib']:.2f} GiB at micro-batch {args.micro_bs}")
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in [*rows, total]))


if __name__ == "__main__":
    main()
