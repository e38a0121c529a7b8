"""The speedrun and the whole chain in one call: Albor's job against the plain-PyTorch peer on the same files.

    python bench/speedrun.py OUT [--steps 225]     # one H200: about 9 minutes (bench/RESULTS.md)
    python bench/speedrun.py OUT --smoke           # the same steps at tiny scale on the CPU
    python bench/speedrun.py OUT --no-chain        # the two jobs and their curves only
    python bench/speedrun.py OUT --no-peer         # Albor's job and the chain on its model only
    python bench/speedrun.py OUT --no-kill         # Albor's run without the SIGKILL and resume
    python bench/speedrun.py OUT --set optim.name=muon data.tokenizer_sample_bytes=100000000  # a lever

1. Albor's whole job, timed from its start, as one command: ``albor train --config pretrain-125m``
   (262,144 tokens a step, lr 1e-3, warmup 50, cosine to 1e-4, compiled, bf16) for ``--steps`` steps,
   every val window scored every 75 steps, which first prepares its data on this interpreter's standard
   library and installed distributions (vocab 32768, seq_len 1024, no byte cap, no FIM) while its kernels
   are checked on the GPU. The run is killed with
   SIGKILL right after the step that follows the checkpoint nearest its middle (``ALBOR_CRASH_AT``) and
   resumed with ``--resume``: the curve carries the restart, and the figures say what it cost.
2. Albor's split as file lists (each corpus row's path under its source root) and the peer
   (``../shared/bench/peer_speedrun.py``) with ``--train-list/--val-list`` on them, for the same steps.
3. Both curves, val bits per byte against wall time since each job's start, and the ratio of the
   wall time Albor takes to reach the peer's final bits per byte to the peer's whole job.
4. The chain on the trained model: val_ppl and bits per byte over every val window, HumanEval pass@1
   greedy, single-line infilling pass@1, the Q4_K_M GGUF export and its CPU decode speed.

Preflight is off in the training runs: the battery's sandbox tests run hostile programs, which stay off
shared GPU hosts (``bench/gpu_runs.sh battery`` runs the rest of the battery on CUDA). Data, runs and
compile caches go to a fresh folder under the system's temp dir, page cache warmed for both jobs
alike, each job with compile caches of its own; ``OUT`` gets ``speedrun.json``, ``curves.png``, the
runs' records, the chain's results and every command's log tail.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import itertools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from cpu_decode import cpu_name, time_stream

from albor.data.corpus import CORPUS_JSON, corpus_dir
from albor.data.packing import load_manifest
from albor.data.sources import distribution_files, stdlib_files

ROOT = Path(__file__).resolve().parents[1]
PEER = ROOT.parent / "shared" / "bench" / "peer_speedrun.py"
EVAL_EVERY = 75
LOG_TAIL = 200  # lines of each command's log copied to OUT


@dataclass(frozen=True)
class Scale:
    """What differs between the H200 run and the CPU smoke run; everything else is the same code path."""

    data: dict[str, Any]
    train: list[str]
    peer: list[str]
    eval_every: int
    humaneval: list[str] = field(default_factory=list)
    infill: list[str] = field(default_factory=list)
    decode_tokens: int = 64


H200 = Scale(
    data={"vocab_size": 32768, "seq_len": 1024, "max_source_bytes": None, "fim_rate": 0},
    train=["micro_batch=64", "grad_accum=4", "optim.lr=1e-3", "optim.min_lr=1e-4", "optim.warmup_steps=50"],
    peer=["--preset", "125m", "--micro-bs", "64", "--accum", "4", "--lr", "1e-3", "--warmup", "50"],
    eval_every=EVAL_EVERY,
)
SMOKE = Scale(
    data={"vocab_size": 512, "seq_len": 64, "max_source_bytes": 3_000_000, "fim_rate": 0},
    train=[
        "model=tiny",
        "micro_batch=4",
        "grad_accum=1",
        "optim.warmup_steps=2",
        "device=cpu",
        "compile=false",
        "precision=fp32",
        "kernels={}",
        "eval_sample_tokens=8",
    ],
    peer=["--preset", "tiny", "--micro-bs", "4", "--accum", "1", "--warmup", "2", "--no-compile"],
    eval_every=3,
    humaneval=["--limit", "2", "--max-new-tokens", "8"],
    infill=["--limit", "1", "--max-new-tokens", "8"],
    decode_tokens=16,
)


def yaml_value(value: Any) -> str:
    return "null" if value is None else str(value)


class Job:
    """The folders of one call, and every command run in it, timed, with its log."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.work = Path(tempfile.mkdtemp(prefix="albor-speedrun-"))
        (out / "logs").mkdir(parents=True, exist_ok=True)
        (self.work / "logs").mkdir()
        self.commands: dict[str, dict[str, Any]] = {}
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), *_pythonpath()])}

    def env_with(self, cache: str, **extra: str) -> dict[str, str]:
        """The environment with compile caches of their own (one folder per job) and ``extra``."""
        caches = {
            "TORCHINDUCTOR_CACHE_DIR": str(self.work / cache / "inductor"),
            "TRITON_CACHE_DIR": str(self.work / cache / "triton"),
        }
        return {**self.env, **caches, **extra}

    def start(self, name: str, cmd: Sequence[str], env: dict[str, str]) -> tuple[subprocess.Popen, float]:
        log = (self.work / "logs" / f"{name}.log").open("w")
        print(f"[{name}] {' '.join(cmd)}", flush=True)
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), time.time()

    def finish(self, name: str, proc: subprocess.Popen, started: float) -> int:
        rc = proc.wait()
        seconds = round(time.time() - started, 1)
        self.commands[name] = {"rc": rc, "seconds": seconds, "cmd": proc.args}
        lines = (self.work / "logs" / f"{name}.log").read_text(errors="replace").splitlines()
        (self.out / "logs" / f"{name}.log").write_text("\n".join(lines[-LOG_TAIL:]) + "\n")
        print(f"[{name}] exit {rc} after {seconds} s", flush=True)
        return rc

    def run(self, name: str, cmd: Sequence[str], env: dict[str, str] | None = None) -> int:
        return self.finish(name, *self.start(name, cmd, env or self.env))

    def json_of(self, name: str) -> dict[str, Any] | None:
        """The last JSON object a command printed on a line of its own."""
        for line in reversed((self.work / "logs" / f"{name}.log").read_text(errors="replace").splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
        return None


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def albor(*args: str) -> list[str]:
    return [sys.executable, "-m", "albor", *args]


def source_files() -> dict[tuple[str, str], Path]:
    """Where each row of the default corpus comes from: (repo_name, path) -> the file, as the harvest found it."""
    files = stdlib_files() + [f for dist in distribution_files() for f in dist]
    return {(f.repo_name, f.path): f.location for f in files if f.location is not None}


def warm_page_cache(files: Sequence[Path]) -> int:
    """Read every source file once, so that neither job pays the first read from disk; returns the bytes."""
    total = 0
    for path in files:
        try:
            total += len(path.read_bytes())
        except OSError:
            continue
    return total


def split_lists(data_dir: Path, where: dict[tuple[str, str], Path], work: Path, out_dir: Path) -> dict[str, Any]:
    """Albor's train and val splits as files of real paths, one a line (in ``work``, gzipped in ``out_dir``),
    and the roots that hold them; a row the harvest cannot place (none is expected) is counted and left out."""
    meta = json.loads((corpus_dir(data_dir) / CORPUS_JSON).read_text())
    roots: set[Path] = set()
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        paths, unmapped = [], 0
        for shard in meta["shards"][split]:
            table = pq.read_table(corpus_dir(data_dir) / shard["file"], columns=["repo_name", "path"])
            for repo, rel in zip(table.column("repo_name").to_pylist(), table.column("path").to_pylist(), strict=True):
                location = where.get((repo, rel))
                if location is None:
                    unmapped += 1
                    continue
                paths.append(os.path.realpath(location))
                roots.add(Path(location).parents[len(Path(rel).parts) - 1])
        listing = work / f"{split}-files.txt"
        listing.write_text("".join(f"{p}\n" for p in paths))
        (out_dir / "lists").mkdir(exist_ok=True)
        (out_dir / "lists" / f"{split}-files.txt.gz").write_bytes(gzip.compress(listing.read_bytes(), mtime=0))
        out[split] = {"files": len(paths), "unmapped_rows": unmapped, "list": str(listing)}
    out["roots"] = sorted(str(r) for r in roots)
    return out


def albor_job(job: Job, scale: Scale, steps: int, overrides: Sequence[str], kill: bool) -> dict[str, Any]:
    """Albor's job as a user runs it, one ``albor train`` that prepares its data first, killed once mid-run and
    resumed when ``kill``; the curve on the wall clock from the job's start.

    ``overrides`` are ``KEY=VALUE`` settings of the train config on top of the scale's.
    """
    data_dir, runs = job.work / "data", job.work / "runs"
    checkpoint_step = max(scale.eval_every, steps // 2 // scale.eval_every * scale.eval_every)
    crash = checkpoint_step + 1
    train = [
        "--config",
        "pretrain-125m",
        "--name",
        "speedrun",
        "--preflight",
        "off",
        f"runs_dir={runs}",
        f"data.out={data_dir}",
        *(f"data.{k}={yaml_value(v)}" for k, v in scale.data.items()),
        *scale.train,
        *overrides,
        f"optim.max_steps={steps}",
        f"eval_every={scale.eval_every}",
        f"checkpoint_every={scale.eval_every}",
        "eval_windows=null",
    ]
    env = job.env_with("cache-albor")
    t0 = time.time()
    if not kill:
        if job.run("albor-train", albor("train", *train), env) != 0:
            raise SystemExit("albor train failed; see logs/albor-train.log")
        return albor_records(job, runs / "speedrun", t0, prepare_seconds(runs / "speedrun"))[0] | {"kill": None}
    rc = job.run("albor-train", albor("train", *train), {**env, "ALBOR_CRASH_AT": f"step:{crash}"})
    killed = time.time() - t0
    if rc != -signal.SIGKILL:
        raise SystemExit(f"albor train was to be killed at step {crash} but exited {rc}; see logs/albor-train.log")
    prepared = prepare_seconds(runs / "speedrun")  # before the resume rewrites run.json
    resumed = time.time() - t0
    if job.run("albor-resume", albor("train", *train, "--resume"), env) != 0:
        raise SystemExit("albor train --resume failed; see logs/albor-resume.log")
    result, resume_loop, train_time = albor_records(job, runs / "speedrun", t0, prepared)
    # The step the kill lost ended just before it; what the restart cost is the time until it ended again.
    restart = resume_loop + train_time[crash] - (t0 + killed)
    return result | {
        "kill": {
            "crash_at": f"step:{crash}",
            "checkpoint_step": checkpoint_step,
            "killed_s": round(killed, 1),
            "resume_started_s": round(resumed, 1),
            "restart_cost_s": round(restart, 1),
        },
    }


def prepare_seconds(run_dir: Path) -> float:
    """How long the run's data preparation took, from the setup parts its process wrote to run.json."""
    return json.loads((run_dir / "run.json").read_text())["setup_s"]["data"]


def albor_records(
    job: Job, run_dir: Path, t0: float, prepared: float
) -> tuple[dict[str, Any], float, dict[int, float]]:
    """The finished run's figures on the job's clock (from ``t0``), with its records copied to OUT; and the last
    process's loop start and each step's time on its loop clock."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["kind"] == "eval"]
    curve = [
        {"step": r["step"], "wall_s": round(r["unix_time"] - t0, 2), "val_bpb": r["val_bpb"], "val_loss": r["val_loss"]}
        for r in evals
    ]
    # Each process's loop clock starts at its first step: an eval's unix_time minus its time.
    loops = [r["unix_time"] - r["time"] for r in evals]
    train_time = {r["step"]: r["time"] for r in records if r["kind"] == "train"}
    for name in ("config.yaml", "metrics.jsonl", "history.jsonl", "run.json", "summary.json", "preflight.json"):
        if (run_dir / name).is_file():
            (job.out / "albor").mkdir(exist_ok=True)
            (job.out / "albor" / name).write_bytes((run_dir / name).read_bytes())
    figures = {
        # The data preparation inside the first process, and the rest of its way to the loop: interpreter
        # start, imports and the trainer's other setup.
        "prepare_s": round(prepared, 1),
        "to_loop_s": round(loops[0] - t0 - prepared, 1),
        "first_step_s": round(loops[0] + train_time[1] - t0, 1),
        "job_s": round(time.time() - t0, 1),
        # The last process's setup, part by part (run.json is rewritten by each process).
        "setup_s": json.loads((run_dir / "run.json").read_text()).get("setup_s"),
        "curve": curve,
        "data": {s: v.model_dump(exclude={"shards"}) for s, v in load_manifest(job.work / "data").splits.items()},
        "data_dir": str(job.work / "data"),
        "run_dir": str(run_dir),
    }
    return figures, loops[-1], train_time


def peer_job(job: Job, scale: Scale, steps: int, lists: dict[str, Any], val_tokens: int) -> dict[str, Any]:
    """The peer on Albor's split; each JSON line it prints is stamped with the wall time since its start."""
    if not PEER.is_file():
        raise FileNotFoundError(
            f"{PEER}: the peer is missing; it is expected beside the repository, in ../shared/bench/"
        )
    cmd = [
        sys.executable,
        str(PEER),
        *scale.peer,
        "--steps",
        str(steps),
        "--eval-every",
        str(scale.eval_every),
        "--seq",
        str(scale.data["seq_len"]),
        "--vocab",
        str(scale.data["vocab_size"]),
        "--eval-tokens",
        str(2 * val_tokens),
        "--train-list",
        lists["train"]["list"],
        "--val-list",
        lists["val"]["list"],
        "--roots",
        *lists["roots"],
    ]
    print(f"[peer] {' '.join(cmd)}", flush=True)
    t0 = time.time()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=job.env_with("cache-peer"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    events, lines = [], []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("{"):
            try:
                events.append({**json.loads(line), "wall_s": round(time.time() - t0, 2)})
            except json.JSONDecodeError:
                continue
    rc = proc.wait()
    job_s = time.time() - t0
    job.commands["peer"] = {"rc": rc, "seconds": round(job_s, 1), "cmd": cmd}
    (job.out / "logs" / "peer.log").write_text("\n".join(lines[-LOG_TAIL:]) + "\n")
    (job.out / "peer.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    by_event = {e["event"]: e for e in events}
    curve = [
        {"step": e["step"], "wall_s": e["wall_s"], "val_bpb": e["val_bpb"], "val_loss": e["val_loss"]}
        for e in events
        if e["event"] == "eval"
    ]
    return {
        "rc": rc,
        "data_ready_s": by_event.get("data_ready", {}).get("wall_s"),
        "job_s": round(job_s, 1),
        "curve": curve,
        "split": {k: v for k, v in by_event.get("split", {}).items() if k != "event"},
    }


def crossing(curve: list[dict[str, Any]], target: float) -> tuple[float | None, float | None]:
    """The wall time of the first eval at or below ``target``, and the time where the line between that eval
    and the one before it crosses ``target``."""
    for i, point in enumerate(curve):
        if point["val_bpb"] <= target:
            if i == 0:
                return point["wall_s"], point["wall_s"]
            a = curve[i - 1]
            frac = (a["val_bpb"] - target) / (a["val_bpb"] - point["val_bpb"])
            return point["wall_s"], a["wall_s"] + frac * (point["wall_s"] - a["wall_s"])
    return None, None


def at_time(curve: list[dict[str, Any]], wall_s: float) -> float | None:
    """Bits per byte on ``curve`` at ``wall_s``, linear between evals; None outside them."""
    for a, b in itertools.pairwise(curve):
        if a["wall_s"] <= wall_s <= b["wall_s"]:
            return a["val_bpb"] + (wall_s - a["wall_s"]) / (b["wall_s"] - a["wall_s"]) * (b["val_bpb"] - a["val_bpb"])
    return None


def compare(a: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
    """The goal's figures: Albor's wall time to the peer's final bits per byte over the peer's whole job, and
    each side's bits per byte at the other's evaluations (None where the other had not evaluated yet)."""
    if not p["curve"]:
        return {"note": "the peer logged no evaluation"}
    target = p["curve"][-1]["val_bpb"]
    first, crossed = crossing(a["curve"], target)
    # The restart's cost counts only where the target was reached after the kill.
    kill = a["kill"]
    restart = kill["restart_cost_s"] if kill and crossed is not None and crossed > kill["killed_s"] else 0.0
    return {
        "target_bpb": target,
        "albor_final_bpb": a["curve"][-1]["val_bpb"],
        "albor_first_eval_at_target_s": first,
        "albor_reaches_target_s": None if crossed is None else round(crossed, 1),
        "ratio": None if crossed is None else round(crossed / p["job_s"], 3),
        "ratio_without_restart": None if crossed is None else round((crossed - restart) / p["job_s"], 3),
        "at_peer_evals": [
            {"wall_s": q["wall_s"], "peer_bpb": q["val_bpb"], "albor_bpb": at_time(a["curve"], q["wall_s"])}
            for q in p["curve"]
        ],
        "at_albor_evals": [
            {"wall_s": q["wall_s"], "albor_bpb": q["val_bpb"], "peer_bpb": at_time(p["curve"], q["wall_s"])}
            for q in a["curve"]
        ],
    }


def plot(a: dict[str, Any], p: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, side in (("Albor", a), ("peer", p)):
        ax.plot([c["wall_s"] for c in side["curve"]], [c["val_bpb"] for c in side["curve"]], "o-", label=name)
    if p["curve"]:
        ax.axhline(p["curve"][-1]["val_bpb"], color="grey", ls="--", lw=0.8, label="peer's final")
        ax.axvline(p["job_s"], color="grey", ls=":", lw=0.8, label="peer's job ends")
    if a["kill"]:
        ax.axvline(a["kill"]["killed_s"], color="red", ls=":", lw=0.8, label="Albor killed")
    ax.set(xlabel="wall time since the job's start (s)", ylabel="val bits per byte")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def decode_speed(gguf: Path, tokens: int) -> list[dict[str, Any]]:
    """CPU decode of the GGUF through llama.cpp, as ``bench/cpu_decode.py`` times it (best of 3), on 2 threads
    and on every core: prompt tok/s and ms per token for ``tokens`` new tokens after a ``tokens``-long prompt."""
    from albor.backend import LlamaCppBackend
    from albor.data.tokenizer import encode
    from albor.eval.humaneval import load_problems
    from albor.generate import generate

    rows = []
    for threads in sorted({2, os.cpu_count() or 2}):
        backend = LlamaCppBackend(gguf, threads=threads)
        prompt = encode(backend.tokenizer, "".join(p.prompt for p in load_problems(4)))[:tokens]
        runs = [time_stream(generate(backend, prompt, tokens, eos_id=None), len(prompt)) for _ in range(3)]
        rows.append(
            {
                "threads": threads,
                "prompt_tok_s": round(max(r[0] for r in runs), 1),
                "ms_per_token": round(min(r[1] for r in runs), 2),
            }
        )
    return rows


def chain(job: Job, scale: Scale, run_dir: Path, out: dict[str, Any]) -> None:
    """Everything that needs the trained weights, on this machine: evaluations, export and CPU decode, each
    result into ``out`` as it comes, so that a call cut short keeps what had finished."""
    from albor.eval.sandbox import namespaces_available

    chain_dir = job.out / "chain"
    chain_dir.mkdir(exist_ok=True)
    mode = "namespaces" if namespaces_available() else "guard"
    env = job.env_with("cache-albor")
    out["sandbox"] = mode
    job.run("perplexity", albor("eval", "perplexity", "--checkpoint", str(run_dir), "--max-windows", "all"), env)
    out["perplexity"] = job.json_of("perplexity")
    gguf = job.work / "speedrun-q4_k_m.gguf"
    started = {
        "humaneval": job.start(
            "humaneval",
            albor(
                "eval",
                "humaneval",
                "--checkpoint",
                str(run_dir),
                "--sandbox",
                mode,
                "--out",
                str(chain_dir / "humaneval.jsonl"),
                *scale.humaneval,
            ),
            env,
        ),
        "infill": job.start(
            "infill",
            albor(
                "eval",
                "infill",
                "--checkpoint",
                str(run_dir),
                "--sandbox",
                mode,
                "--out",
                str(chain_dir / "infill.jsonl"),
                *scale.infill,
            ),
            env,
        ),
        "export": job.start("export", albor("export", "gguf", str(run_dir), str(gguf), "--type", "q4_k_m"), env),
    }
    for name, (proc, t) in started.items():
        job.finish(name, proc, t)
        out[name] = job.json_of(name)
    if job.commands["export"]["rc"] == 0 and gguf.is_file():
        out["gguf_bytes"] = gguf.stat().st_size
        try:
            out["decode"] = decode_speed(gguf, scale.decode_tokens)
        except (ImportError, OSError, ValueError) as e:
            out["decode"] = {"error": f"{type(e).__name__}: {e}"}


def card() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU only ({cpu_name()})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path, help="folder for speedrun.json, curves.png, the records and the logs")
    p.add_argument("--steps", type=int, help="optimizer steps of both trainers (H200 default 225, smoke 6)")
    p.add_argument("--smoke", action="store_true", help="tiny model, small corpus, the CPU: the same code path")
    p.add_argument("--no-chain", action="store_true", help="the two jobs only, for a call the chain would overrun")
    p.add_argument("--no-kill", action="store_true", help="Albor's run without the SIGKILL and the resume")
    p.add_argument(
        "--no-peer", action="store_true", help="Albor's job and the chain only, for a call the peer would overrun"
    )
    p.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="Albor's train config on top of the run's (a lever: optim.name=muon); data.* ones reach its prepare",
    )
    args = p.parse_args(argv)
    if bad := [o for o in args.set if "=" not in o]:
        p.error(f"--set takes KEY=VALUE, got {bad}")
    scale = SMOKE if args.smoke else H200
    steps = args.steps or (6 if args.smoke else 225)
    if steps < 2 * scale.eval_every:
        p.error(f"--steps must be at least {2 * scale.eval_every}: the run is killed after a mid-run checkpoint")
    job = Job(args.out)
    print(f"work folder: {job.work}", flush=True)
    where = source_files()
    warmed = warm_page_cache(list(where.values()))
    results: dict[str, Any] = {
        "card": card(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "date": dt.date.today().isoformat(),
        "command": " ".join(["python", "bench/speedrun.py", *(argv if argv is not None else sys.argv[1:])]),
        "steps": steps,
        "smoke": args.smoke,
        "albor_overrides": args.set,
        "page_cache_warmed_bytes": warmed,
        "commands": job.commands,
    }
    try:
        a = results["albor"] = albor_job(job, scale, steps, args.set, kill=not args.no_kill)
        if not args.no_peer:
            try:  # the peer's side, and the comparison; the chain runs whatever happens here
                lists = results["lists"] = split_lists(Path(a["data_dir"]), where, job.work, args.out)
                p_ = results["peer"] = peer_job(job, scale, steps, lists, a["data"]["val"]["tokens"])
                results["same_text"] = {
                    "albor_val_files": lists["val"]["files"],
                    "peer_val_files": p_["split"].get("val_files"),
                    "albor_val_source_bytes": a["data"]["val"]["source_bytes"],
                    "peer_val_bytes": p_["split"].get("val_bytes"),
                    "albor_train_files": lists["train"]["files"],
                    "peer_train_files": p_["split"].get("train_files"),
                }
                results["compare"] = compare(a, p_)
                plot(a, p_, args.out / "curves.png")
            except Exception as e:
                results["peer_error"] = f"{type(e).__name__}: {e}"
                print(f"peer: {results['peer_error']}", file=sys.stderr, flush=True)
        results["chain"] = {}
        if not args.no_chain:
            chain(job, scale, Path(a["run_dir"]), results["chain"])
    finally:
        (args.out / "speedrun.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(json.dumps({k: results.get(k) for k in ("compare", "same_text", "peer_error")}, indent=2, default=str))
    chain_ = results["chain"]
    summary = {
        k: (chain_.get(k) or {}).get(f)
        for k, f in (("perplexity", "val_bpb"), ("humaneval", "pass_at_k"), ("infill", "pass_at_k"))
    }
    print(
        json.dumps(
            {**summary, "decode": chain_.get("decode"), "commands": {k: v["rc"] for k, v in job.commands.items()}}
        )
    )
    return 0 if all(v["rc"] == 0 for k, v in job.commands.items() if k != "albor-train") else 1


if __name__ == "__main__":
    sys.exit(main())
