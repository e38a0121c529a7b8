"""What a block's backward keeps and what it runs: the tensors AOTAutograd's partitioner saves for a compiled
block, per token, and the aten ops a decoder's backward runs, by name.

Shared by the ``recompute`` and ``model`` falsifiers and ``bench/saved_tensors.py``.
"""

from __future__ import annotations

import functools
from collections import Counter

import torch
from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
from torch._dynamo.backends.common import aot_autograd
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode

from albor.config import ModelConfig
from albor.model import Block, Decoder
from albor.ops import rope_tables

# The probe's own batch, of sizes no weight has: a saved tensor's bytes per token do not depend on it.
B, T = 3, 10


def saved_tensors(block: Block, device: torch.device) -> list[dict]:
    """The forward graph's outputs after the block's own, one block compiled with Inductor's partitioner
    under bf16 autocast: what backward reads, each with its bytes per token (0 for what does not grow
    with the batch, such as the weights' bf16 casts)."""
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
    cos, sin = (t.to(device) for t in rope_tables(torch.arange(T), block.attn.hd))
    x = torch.randn(B, T, block.attn_norm.numel(), device=device, requires_grad=True)
    torch._dynamo.reset()
    with torch.autocast(device.type, dtype=torch.bfloat16):
        y = torch.compile(block, backend=backend)(x, cos, sin)
    y.float().sum().backward()
    return saved


def saved_bytes_per_token(block: Block, device: torch.device) -> float:
    """The sum of ``saved_tensors``' bytes per token."""
    return sum(r["bytes_per_token"] for r in saved_tensors(block, device))


class _Ops(TorchDispatchMode):
    """Counts the aten ops that run, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def backward_ops(cfg: ModelConfig, recompute: frozenset[str]) -> Counter[str]:
    """The aten ops, by name, that the backward of a seeded decoder's loss on a fixed batch runs (eager, CPU)."""
    torch.manual_seed(0)
    model = Decoder(cfg, recompute=recompute)  # type: ignore[arg-type]
    idx = torch.randint(0, cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    loss = model(idx, idx.roll(-1, 1))
    with _Ops() as ops:
        loss.backward()
    return ops.counts
