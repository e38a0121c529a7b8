"""A run directory's own rules: one writer at a time, a history of what happened to it, and which
config changes a resume may make.

``runs/<name>/.lock`` is held with an exclusive ``flock`` by the one trainer writing the run; the
OS releases it when that process dies, so a killed run resumes at once, while a second trainer is
refused with the holder's pid. ``runs/<name>/history.jsonl`` records every start, resume and
restart with the config changes it brought; ``config.yaml`` stays what the run started with.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import IO, Any

from albor.config.errors import ConfigError

# Fields a resume may change: they alter how long the run goes on and how it is watched, not what
# each step computes from the data. Anything else (the model, the data and its tokenizer, the
# optimizer and schedule, the batch) is refused with the differing fields named.
RESUMABLE = (
    "optim.max_steps",
    "epochs",
    "eval_every",
    "eval_windows",
    "checkpoint_every",
    "keep_last",
    "alert_loss",
    "alert_grad_norm",
    "alert_after",
    "micro_batch",  # with grad_accum: the split of a step's global batch, which the resume keeps
    "grad_accum",
    "logger",
    "device",
    "precision",
    "compile",
    "compile_scope",
    "activation_memory_budget",
    "recompute",
    "kernels",
    "allow_kernel_fallback",
    "deterministic",
    "async_checkpoint",
    "parallel",
    "runs_dir",
)


class RunLocked(RuntimeError):
    """Another live process is writing this run."""


class RunLock:
    """The exclusive write lock of one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / ".lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = self.path.open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise RunLocked(
                f"{self.path.parent} is being written by another trainer (pid {holder}); "
                "wait for it to finish, stop it, or give this run another name"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def record(run_dir: Path, event: str, **details: Any) -> None:
    """Append one event (start, resume, restart, …) to the run's history."""
    run_dir.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"event": event, "time": round(time.time(), 3), **details})
    with (run_dir / "history.jsonl").open("a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` as ``{"optim.lr": 1}``; the kernels mapping stays one field."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and key != "kernels":
            out |= flatten(value, f"{path}.")
        else:
            out[path] = value
    return out


def resume_changes(saved: dict[str, Any], requested: dict[str, Any], where: Path) -> dict[str, list[Any]]:
    """The fields ``requested`` changes from the checkpoint's ``saved`` config, each as [saved, requested].

    Raises ConfigError naming every changed field a resume may not change.
    """
    before, after = flatten(saved), flatten(requested)
    keys = sorted(before.keys() | after.keys())
    changed = {k: [before.get(k), after.get(k)] for k in keys if before.get(k) != after.get(k)}
    refused = {k: v for k, v in changed.items() if k not in RESUMABLE and k != "name"}
    if refused:
        lines = "; ".join(f"`{k}`: {old!r} in the checkpoint, {new!r} asked for" for k, (old, new) in refused.items())
        raise ConfigError(
            f"--resume: {where} was trained with another config ({lines}). A resume may change only "
            f"{', '.join(RESUMABLE)}; start a new run (another --name) for anything else"
        )
    return changed
