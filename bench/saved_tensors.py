"""What the compiled step keeps for backward: the tensors AOTAutograd's partitioner saves for one block.

One pre-norm block of a preset's shape is compiled with Inductor's partitioner (the trainer's compile,
at ``activation_memory_budget`` 1.0) under bf16 autocast, and the forward graph's saved tensors are
listed with their bytes per token; weights' bf16 casts are listed apart, since they do not grow with
the batch. The last line scales the per-token sum to a micro-batch of the preset's context and every
layer. Runs on CUDA where there is one, else on the CPU (whose attention op saves differently).

    python bench/saved_tensors.py [--preset pretrain-350m] [--micro-bs 32] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch
from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
from torch._dynamo.backends.common import aot_autograd
from torch.multiprocessing.reductions import StorageWeakRef

from albor.model import Block
from albor.ops import rope_tables
from albor.ops.dispatch import Kernels
from albor.train.config import load_config

# The probe's own batch, of sizes no weight has: a saved tensor's bytes per token do not depend on it.
B, T = 3, 160


def saved_tensors(block: Block, cos: torch.Tensor, sin: torch.Tensor, device: torch.device) -> list[dict]:
    """The forward graph's outputs after the block's own: what backward reads, each with its bytes per token."""
    saved: list[dict] = []

    def forward_compiler(gm: torch.fx.GraphModule, _inputs: list) -> object:
        out = next(n for n in gm.graph.nodes if n.op == "output")
        storages: dict[StorageWeakRef, str] = {}
        for node in out.args[0][1:]:
            v = node.meta["val"]
            # A view of a tensor already listed costs nothing more: it is named, and not counted.
            alias = storages.setdefault(StorageWeakRef(v.untyped_storage()), node.name)
            per_batch = alias == node.name and v.ndim >= 2 and v.shape[0] in (B, B * T)
            saved.append(
                {
                    "name": node.name,
                    "shape": list(v.shape),
                    "dtype": str(v.dtype).removeprefix("torch."),
                    "bytes_per_token": v.numel() * v.element_size() / (B * T) if per_batch else 0.0,
                    "bytes": v.numel() * v.element_size() if alias == node.name else 0,
                    "alias_of": None if alias == node.name else alias,
                }
            )
        return make_boxed_func(gm)

    backend = aot_autograd(
        fw_compiler=forward_compiler,
        bw_compiler=lambda gm, _inputs: make_boxed_func(gm),
        partition_fn=functools.partial(min_cut_rematerialization_partition, compiler="inductor"),
    )
    x = torch.randn(B, T, block.attn_norm.numel(), device=device, requires_grad=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        y = torch.compile(block, backend=backend)(x, cos, sin)
    y.float().sum().backward()
    return saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="pretrain-350m")
    ap.add_argument("--micro-bs", type=int, default=32)
    ap.add_argument("--out", type=Path, help="also write the rows as JSON lines here")
    args = ap.parse_args()
    cfg = load_config(args.preset, []).model
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    block = Block(cfg, Kernels()).to(device)
    cos, sin = (t.to(device) for t in rope_tables(torch.arange(T), cfg.head_dim, cfg.rope_theta))
    rows = saved_tensors(block, cos, sin, device)
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
    tokens = args.micro_bs * cfg.max_seq_len * cfg.n_layers
    total = {"device": str(device), "per_token_per_layer_kib": per_token / 1024, "gib": per_token * tokens / 2**30}
    print(f"{per_token / 1024:.2f} KiB per token per layer: {total['gib']:.2f} GiB at micro-batch {args.micro_bs}")
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in [*rows, total]))


if __name__ == "__main__":
    main()
