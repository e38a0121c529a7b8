"""The training loop: one run's data, TrainState, schedule, checkpoints, evaluation, alerts and metrics."""

from __future__ import annotations

import importlib.util
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch._functorch import config as functorch_config
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from albor import checkpoint as ckpt
from albor.config import ModelConfig
from albor.config.errors import ConfigError
from albor.crash import crash_point
from albor.data import default_data_dir, load_windows, prepare_config
from albor.data.cursor import DataCursor
from albor.data.tokenizer import EOS, decode, load_tokenizer
from albor.dcp_checkpoint import PendingSave, begin_save
from albor.eval.perplexity import evaluate_perplexity, token_byte_lengths
from albor.generate import generate
from albor.hardware import card_name, peak_tflops
from albor.io import write_json_atomic, write_text_atomic
from albor.kernels.host_copy import read_scalar
from albor.ladder.lora import add_lora
from albor.model import Decoder
from albor.ops.dispatch import Kernels
from albor.optim import build_optimizer
from albor.optim.grad_accumulation import accumulate, count_targets
from albor.optim.grad_clip import clip_grad_norm
from albor.optim.lr_schedule import lr_at
from albor.train import distributed, fsdp
from albor.train.config import TrainConfig
from albor.train.metrics import MetricsLog, StepMetrics
from albor.train.run import RunLock, record, resume_changes
from albor.train.state import TrainState


class TrainingAlert(RuntimeError):
    """The run stopped on a non-finite or out-of-range loss or gradient norm."""


def check_runnable(cfg: TrainConfig) -> None:
    """Refuse, before any work, what this machine cannot run; the message names the field and the fix."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("`device`: cuda was asked for but no CUDA GPU is visible; use device=auto or device=cpu")
    if cfg.logger == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("`logger`: tensorboard needs the tensorboard package: pip install 'albor[tensorboard]'")


def pick_device(cfg: TrainConfig) -> torch.device:
    check_runnable(cfg)
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def steps_available(n_windows: int, cfg: TrainConfig, world: int) -> int:
    """Optimizer steps the train split supplies over ``cfg.epochs``: each epoch drops its partial global batch,
    and the cursor runs on across epochs, so a step's micro-batches may straddle two of them (ALB-230)."""
    return n_windows // (cfg.micro_batch * world) * cfg.epochs // cfg.grad_accum


def check_schedule_fits(n_windows: int, cfg: TrainConfig, world: int) -> None:
    """ALB-129: refuse a schedule whose max_steps needs more data than the configured epochs supply."""
    available = steps_available(n_windows, cfg, world)
    if cfg.optim.max_steps > available:
        per_step = cfg.micro_batch * cfg.grad_accum * world
        raise ValueError(
            f"optim.max_steps={cfg.optim.max_steps} needs {cfg.optim.max_steps * per_step} windows "
            f"({per_step} per step), but the train split has {n_windows} windows × epochs={cfg.epochs}, "
            f"enough for {available} steps; the cosine schedule would never finish. Lower optim.max_steps "
            f"or raise epochs (ALB-129)."
        )


def with_init_source(cfg: TrainConfig) -> tuple[TrainConfig, Path | None]:
    """For ``init_from``: its verified checkpoint, and the config with the data on that checkpoint's tokenizer.

    The checkpoint's model must be the one configured; the differing fields are named otherwise.
    """
    if cfg.init_from is None:
        return cfg, None
    try:
        found = ckpt.resolve(cfg.init_from)
        ckpt.verify(found)
    except ckpt.CheckpointError as e:
        raise ConfigError(f"`init_from`: {e}") from None
    base = ModelConfig(**yaml.safe_load((found / "config.yaml").read_text())["model"])
    differ = [k for k in type(base).model_fields if k != "name" and getattr(base, k) != getattr(cfg.model, k)]
    if differ:
        pairs = ", ".join(f"model.{k}: {getattr(base, k)!r} there, {getattr(cfg.model, k)!r} here" for k in differ)
        raise ConfigError(f"`init_from`: {found} holds another model ({pairs}); use model={base.name} or its fields")
    if cfg.data.tokenizer is None:
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"tokenizer": found / "tokenizer.json"})})
    return cfg, found


