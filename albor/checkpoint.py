"""Atomic checkpoints: save, verify, list, prune and load (for resume and for inference).

Layout (DESIGN.md): ``checkpoints/step-NNNNNNNN/`` holds model.safetensors, optimizer.pt,
state.json, config.yaml, tokenizer.json and MANIFEST.json (sha256 of every other file). It is
written as ``.tmp-step-NNNNNNNN``, every file fsynced, then renamed; ``latest`` and ``best`` are
symlinks replaced atomically. A checkpoint whose manifest does not verify is never loaded.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict
from torch.distributed.tensor import DTensor

from albor.config import ModelConfig, OptimConfig
from albor.crash import crash_point
from albor.data.tokenizer import load_tokenizer
from albor.dcp_checkpoint import full_state, is_sharded, load_full, load_sharded
from albor.io import fsync_dir, write_json_atomic
from albor.ladder.lora import LoraSettings, add_lora, merge_lora
from albor.model import Decoder
from albor.optim.adamw import build_optimizer

COMMON_FILES = ("state.json", "config.yaml", "tokenizer.json")
WEIGHT_FILES = ("model.safetensors", "optimizer.pt")  # a sharded checkpoint holds dcp/ instead
PREFIX = "step-"


class CheckpointError(Exception):
    """A checkpoint is missing, incomplete or corrupt; the message names the file."""


def step_dir_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def set_link(link: Path, target: str) -> None:
    """Point symlink ``link`` at ``target`` (a sibling name) atomically."""
    tmp = link.with_name(f".tmp-{link.name}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: Decoder,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    config_yaml: str,
    tokenizer_path: Path,
) -> Path:
    """Write the checkpoint of ``step`` under ``root`` atomically and point ``latest`` at it.

    A write that fails (a full disk, most often) removes its temporary folder and raises
    CheckpointError saying what failed and how much space is left; the previous checkpoints stand.
    """
    tmp = new_checkpoint_dir(root, step)
    tmp.mkdir(parents=True)
    try:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        crash_point("checkpoint", step)
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as a RuntimeError of its zip writer
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(_write_failure(tmp, step, e)) from e
    return complete(tmp, step, state, config_yaml, tokenizer_path)


def new_checkpoint_dir(root: Path, step: int) -> Path:
    """The temporary folder step ``step``'s checkpoint is written into (``.tmp-step-N``), left empty."""
    final = root / step_dir_name(step)
    if final.exists():
        raise CheckpointError(f"{final} exists already: a step is never saved twice")
    tmp = root / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def complete(tmp: Path, step: int, state: dict[str, Any], config_yaml: str, tokenizer_path: Path) -> Path:
    """Add state, config and tokenizer to ``tmp`` (which holds the weights), seal it with a manifest of every
    file, rename it into place and point ``latest`` at it; a failed write removes ``tmp``."""
    root = tmp.parent
    final = root / tmp.name.removeprefix(".tmp-")
    try:
        (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        (tmp / "config.yaml").write_text(config_yaml)
        shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for path in files:
            _fsync(path)
        write_json_atomic(tmp / "MANIFEST.json", {p.relative_to(tmp).as_posix(): _sha256(p) for p in files})
        for folder in {p.parent for p in files} | {tmp}:
            fsync_dir(folder)
    except (OSError, RuntimeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(_write_failure(tmp, step, e)) from e
    os.rename(tmp, final)
    fsync_dir(root)
    crash_point("link", step)
    set_link(root / "latest", final.name)
    return final


def _write_failure(tmp: Path, step: int, error: BaseException) -> str:
    """What failed in writing ``tmp`` (whose removal was attempted), and what to do."""
    root = tmp.parent
    free = shutil.disk_usage(root).free
    full = getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < (1 << 20)
    why = "the disk is full" if full else "the write failed"
    # Removal can fail too (a filesystem gone read-only): the folder is never listed or loaded, and the
    # next save of the step or the next pruning removes it.
    partial = "was removed" if not tmp.exists() else f"{tmp.name} could not be removed (it is never loaded)"
    return (
        f"{root}: saving step {step} failed, {why} ({type(error).__name__}: {error}; {free:,} bytes free); "
        f"the partial checkpoint {partial} and the earlier ones are intact: free space, then --resume"
    )


def verify(ckpt: Path) -> None:
    """Raise CheckpointError naming the first file that is missing or does not match the manifest."""
    manifest_path = ckpt / "MANIFEST.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({e})") from e
    weights = ("dcp/.metadata",) if "dcp/.metadata" in manifest else WEIGHT_FILES
    missing = sorted({*COMMON_FILES, *weights} - set(manifest))
    if missing:
        raise CheckpointError(f"{manifest_path}: manifest lacks {missing}")
    for name, digest in manifest.items():
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing")
        if _sha256(path) != digest:
            raise CheckpointError(f"{path}: sha256 does not match {manifest_path}")


def _free_name(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, … : the first that does not exist yet."""
    n, candidate = 1, path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}-{n}")
    return candidate


def list_checkpoints(root: Path) -> list[Path]:
    """Completed checkpoint directories under ``root``, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and p.is_dir() and not p.is_symlink())


def latest_valid(root: Path) -> Path | None:
    """The newest checkpoint that verifies; each one skipped is warned about by name."""
    for ckpt in reversed(list_checkpoints(root)):
        try:
            verify(ckpt)
        except CheckpointError as e:
            warnings.warn(f"skipping corrupt checkpoint {ckpt}: {e}", stacklevel=2)
            continue
        return ckpt
    return None


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` checkpoints, never the one ``best`` points to."""
    best = root / "best"
    keep = {best.resolve()} if best.is_symlink() else set()
    for ckpt in list_checkpoints(root)[:-keep_last]:
        if ckpt.resolve() not in keep:
            shutil.rmtree(ckpt)
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)


def load_checkpoint(ckpt: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Verify ``ckpt``, load weights (and optimizer state) in place, and return its state.json.

    Either kind of checkpoint loads into either kind of model: sharded into sharded through DCP
    (resharding onto this run's ranks; collective), and across kinds through full state dicts, so an
    FSDP run's checkpoint also serves evaluation, generation, fine-tuning and export on one process.
    """
    verify(ckpt)
    into_shards = any(isinstance(p, DTensor) for p in model.parameters())
    try:
        if is_sharded(ckpt) and into_shards and optimizer is not None:
            load_sharded(ckpt, model, optimizer)
        elif is_sharded(ckpt) or into_shards:
            load_full(full_state(ckpt) if is_sharded(ckpt) else _full_single(ckpt, optimizer), model, optimizer)
        else:
            load_model(model, str(ckpt / "model.safetensors"), strict=True)
            if optimizer is not None:
                optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    except (SafetensorError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as e:
        # UnpicklingError: optimizer.pt holds more than tensors and plain data, which torch will not run
        raise CheckpointError(f"{ckpt}: does not fit the model: {type(e).__name__}: {e}") from e
    return json.loads((ckpt / "state.json").read_text())


def _full_single(ckpt: Path, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """An unsharded checkpoint's weights and optimizer state as full state dicts keyed by parameter name."""
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    plain = Decoder(ModelConfig(**config["model"]))
    load_model(plain, str(ckpt / "model.safetensors"), strict=True)
    if optimizer is None:
        return {"model": plain.state_dict()}
    plain_opt = build_optimizer(plain, OptimConfig(**config["optim"]))
    plain_opt.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=True))
    model_sd, optim_sd = get_state_dict(plain, plain_opt)
    return {"model": model_sd, "optimizer": optim_sd}


class CheckpointManager:
    """One run's ``checkpoints/`` directory: it saves, verifies, finds the latest and best, and prunes.

    Every checkpoint carries the run's config and tokenizer; ``keep_last`` of them stay, and the best.
    """

    def __init__(self, root: Path, keep_last: int, config_yaml: str, tokenizer_path: Path) -> None:
        self.root = root
        self.keep_last = keep_last
        self.config_yaml = config_yaml
        self.tokenizer_path = tokenizer_path

    def save(self, step: int, model: Decoder, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
        """Write step ``step`` atomically, point ``latest`` at it, and prune the older ones."""
        path = save_checkpoint(
            self.root,
            step,
            model=model,
            optimizer=optimizer,
            state=state,
            config_yaml=self.config_yaml,
            tokenizer_path=self.tokenizer_path,
        )
        prune(self.root, self.keep_last)
        return path

    def mark_best(self, step: int) -> None:
        """Point ``best`` at step ``step``'s checkpoint (pruning never removes it)."""
        set_link(self.root / "best", step_dir_name(step))

    def any(self) -> bool:
        """True when the directory holds a completed checkpoint, valid or not."""
        return bool(list_checkpoints(self.root))

    def latest(self) -> Path | None:
        """The newest checkpoint that verifies (each one skipped is warned about), or None."""
        return latest_valid(self.root)

    def recover(self) -> Path | None:
        """The newest checkpoint that verifies, after moving every newer one that does not aside.

        A checkpoint that fails verification is renamed ``corrupt-step-NNNNNNNN`` (kept for inspection,
        never listed or loaded again) so that the resumed run can save that step anew; ``latest``
        then points at the checkpoint returned, and a ``best`` link to a moved one is removed.
        """
        for ckpt in reversed(list_checkpoints(self.root)):
            try:
                verify(ckpt)
            except CheckpointError as e:
                aside = _free_name(self.root / f"corrupt-{ckpt.name}")
                os.rename(ckpt, aside)
                fsync_dir(self.root)
                warnings.warn(f"moved corrupt checkpoint {ckpt.name} aside to {aside.name}: {e}", stacklevel=2)
                continue
            set_link(self.root / "latest", ckpt.name)
            best = self.root / "best"
            if best.is_symlink() and not best.exists():
                best.unlink()
            return ckpt
        return None

    def load(self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
        """Verify ``path``, load its weights (and optimizer state) in place; returns its state.json."""
        return load_checkpoint(path, model, optimizer)


@dataclass
class Inference:
    """A checkpoint loaded for evaluation or generation."""

    model: Decoder
    tokenizer: Tokenizer
    model_config: ModelConfig
    data_dir: Path | None
    path: Path


def resolve(path: Path) -> Path:
    """A checkpoint directory from a checkpoint dir, a run's checkpoints dir, or a run dir."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run directory")
    if (path / "MANIFEST.json").exists() or path.name.startswith(PREFIX):
        return path.resolve()
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    ckpt = latest_valid(root)
    if ckpt is None:
        raise CheckpointError(f"{path}: holds no checkpoint that verifies")
    return ckpt


def load_for_inference(path: Path, device: torch.device | str = "cpu") -> Inference:
    """Load a verified checkpoint's model (eval mode, a LoRA run's adapters merged) and its own tokenizer (ALB-131)."""
    ckpt = resolve(path)
    verify(ckpt)
    config = yaml.safe_load((ckpt / "config.yaml").read_text())
    model_cfg = ModelConfig(**config["model"])
    model = Decoder(model_cfg)
    if config.get("lora") is not None:  # a LoRA run's checkpoint holds base and adapters: merged for use
        add_lora(model, LoraSettings(**config["lora"]))
    state = load_checkpoint(ckpt, model, None)
    if config.get("lora") is not None:
        merge_lora(model)
    data_dir = state.get("data_dir")
    return Inference(
        model=model.to(device).eval(),
        tokenizer=load_tokenizer(ckpt / "tokenizer.json"),
        model_config=model_cfg,
        data_dir=Path(data_dir) if data_dir else None,
        path=ckpt,
    )
