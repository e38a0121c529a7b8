"""Logit distillation: the student learns the teacher's tempered next-token distribution and the data
(contract ``distill``).

The loss of each target position is α·T²·KL + (1−α)·CE, summed over positions (the trainer divides by
the step's target count). Forward KL is KL(p_t^T ‖ p_s^T) = Σ p_t^T (log p_t^T − log p_s^T); reverse
KL swaps the two. p^T is the softmax of the logits divided by the temperature T; the T² factor keeps
the KL term's gradient on the scale of the CE's whatever T is (Hinton et al. 2015).

The teacher shares the student's tokenizer. Online, its forward runs inside the step. Offline, its
top-k log-probabilities at every position of every train window are written once as Parquet shards
beside a sha256 manifest, and read by the window indices the data cursor gives, so a resumed run sees
the teacher rows of the windows it trains on. The kept k are renormalised at use: the teacher's
distribution is the softmax over those k of log p/T (for k = V, exactly the online p_t^T). Forward KL
takes the student's full-vocabulary log-probabilities at the kept ids; reverse KL renormalises the
student over the kept ids too. Storing top-k costs k·4 bytes a token (uint16 id + float16 log-prob):
128 bytes at k = 32, so 2.5B tokens take about 320 GB: at that scale online is the only practical mode.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from albor import checkpoint as ckpt
from albor.config import Strict
from albor.config.errors import ConfigError
from albor.data.files import sha256_file, sha256_json, staged_dir
from albor.data.packing import check_same_tokenizer, load_manifest, token_dtype
from albor.data.windows import Windows
from albor.ops import IGNORE_INDEX
from albor.train import distributed
from albor.train.__main__ import add_run_arguments, run_command
from albor.train.config import TrainConfig
from albor.train.run import RunLock
from albor.train.trainer import Trainer

TEACHER_MANIFEST = "teacher.json"
SHARD_BYTES = 64 << 20


class DistillSettings(Strict):
    """Where the teacher is and how the student learns from it."""

    teacher: Path = Field(description="the teacher's checkpoint or run dir (same tokenizer as the student's data)")
    alpha: float = Field(default=0.5, ge=0, le=1, description="weight of the KL term; 1 − alpha weighs the CE")
    temperature: float = Field(default=2.0, gt=0, description="both distributions are softmax(logits / temperature)")
    kl: Literal["forward", "reverse"] = Field(
        default="forward", description="forward: KL(teacher ‖ student); reverse: KL(student ‖ teacher)"
    )
    mode: Literal["online", "offline"] = Field(
        default="online", description="online: the teacher runs in the step; offline: its top-k shards, written once"
    )
    top_k: int = Field(default=32, gt=0, description="offline: teacher log-probs kept per position")
    teacher_dir: Path | None = Field(
        default=None, description="offline: the top-k shards' folder; null: runs_dir/name/teacher-topk"
    )


class DistillConfig(TrainConfig):
    """A training run whose loss is the distillation loss."""

    distill: DistillSettings


# --- the loss ----------------------------------------------------------------------------------


def renormalise(teacher_logp: torch.Tensor, temperature: float) -> torch.Tensor:
    """log p_t^T over the kept ids: the log-softmax over the last dim of log p / T (sums to 1 in p)."""
    return torch.log_softmax(teacher_logp.float() / temperature, dim=-1)


def kd_divergence(
    student_logits: torch.Tensor,
    teacher_logp: torch.Tensor,
    ids: torch.Tensor | None,
    temperature: float,
    kl: Literal["forward", "reverse"] = "forward",
) -> torch.Tensor:
    """The KL of each position (N,) between tempered teacher and student.

    ``student_logits`` (N, V); ``teacher_logp`` (N, k) the teacher's log-probabilities at ``ids`` (N, k),
    or over the whole vocabulary when ``ids`` is None (k = V).
    """
    log_t = renormalise(teacher_logp, temperature)
    scaled = student_logits.float() / temperature
    if kl == "forward":
        log_s = torch.log_softmax(scaled, dim=-1)
        if ids is not None:
            log_s = log_s.gather(-1, ids)
        return (log_t.exp() * (log_t - log_s)).sum(-1)
    log_s = torch.log_softmax(scaled if ids is None else scaled.gather(-1, ids), dim=-1)
    return (log_s.exp() * (log_s - log_t)).sum(-1)


def kd_loss_sum(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logp: torch.Tensor,
    ids: torch.Tensor | None,
    settings: DistillSettings,
) -> torch.Tensor:
    """Σ over target positions of α·T²·KL + (1−α)·CE; positions with IGNORE_INDEX targets count for neither."""
    t, alpha = settings.temperature, settings.alpha
    ce = F.cross_entropy(student_logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    keep = targets != IGNORE_INDEX
    kl = kd_divergence(student_logits, teacher_logp, ids, t, settings.kl)[keep].sum()
    return alpha * t * t * kl + (1 - alpha) * ce


# --- offline teacher shards ---------------------------------------------------------------------


class ShardEntry(BaseModel):
    """One teacher shard: its file, sha256 and number of windows."""

    model_config = ConfigDict(extra="forbid")
    file: str
    sha256: str
    rows: int


class TeacherManifest(BaseModel):
    """What the top-k shards hold and what they were made from (``teacher.json``)."""

    model_config = ConfigDict(extra="forbid")
    format: Literal[1] = 1
    top_k: int
    seq_len: int
    n_windows: int
    id_dtype: str
    teacher_sha256: str = Field(description="sha256 of the teacher checkpoint's model.safetensors")
    windows_sha256: str = Field(description="sha256 of the train split's shard list: the windows the rows belong to")
    shards: list[ShardEntry]


def windows_sha256(data_dir: Path) -> str:
    """One hash of the train split's token shards (their names and sha256s)."""
    return sha256_json([s.model_dump(mode="json") for s in load_manifest(data_dir).splits["train"].shards])


