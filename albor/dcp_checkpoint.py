"""Distributed checkpoints for sharded (FSDP) runs, written by every rank through torch.distributed.checkpoint.

A sharded checkpoint is the directory of an ordinary one (state.json, config.yaml, tokenizer.json,
MANIFEST.json) whose weights and optimizer state are a DCP folder, ``dcp/``, that every rank writes
its shards into. It is written as ``.tmp-step-N`` and completed (manifest over every file, fsync,
rename, ``latest``) by rank 0 only after every rank's shards are on disk, so a rank killed mid-save
leaves the previous checkpoint as ``latest``. With ``async_write`` the shards are written in the
background while training goes on, and the checkpoint is completed at the next save or at the end.

Loading reshards: DCP reads the saved shards into whatever sharding the loading run has, on any
number of ranks. ``full_state`` turns any checkpoint, sharded or not, into full model and optimizer
state dicts (keyed by parameter name) on one process, for inference, fine-tuning and export.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from albor.crash import crash_point

DCP_DIR = "dcp"


def is_sharded(ckpt: Path) -> bool:
    return (ckpt / DCP_DIR / ".metadata").is_file()


@dataclass
class PendingSave:
    """A sharded checkpoint whose shards are written (or being written); ``finish`` completes it on every rank."""

    tmp: Path
    write_rest: Callable[[Path], None]  # rank 0: the non-tensor files, then the manifest and the rename
    barrier: Callable[[], None]
    main: bool
    future: Future | None = None

    def finish(self) -> Path | None:
        """Wait for this rank's shards, then for every rank's; rank 0 completes the checkpoint. Collective."""
        if self.future is not None:
            self.future.result()
        self.barrier()  # every rank's shards are on disk before the checkpoint is made visible
        path = None
        if self.main:
            self.write_rest(self.tmp)
            path = self.tmp.with_name(self.tmp.name.removeprefix(".tmp-"))
        self.barrier()
        return path


def begin_save(
    tmp: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    write_rest: Callable[[Path], None],
    main: bool,
    barrier: Callable[[], None],
    async_group: dist.ProcessGroup | None,
) -> PendingSave:
    """Start writing ``model`` and ``optimizer``'s shards into ``tmp/dcp`` on every rank. Collective.

    With ``async_group`` (a gloo group of the ranks, made once for the run) the shards are written in
    the background: that group carries the write's own collectives, so they never interleave with the
    training step's on the default group.
    """
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    target = {"model": model_sd, "optimizer": optim_sd}
    pending = PendingSave(tmp, write_rest, barrier, main)
    if async_group is not None:
        pending.future = dcp.async_save(target, checkpoint_id=str(tmp / DCP_DIR), process_group=async_group)
    else:
        dcp.save(target, checkpoint_id=str(tmp / DCP_DIR))
    crash_point("checkpoint", step)
    return pending


def load_sharded(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Read a sharded checkpoint into the (sharded) ``model`` and ``optimizer``, resharding as needed. Collective."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    target = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(target, checkpoint_id=str(ckpt / DCP_DIR))
    set_state_dict(model, optimizer, model_state_dict=target["model"], optim_state_dict=target["optimizer"])


def full_state(ckpt: Path) -> dict[str, Any]:
    """The sharded checkpoint ``ckpt`` as full ``{"model": ..., "optimizer": ...}`` state dicts, on this process."""
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(ckpt / DCP_DIR), f"{tmp}/full.pt")
        return torch.load(f"{tmp}/full.pt", weights_only=False)


def load_full(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Put full (parameter-name keyed) state dicts into ``model`` (and ``optimizer``), sharded or not; strict.

    A state without one of the model's weights is refused here: torch's full-state loader fills such a weight
    from the model itself and reports every key matched, so it would keep its value as built (ALB-308)."""
    missing = sorted(set(get_model_state_dict(model)) - set(state["model"]))
    if missing:
        raise KeyError(missing)
    options = StateDictOptions(full_state_dict=True, strict=True)
    if optimizer is None:
        set_model_state_dict(model, state["model"], options=options)
    else:
        set_state_dict(
            model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"], options=options
        )
