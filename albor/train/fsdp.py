"""Sharded data parallelism on FSDP2 (``parallel: fsdp``): weights, gradients and optimizer state split
across the ranks, every block and then the root wrapped by ``torch.distributed.fsdp.fully_shard``.

Checkpoints of a sharded run are distributed checkpoints (``albor.dcp_checkpoint``), which load onto
any number of ranks; the data cursor re-slices the same global batches for the new world.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def shard(model: nn.Module, blocks: nn.ModuleList, bf16_cuda: bool) -> None:
    """FSDP2: shard every block and then the root, in place; on CUDA in bf16, compute in bf16 and
    reduce gradients in fp32. Build the optimizer after this: the parameters become DTensors."""
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16_cuda else None
    kwargs = {"mp_policy": policy} if policy is not None else {}
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)


@contextmanager
def no_gradient_sync(model: nn.Module) -> Iterator[None]:
    """Skip FSDP's gradient reduce-scatter for the micro-batches of a step before its last."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