def teacher_topk(teacher: torch.nn.Module, x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's top-k log-probabilities (B, T, k) and their ids (B, T, k) for inputs ``x`` (B, T)."""
    with torch.no_grad():
        logp = torch.log_softmax(teacher(x).float(), dim=-1)
    values, ids = logp.topk(k, dim=-1)
    return values, ids


def _fixed_binary(rows: np.ndarray) -> pa.FixedSizeBinaryArray:
    """Each row of ``rows`` as one fixed-size binary value of its bytes."""
    width = rows[0].nbytes
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(rows), [None, pa.py_buffer(rows.tobytes())])


def _from_fixed_binary(column: pa.ChunkedArray, dtype: str | np.dtype, shape: tuple[int, int]) -> np.ndarray:
    """The values of a fixed-size binary column as one (rows, *shape) array of ``dtype``."""
    column = column.combine_chunks()
    data = np.frombuffer(column.buffers()[1], dtype=np.uint8)[column.offset * column.type.byte_width :]
    return data[: len(column) * column.type.byte_width].view(dtype).reshape(len(column), *shape)


def write_teacher_shards(
    teacher: torch.nn.Module,
    windows: Windows | np.ndarray,
    k: int,
    out: Path,
    teacher_sha: str,
    windows_sha: str,
    device: torch.device,
    batch_size: int = 64,
) -> TeacherManifest:
    """Write the teacher's top-k at every position of every window into ``out`` (replaced only when complete).

    Each Parquet row is one window: its index, and its ids and float16 log-probs, each the raw little-endian
    bytes of a (seq_len, k) array (fixed-size binary columns).
    """
    n, seq_len = len(windows), windows.shape[1] - 1
    vocab = teacher.cfg.vocab_size
    if not 0 < k <= vocab:
        raise ConfigError(f"`distill.top_k`: {k} must lie in [1, {vocab}] (the teacher's vocabulary)")
    id_dtype = token_dtype(vocab).newbyteorder("<")
    per_shard = max(1, SHARD_BYTES // (seq_len * k * (id_dtype.itemsize + 2)))
    teacher.eval()
    shards = []
    with staged_dir(out) as tmp:
        for s, start in enumerate(range(0, n, per_shard)):
            stop = min(start + per_shard, n)
            ids_np = np.empty((stop - start, seq_len, k), dtype=id_dtype)
            logp_np = np.empty((stop - start, seq_len, k), dtype="<f2")
            for b in range(start, stop, batch_size):
                idx = np.arange(b, min(b + batch_size, stop))
                x = torch.from_numpy(windows[idx][:, :-1].astype(np.int64)).to(device)
                logp, ids = teacher_topk(teacher, x, k)
                ids_np[idx - start] = ids.cpu().numpy()
                logp_np[idx - start] = logp.cpu().numpy()
            table = pa.table(
                {
                    "window": pa.array(np.arange(start, stop), pa.int64()),
                    "ids": _fixed_binary(ids_np),
                    "logp": _fixed_binary(logp_np),
                }
            )
            name = f"teacher-{s:05d}.parquet"
            pq.write_table(table, tmp / name)
            shards.append(ShardEntry(file=name, sha256=sha256_file(tmp / name), rows=stop - start))
        manifest = TeacherManifest(
            top_k=k,
            seq_len=seq_len,
            n_windows=n,
            id_dtype=id_dtype.name,
            teacher_sha256=teacher_sha,
            windows_sha256=windows_sha,
            shards=shards,
        )
        (tmp / TEACHER_MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


class TeacherShards:
    """The offline teacher rows of one train split, verified against their manifest, indexed by window."""

    def __init__(self, directory: Path, expect: dict[str, Any]) -> None:
        path = directory / TEACHER_MANIFEST
        if not path.is_file():
            raise ValueError(f"{path}: no teacher manifest (the top-k shards were never written here)")
        try:
            self.manifest = TeacherManifest.model_validate_json(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path}: not a teacher manifest: {e}") from e
        for key, value in expect.items():
            if getattr(self.manifest, key) != value:
                raise ValueError(
                    f"{path}: {key} is {getattr(self.manifest, key)!r}, this run needs {value!r}; "
                    "the shards belong to another teacher, data or top_k"
                )
        m = self.manifest
        self.ids = np.empty((m.n_windows, m.seq_len, m.top_k), dtype=m.id_dtype)
        self.logp = np.empty((m.n_windows, m.seq_len, m.top_k), dtype=np.float16)
        filled = np.zeros(m.n_windows, dtype=bool)
        for shard in m.shards:
            file = directory / shard.file
            if not file.is_file():
                raise ValueError(f"{file}: teacher shard is missing")
            if sha256_file(file) != shard.sha256:
                raise ValueError(f"{file}: teacher shard is corrupt (sha256 differs from {TEACHER_MANIFEST})")
            table = pq.read_table(file)
            shape = (m.seq_len, m.top_k)
            try:
                rows = table.column("window").to_numpy()
                self.ids[rows] = _from_fixed_binary(table.column("ids"), np.dtype(m.id_dtype).newbyteorder("<"), shape)
                self.logp[rows] = _from_fixed_binary(table.column("logp"), "<f2", shape)
            except (KeyError, ValueError, IndexError) as e:
                raise ValueError(f"{file}: not a teacher shard of {shape} rows: {e}") from e
            filled[rows] = True
        if not filled.all():
            raise ValueError(f"{path}: the shards hold no row for windows {np.flatnonzero(~filled)[:5].tolist()}…")

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ids (B, T, k) and float16 log-probs (B, T, k) of windows ``idx``, in that order."""
        return self.ids[idx], self.logp[idx]


# --- the trainer --------------------------------------------------------------------------------


def teacher_checkpoint(cfg: DistillConfig) -> Path:
    """The teacher's verified checkpoint (its tokenizer is checked against the student's data once that is ready)."""
    try:
        found = ckpt.resolve(cfg.distill.teacher)
        ckpt.verify(found)
    except ckpt.CheckpointError as e:
        raise ConfigError(f"`distill.teacher`: {e}") from None
    return found


class Distiller(Trainer):
    """The trainer with the distillation loss: the same data, cursor, schedule, checkpoints and resume."""

    cfg: DistillConfig

    def __init__(self, cfg: DistillConfig, resume: bool = False, lock: RunLock | None = None) -> None:
        self.teacher_path = teacher_checkpoint(cfg)
        super().__init__(cfg, resume, lock)

    def _setup_data(self) -> None:
        super()._setup_data()
        d = self.cfg.distill
        try:
            check_same_tokenizer(self.data_dir, self.teacher_path / "tokenizer.json")
        except ValueError as e:
            fix = f"prepare the student's data with data.tokenizer={self.teacher_path / 'tokenizer.json'}"
            raise ConfigError(f"`distill.teacher`: {e}; {fix}") from None
        # Building the teacher draws from the RNG: forked, so the student's init depends on the seed alone.
        with torch.random.fork_rng(devices=[]):
            teacher = ckpt.load_for_inference(self.teacher_path, self.device).model
        if teacher.cfg.vocab_size != self.cfg.model.vocab_size:
            raise ConfigError(
                f"`distill.teacher`: its vocab_size is {teacher.cfg.vocab_size}, "
                f"the student's {self.cfg.model.vocab_size}"
            )
        for p in teacher.parameters():
            p.requires_grad = False
        self.teacher: torch.nn.Module | None = teacher
        self.shards: TeacherShards | None = None
        if d.mode == "offline":
            directory = d.teacher_dir or self.run_dir / "teacher-topk"
            expect = {
                "top_k": d.top_k,
                "seq_len": self.cfg.data.seq_len,
                "n_windows": len(self.train_windows),
                "teacher_sha256": sha256_file(self.teacher_path / "model.safetensors"),
                "windows_sha256": windows_sha256(self.data_dir),
            }
            if self.dist.main and not (directory / TEACHER_MANIFEST).is_file():
                write_teacher_shards(
                    teacher, self.train_windows, d.top_k, directory, expect["teacher_sha256"],
                    expect["windows_sha256"], self.device,
                )  # fmt: skip
            distributed.barrier(self.dist)
            self.shards = TeacherShards(directory, expect)
            self.teacher = None  # offline, the step never runs it

    def _micro_batch(self, idx: np.ndarray) -> tuple[torch.Tensor, Any, int]:
        x, y, n = super()._micro_batch(idx)
        if self.shards is None:
            return x, (y, None, None), n
        ids, logp = self.shards.rows(idx)
        ids_t = torch.from_numpy(ids.astype(np.int64)).to(self.device)
        logp_t = torch.from_numpy(logp).to(self.device)
        return x, (y, ids_t, logp_t), n

    def _loss_sum(self, x: torch.Tensor, y: Any) -> torch.Tensor:
        targets, ids, logp = y
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                logp = torch.log_softmax(self.teacher(x).float(), dim=-1)
        with self._autocast():
            logits = self.train_model(x)
        v = logits.shape[-1]
        flat_ids = None if ids is None else ids.flatten(0, 1)
        return kd_loss_sum(logits.reshape(-1, v), targets.flatten(), logp.flatten(0, 1), flat_ids, self.cfg.distill)

    def metadata(self) -> dict[str, Any]:
        d = self.cfg.distill
        return super().metadata() | {"teacher": str(self.teacher_path), "distill_mode": d.mode, "kl": d.kl}


def main(argv: list[str] | None = None, prog: str = "albor distill") -> int:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="train a student on a teacher's distributions: albor distill distill.teacher=RUN [field=value ...]",
    )
    add_run_arguments(parser)
    return run_command(parser, argv, prog, DistillConfig, Distiller)


if __name__ == "__main__":
    sys.exit(main())