def resharded(cfg: TrainConfig, world: int, run_dir: Path) -> TrainConfig:
    """The config a resume runs with on ``world`` ranks: the checkpoint's global batch (windows a step)
    is kept, by as many accumulated micro-batches as it takes when the world size changed; refused,
    with the numbers, when it cannot be kept."""
    found = ckpt.latest_valid(run_dir / "checkpoints")
    if found is None:
        return cfg
    saved = json.loads((found / "state.json").read_text())
    batch, was = saved["cursor"]["global_batch"], saved["world_size"]
    if cfg.micro_batch * world * cfg.grad_accum == batch:
        return cfg
    per_micro = cfg.micro_batch * world
    if world != was and batch % per_micro == 0:
        return cfg.model_copy(update={"grad_accum": batch // per_micro})
    raise ConfigError(
        f"--resume: {found} trained with a global batch of {batch} windows a step on {was} rank(s); on {world} "
        f"rank(s), micro_batch {cfg.micro_batch} × {world} = {per_micro} windows a micro-batch "
        + (f"does not divide {batch}" if world != was else f"× grad_accum {cfg.grad_accum} is not {batch}")
        + ": resume on a world size (or with a micro_batch) that keeps the global batch"
    )


def resume_changes_of(cfg: TrainConfig) -> dict[str, list[Any]]:
    """What resuming ``cfg``'s run with ``cfg`` changes from its latest valid checkpoint's config.

    Refuses (ConfigError, fields named) any change a resume may not make, before anything is built.
    """
    found = ckpt.latest_valid(cfg.runs_dir / cfg.name / "checkpoints")
    if found is None:
        return {}  # resume() says there is nothing to resume
    saved = yaml.safe_load((found / "config.yaml").read_text())
    return resume_changes(saved, cfg.model_dump(mode="json"), found)


class Trainer:
    """One run under ``runs_dir/name``: it sets up, then starts fresh (or from ``init_from``) or resumes.

    Setup is in parts a reader can hold: the device and process group, the data, the state (model on
    its own ``Kernels``, optimizer, cursor), the checkpoint manager, then DDP and compile. ``resume``
    continues from the run's latest checkpoint that verifies.
    """

    def __init__(self, cfg: TrainConfig, resume: bool = False, lock: RunLock | None = None) -> None:
        self.run_dir = cfg.runs_dir / cfg.name
        # One writer per run: the caller's lock (taken before its preflight wrote), or one taken here.
        self.lock = lock or RunLock(self.run_dir)
        if lock is None and distributed.Dist.from_env().main:
            self.lock.acquire()
        try:
            self._setup(cfg, resume)
        except BaseException:
            self.lock.release()
            raise

    def _setup(self, cfg: TrainConfig, resume: bool) -> None:
        # Seconds of each part of the setup, for run.json: what a run pays before its first step.
        self.setup_s: dict[str, float] = {}
        t = time.perf_counter()

        def lap(part: str) -> None:
            nonlocal t
            now = time.perf_counter()
            self.setup_s[part] = round(now - t, 3)
            t = now

        # Checked before anything is built: a resume may change only what RESUMABLE lists.
        self.resume_changes = resume_changes_of(cfg) if resume else {}
        # On resume the run's own checkpoint holds the weights, and its config already names the tokenizer.
        cfg, init_ckpt = (cfg, None) if resume else with_init_source(cfg)
        self.device = pick_device(cfg)
        self.sharded = cfg.parallel == "fsdp"
        self.dist = distributed.init(self.device.type, sharded=self.sharded)
        asked = cfg
        self.cfg = cfg = resharded(cfg, self.dist.world, self.run_dir) if resume else cfg
        if cfg.grad_accum != asked.grad_accum:
            self.resume_changes["grad_accum"] = [asked.grad_accum, cfg.grad_accum]
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        torch.manual_seed(cfg.seed)
        self.bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        lap("device")
        # The kernels' launch checks are the device's first work (its context, Triton's compiles); they run
        # while the host prepares the data, and "kernels" is what is left of them once the data is ready.
        with ThreadPoolExecutor(1, thread_name_prefix="kernel-check") as pool:
            kernels = pool.submit(Kernels, cfg.kernels, cfg.allow_kernel_fallback, self.device)
            self._setup_data()
            lap("data")
            self.kernels = kernels.result()
        lap("kernels")
        model = self._build_model(init_ckpt)
        model.to(self.device)
        if self.sharded:
            fsdp.shard(model, model.blocks, self.device, self.bf16)
        lap("model")
        n_windows = len(self.train_windows)
        self.state = TrainState(
            model=model,
            optimizer=build_optimizer(model, cfg.optim, fused=self.device.type == "cuda"),
            cursor=DataCursor(n_windows, cfg.micro_batch, cfg.seed, self.dist.rank, self.dist.world, cfg.grad_accum),
        )
        self._pending: PendingSave | None = None
        # Background checkpoint writes carry their collectives on a group of their own (made by every rank).
        self._async_group = dist.new_group(backend="gloo") if cfg.async_checkpoint else None
        self.checkpoints = ckpt.CheckpointManager(
            self.run_dir / "checkpoints", cfg.keep_last, cfg.to_yaml(), self.tokenizer_path
        )
        self.log = MetricsLog(self.run_dir, tensorboard=cfg.logger == "tensorboard")
        self.last_val: float | None = None
        self.resumed_from: int | None = None
        self._bar: tqdm | None = None
        self._start = time.perf_counter()
        lap("state")
        if resume:
            self.resume()
        elif self.checkpoints.any():
            raise FileExistsError(f"{self.run_dir} has checkpoints: pass --resume to continue it, or another name")
        else:
            self._start_fresh(init_ckpt)
        lap("checkpoint")
        self.train_model = self._wrap(model)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.tokens_per_step = cfg.micro_batch * cfg.grad_accum * self.dist.world * cfg.data.seq_len
        m = cfg.model
        # Two MFU bases: Albor's counts neither the embedding nor the LM head in N; the peers' counts the head.
        self.flops_per_token = 6 * m.n_params_non_embedding() + 12 * m.n_layers * m.d_model * cfg.data.seq_len
        self.head_flops_per_token = 6 * m.vocab_size * m.d_model
        self.card = card_name()
        peak = peak_tflops(self.card) if self.device.type == "cuda" else None
        self.peak_flops = peak * 1e12 if peak is not None else None

    @property
    def model(self) -> Decoder:
        return self.state.model

    def _build_model(self, init_ckpt: Path | None) -> Decoder:
        """The model the run trains, with ``init_from``'s full weights (before any sharding) and, when
        ``lora`` is set, the adapters on it; a resume loads its checkpoint into this same structure."""
        model = Decoder(self.cfg.model, self.kernels, frozenset(self.cfg.recompute))
        if init_ckpt is not None:
            ckpt.load_checkpoint(init_ckpt, model, None)
        if self.cfg.lora is not None:
            add_lora(model, self.cfg.lora)
        return model

    def _setup_data(self) -> None:
        d = self.cfg.data
        if self.dist.main:
            prepare_config(d)
        distributed.barrier(self.dist)
        self.data_dir = Path(d.out) if d.out is not None else default_data_dir(d)
        self.tokenizer_path = self.data_dir / "tokenizer.json"
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.token_bytes = token_byte_lengths(self.tokenizer, self.cfg.model.vocab_size)
        self.train_windows = load_windows(self.data_dir, "train")
        self.val_windows = load_windows(self.data_dir, "val")
        check_schedule_fits(len(self.train_windows), self.cfg, self.dist.world)

    def _wrap(self, model: Decoder) -> torch.nn.Module:
        """The module the step runs: DDP around the model on several ranks, compiled when asked."""
        wrapped: torch.nn.Module = DistributedDataParallel(model) if self.dist.active and not self.sharded else model
        if not self.cfg.compile:
            return wrapped
        # A step compiled earlier in this process for a model of the same structure would be reused,
        # with that run's memory budget: every run compiles its own (ALB-205).
        torch._dynamo.reset()
        # AOTAutograd reads it when the step is first compiled, to choose what to recompute.
        functorch_config.activation_memory_budget = self.cfg.activation_memory_budget
        if self.cfg.compile_scope == "step":
            return torch.compile(wrapped)
        # Dynamo guards on a block's structure, not its identity: the first block's graph serves them all.
        for block in model.blocks:
            block.compile()
        return wrapped

    # --- checkpoints -------------------------------------------------------------------------

    def save(self) -> Path | None:
        """Checkpoint the current step. Unsharded, rank 0 writes; sharded, every rank writes its shards and
        rank 0 completes the checkpoint once all are on disk (in the background with ``async_checkpoint``:
        then it completes at the next save, and this returns None). Every rank contributes its RNG."""
        self.finish_pending_save()
        progress = self.state.progress()
        state = {
            "step": progress["step"],
            "tokens_seen": progress["tokens_seen"],
            "best_val_loss": progress["best_val_loss"],
            "world_size": self.dist.world,
            "cursor": progress["cursor"],
            "rng": distributed.gather(self.dist, progress["rng"]),
            "data_dir": str(self.data_dir.resolve()),
        }
        if not self.sharded:
            path = None
            if self.dist.main:
                path = self.checkpoints.save(self.state.step, self.state.model, self.state.optimizer, state)
            distributed.barrier(self.dist)
            return path
        step, root = self.state.step, self.checkpoints.root
        tmp = ckpt.new_checkpoint_dir(root, step) if self.dist.main else root / f".tmp-{ckpt.step_dir_name(step)}"

        def complete(tmp: Path) -> None:
            ckpt.complete(tmp, step, state, self.checkpoints.config_yaml, self.tokenizer_path)
            ckpt.prune(root, self.cfg.keep_last)

        barrier = partial(distributed.barrier, self.dist)
        self._pending = begin_save(
            tmp, step, self.model, self.state.optimizer, complete, self.dist.main, barrier, self._async_group
        )
        return None if self.cfg.async_checkpoint else self.finish_pending_save()

    def finish_pending_save(self) -> Path | None:
        """Complete a sharded checkpoint still being written (on every rank); its path, or None if none was."""
        pending, self._pending = self._pending, None
        return pending.finish() if pending is not None else None

    def _start_fresh(self, init_ckpt: Path | None) -> None:
        """Step 0 (from ``init_from``'s weights, loaded at construction, when given); a log left by a run
        killed before its first checkpoint is cleared, so no step appears twice."""
        if self.dist.main:
            self.log.truncate_after(0)
            record(self.run_dir, "start", init_from=str(init_ckpt) if init_ckpt else None)

    def resume(self) -> None:
        """Load the run's latest checkpoint that verifies into the state, and cut the log back to it.

        Newer checkpoints that fail verification are moved aside first, so the resumed run saves
        those steps anew; the resume and the config changes it brings go into the run's history.
        """
        found = self.checkpoints.recover() if self.dist.main else self.checkpoints.latest()
        distributed.barrier(self.dist)
        if found is None:
            raise FileNotFoundError(f"--resume: no checkpoint that verifies under {self.checkpoints.root}")
        saved = self.checkpoints.load(found, self.state.model, self.state.optimizer)
        # On another world size each rank takes a saved rank's RNG; the cursor re-slices the same steps.
        rng_state = saved["rng"][self.dist.rank % len(saved["rng"])]
        self.state.load_progress({**saved, "cursor": saved["cursor"], "rng": rng_state})
        self.resumed_from = saved["step"]
        if self.dist.main:
            self.log.truncate_after(saved["step"])
            changes = dict(self.resume_changes)
            if saved["world_size"] != self.dist.world:
                changes["world_size"] = [saved["world_size"], self.dist.world]
            record(self.run_dir, "resume", step=saved["step"], checkpoint=found.name, changes=changes)

    # --- the loop ----------------------------------------------------------------------------

    def _batch(self) -> tuple[torch.Tensor, Any, int]:
        """The next micro-batch on the device: inputs, what ``_loss_sum`` takes as targets, and the target count."""
        return self._micro_batch(self.state.cursor.next_batch())

    def _micro_batch(self, idx: np.ndarray) -> tuple[torch.Tensor, Any, int]:
        """The windows ``idx`` on the device, and their target count (counted on the host: no GPU sync)."""
        w = torch.from_numpy(self.train_windows[idx].astype(np.int64))
        n = count_targets(w[:, 1:])
        if self.device.type == "cuda":
            w = w.pin_memory()
        w = w.to(self.device, non_blocking=True)
        return w[:, :-1], w[:, 1:], n

    def _autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def _loss_sum(self, x: torch.Tensor, y: Any) -> torch.Tensor:
        """The micro-batch's summed loss; ``accumulate`` divides it by the step's target count."""
        with self._autocast():
            return self.train_model(x, y, reduction="sum")

    def train_step(self) -> StepMetrics:
        """One optimizer step over ``grad_accum`` micro-batches on every rank."""
        t0 = time.perf_counter()
        state, optimizer = self.state, self.state.optimizer
        lr = lr_at(state.step, self.cfg.optim)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batches = [self._batch() for _ in range(self.cfg.grad_accum)]
        micro = [(x, y) for x, y, _ in batches]
        n_targets = int(distributed.all_sum(self.dist, sum(n for _, _, n in batches)))
        no_sync = (
            self.train_model.no_sync
            if isinstance(self.train_model, DistributedDataParallel)
            else partial(fsdp.no_gradient_sync, self.model)
            if self.sharded
            else None
        )
        loss = accumulate(micro, self._loss_sum, n_targets, float(self.dist.world), no_sync)
        grad_norm = clip_grad_norm(self.params, self.cfg.optim.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.tokens_seen += self.tokens_per_step
        loss_v = distributed.all_sum(self.dist, read_scalar(loss))
        gn = read_scalar(grad_norm)
        tok_s = self.tokens_per_step / (time.perf_counter() - t0)
        return StepMetrics(state.step, loss_v, lr, gn, state.tokens_seen, tok_s, *self.mfu(tok_s))

    def mfu(self, tok_s: float) -> tuple[float | None, float | None]:
        """MFU at ``tok_s`` on Albor's basis and with the LM head in N (the peers'); None off the peak table."""
        if self.peak_flops is None:
            return None, None
        return (
            tok_s * self.flops_per_token / self.peak_flops,
            tok_s * (self.flops_per_token + self.head_flops_per_token) / self.peak_flops,
        )

    def _check_alerts(self, m: StepMetrics) -> None:
        cfg = self.cfg
        reason = None
        if not (math.isfinite(m.loss) and math.isfinite(m.grad_norm)):
            reason = f"non-finite loss {m.loss} or grad norm {m.grad_norm}"
        elif m.step > cfg.alert_after and m.loss > cfg.alert_loss:
            reason = f"loss {m.loss:.4g} above alert_loss {cfg.alert_loss}"
        elif m.step > cfg.alert_after and m.grad_norm > cfg.alert_grad_norm:
            reason = f"grad norm {m.grad_norm:.4g} above alert_grad_norm {cfg.alert_grad_norm}"
        if reason:
            path = self.save() or self.finish_pending_save()
            raise TrainingAlert(f"step {m.step}: {reason}; stopped with a final checkpoint at {path}")

    def evaluate(self) -> float:
        """val_ppl and bits per byte over the first ``eval_windows`` val windows (the same code as ``albor eval
        perplexity``), then a sampled completion when ``eval_sample_tokens`` asks for one. The record's ``time``
        is on the train records' clock (seconds since the loop started), ``unix_time`` the wall clock's."""
        # A block-scope run's blocks are compiled for the training step; evaluation and sampling (other
        # shapes, a KV cache) run them eagerly rather than compile graphs that a few calls would use.
        with torch.compiler.set_stance("force_eager"):
            return self._evaluate()

    def _evaluate(self) -> float:
        res = evaluate_perplexity(
            self.model,
            self.val_windows,
            self.cfg.micro_batch,
            self.device,
            self.cfg.eval_windows,
            self.bf16,
            self.token_bytes,
        )
        # Every rank samples: a sharded model's forward is a collective, so rank 0 alone would wait forever.
        text = self.sample() if self.cfg.eval_sample_tokens else None
        if self.dist.main:
            record = {"kind": "eval", "step": self.state.step, "val_loss": res.loss, "val_ppl": res.ppl}
            clock = {"time": round(time.perf_counter() - self._start, 3), "unix_time": round(time.time(), 3)}
            self.log.write(record | {"val_bpb": res.bits_per_byte, "tokens": res.tokens, "bytes": res.bytes} | clock)
            if text is not None:
                self.log.write({"kind": "sample", "step": self.state.step, "text": text})
        return res.loss

    def sample(self) -> str:
        """A completion of ``eval_sample_tokens`` tokens from a document start, at temperature 1.

        Its seed is drawn from the run's torch RNG, so a resumed run samples what the uninterrupted one
        would only if the checkpoint gave that RNG back.
        """
        seed = int(torch.randint(0, 2**62, (1,)))
        ids = generate(self.model, [EOS], self.cfg.eval_sample_tokens, temperature=1.0, seed=seed, eos_id=None)
        return decode(self.tokenizer, list(ids))

    def _begin(self) -> None:
        if self._bar is not None:
            return
        if self.dist.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.resumed_from is None:  # the config the run starts with; a resume's changes go to history
                write_text_atomic(self.run_dir / "config.yaml", self.cfg.to_yaml())
            write_json_atomic(self.run_dir / "run.json", self.metadata())
            self.log.open()
        self._bar = tqdm(
            total=self.cfg.optim.max_steps,
            initial=self.state.step,
            disable=not self.dist.main,
            unit="step",
            dynamic_ncols=True,
        )
        self._start = time.perf_counter()
        self.model.train()

    def metadata(self) -> dict[str, Any]:
        """Where and how this run trains: device, versions, kernels used and any kernel fallback."""
        return {
            "device": str(self.device),
            "card": self.card,
            "mfu_peak_tflops": self.peak_flops / 1e12 if self.peak_flops else None,
            "mfu_note": self._mfu_note(),
            "torch": torch.__version__,
            "world_size": self.dist.world,
            "kernels": self.kernels.backends,
            "kernel_fallbacks": self.kernels.fallbacks,
            "resumed_from": self.resumed_from,
            "setup_s": self.setup_s,
        }

    def _mfu_note(self) -> str:
        if self.device.type != "cuda":
            return "no MFU on the CPU"
        if self.peak_flops is None:
            return f"no MFU: {self.card!r} is not in albor.hardware's table of peak rates"
        return (
            "mfu counts 6·N (N without embedding and LM head) + 12·L·d·T FLOPs per token; "
            "mfu_with_head adds the LM head to N, the basis of the peers in bench/"
        )

    def fit_steps(self, n: int) -> None:
        """Run ``n`` more optimizer steps, with logging, evaluation, checkpoints and alerts."""
        self._begin()
        cfg, state = self.cfg, self.state
        for _ in range(n):
            m = self.train_step()
            crash_point("step", m.step)
            if self.dist.main:
                rec = {"kind": "train", **m.__dict__, "time": round(time.perf_counter() - self._start, 3)}
                self.log.write({k: v for k, v in rec.items() if v is not None})
                self._bar.update(1)
                self._bar.set_postfix(
                    loss=f"{m.loss:.3f}", lr=f"{m.lr:.2e}", gn=f"{m.grad_norm:.2f}", tok_s=f"{m.tok_s:,.0f}"
                )
            self._check_alerts(m)
            last = state.step == cfg.optim.max_steps
            saved = False
            if state.step % cfg.eval_every == 0 or last:
                self.last_val = self.evaluate()
                if state.best_val_loss is None or self.last_val < state.best_val_loss:
                    state.best_val_loss = self.last_val
                    self.save()
                    saved = True
                    if self.dist.main:
                        self.checkpoints.mark_best(state.step)
            if not saved and (state.step % cfg.checkpoint_every == 0 or last):
                self.save()

    def fit(self) -> dict[str, Any]:
        """Train until ``optim.max_steps``; returns a summary of the run."""
        self.fit_steps(self.cfg.optim.max_steps - self.state.step)
        self.finish_pending_save()
        if self._bar is not None:
            self._bar.close()
        summary = {
            "run": str(self.run_dir),
            "steps": self.state.step,
            "tokens_seen": self.state.tokens_seen,
            "val_loss": self.last_val,
            "val_ppl": math.exp(self.last_val) if self.last_val is not None else None,
            "best_val_loss": self.state.best_val_loss,
            "wall_s": round(time.perf_counter() - self._start, 1),
            **self.metadata(),
        }
        if self.dist.main:
            write_json_atomic(self.run_dir / "summary.json", summary)
        return summary

    def close(self) -> None:
        """Flush the logs and release the run: another trainer may write it now."""
        self.log.close()
        self.lock.release()
        distributed.shutdown(self.dist)

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
