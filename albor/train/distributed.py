"""Process-group setup for ``torchrun`` (gloo on CPU, NCCL on CUDA) and the few collectives the trainer uses."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

# How long the group's last users get the GIL after it is destroyed (see shutdown).
SETTLE_S = 0.1


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; a single process is rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Dist:
        """Where ``torchrun`` says this process stands, without joining the group."""
        return cls(
            int(os.environ.get("RANK", "0")),
            int(os.environ.get("WORLD_SIZE", "1")),
            int(os.environ.get("LOCAL_RANK", "0")),
        )

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def init(device_kind: str, sharded: bool = False) -> Dist:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    A sharded (FSDP) run needs a process group also on one process: without ``torchrun`` it makes
    a group of one on a free loopback port.
    """
    d = Dist.from_env()
    if not (d.active or sharded):
        return d
    if device_kind == "cuda":
        torch.cuda.set_device(d.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend)
        else:
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    return d


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shutdown(d: Dist) -> None:
    """Leave the process group, and let its threads finish what they hold before the interpreter may end."""
    if dist.is_initialized():
        dist.destroy_process_group()
        # A gloo worker that has just finished a collective still releases its tensors, and for a tensor
        # Python has seen that takes the GIL. If the interpreter is finalizing by then, the worker is stopped
        # inside C++ and the rank aborts ("terminate called without an active exception"). Destroying the
        # group does not join its workers while references to it live on (a DDP wrapper leaves some behind), so they
        # are given the GIL here instead.
        time.sleep(SETTLE_S)


def barrier(d: Dist) -> None:
    if d.active:
        dist.barrier()


def all_sum(d: Dist, value: float) -> float:
    """Sum of a number over ranks (float64, exact for integer counts below 2**53)."""
    if not d.active:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.item()


def gather(d: Dist, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not d.active:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(d: Dist, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not d.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
