"""Sharded data parallelism on FSDP2 (``parallel: fsdp``): weights, gradients and optimizer state split
across the ranks, every block and then the root wrapped by ``torch.distributed.fsdp.fully_shard``.

Checkpoints of a sharded run are distributed checkpoints (``albor.dcp_checkpoint``), which load onto
any number of ranks; the data cursor re-slices the same global batches for the new world.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


def shard(model: nn.Module, blocks: nn.ModuleList, device: torch.device, bf16: bool) -> None:
    """FSDP2: shard every block and then the root, in place, over all ranks on ``device``'s kind; on
    CUDA in bf16, compute in bf16 and reduce gradients in fp32. Build the optimizer after this: the
    parameters become DTensors."""
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16 and device.type == "cuda"
        else None
    )
    # The mesh is named, not left to fully_shard: its default is the host's accelerator, so a run on
    # the CPU of a GPU host would put every rank on a CUDA device (ALB-280).
    kwargs: dict = {"mesh": init_device_mesh(device.type, (dist.get_world_size(),))}
    if policy is not None:
        kwargs["mp_policy"] = policy
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
