"""The chaos soak: a CPU run under ``albor train --supervise``, killed again and again, must end where
an uninterrupted run ends, bitwise.

    python bench/chaos.py --kills 50 --out bench/chaos.json

The run's folder is a small tmpfs in a private mount namespace (the script re-executes itself under
``unshare --user --map-root-user --mount``), so the disk can be filled for real. The trainer is
SIGKILLed ``--kills`` times, each time at a random moment after it logged a new step: inside a step,
inside a checkpoint's write, or between the rename and the ``latest`` link. Once, the disk is filled
until a save fails; once, a byte of the latest checkpoint's weights is flipped before a kill. The
supervisor restarts the trainer every time. At the end the script compares the final weights and
the per-step losses with an uninterrupted run of the same config, and reports the kills survived,
the steps each kill cost, and where each kill landed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from albor.data import prepare
from albor.data.synthetic import clean_repos, write_repos

NAMESPACE_FLAG = "ALBOR_CHAOS_IN_NAMESPACE"
RUN = {
    "name": "chaos",
    "model": {"name": "chaos", "n_layers": 2, "d_model": 32, "n_heads": 4, "n_kv_heads": 2, "d_ff": 48},
    "optim": {"lr": 3.0e-3, "min_lr": 3.0e-4, "warmup_steps": 10, "max_steps": 240},
    "micro_batch": 4,
    "device": "cpu",
    "eval_every": 40,
    "eval_windows": 8,
    "checkpoint_every": 1,
    "keep_last": 3,
}


def _train_cmd(cfg: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "albor.train", "--config", str(cfg), "--preflight", "off", *extra]


def _metrics_steps(run_dir: Path) -> list[tuple[int, float]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("kind") == "train":
            out.append((rec["step"], rec["loss"]))
    return out


def _holder(run_dir: Path) -> int | None:
    try:
        text = (run_dir / ".lock").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _where(run_dir: Path) -> str:
    ckpts = run_dir / "checkpoints"
    if any(ckpts.glob(".tmp-step-*")):
        return "inside a checkpoint write"
    if (ckpts / ".tmp-latest").is_symlink():
        return "during the latest link update"
    return "inside or between steps"


def _fill(disk: Path) -> Path:
    """Fill the tmpfs ``disk`` up to its last few kilobytes; returns the filler file."""
    filler = disk / "filler.bin"
    with filler.open("wb", buffering=0) as f:  # unbuffered: the write that fails is inside the try, not close's
        chunk = b"\0" * (1 << 16)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass
    return filler


def soak(kills: int, seed: int, disk: Path, work: Path) -> dict:
    rng = random.Random(seed)
    data = prepare(write_repos(work / "src", clean_repos(n_repos=8, files_per_repo=6)), work / "data", 300, 16)
    base = {**RUN, "data": {"vocab_size": 300, "seq_len": 16, "out": str(data)}}
    ref_cfg, cut_cfg = work / "ref.yaml", work / "cut.yaml"
    ref_cfg.write_text(yaml.safe_dump({**base, "runs_dir": str(work / "ref")}))
    cut_cfg.write_text(yaml.safe_dump({**base, "runs_dir": str(disk)}))
    subprocess.run(_train_cmd(ref_cfg), check=True, capture_output=True)
    run_dir = disk / "chaos"
    supervisor = subprocess.Popen(
        [*_train_cmd(cut_cfg), "--supervise"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    fill_at, corrupt_at = rng.randrange(kills // 3, kills // 2), rng.randrange(kills // 2, kills)
    events, last_pid = [], None
    for k in range(kills):
        # Wait for a trainer that has logged a step of its own, then kill it a random moment later.
        while supervisor.poll() is None:
            pid, steps = _holder(run_dir), _metrics_steps(run_dir)
            if pid and pid != last_pid and _alive(pid) and steps and steps[-1][0] >= 2:
                started_at = steps[-1][0]
                break
            time.sleep(0.02)
        while supervisor.poll() is None and _metrics_steps(run_dir)[-1][0] <= started_at:
            time.sleep(0.01)
        # The run may finish between two kills: then there is nothing left to kill.
        if supervisor.poll() is not None or steps[-1][0] >= RUN["optim"]["max_steps"] - 2:
            break
        if k == fill_at:
            filler = _fill(disk)
            while not any(e["event"] == "restart" and e["exit_code"] == 1 for e in _history(run_dir)):
                assert supervisor.poll() is None, "the supervisor stopped on the full disk"
                time.sleep(0.05)
            filler.unlink()
            events.append({"kill": k, "where": "a save on a full disk (the trainer exited 1)", "lost": None})
            last_pid = pid
            continue
        time.sleep(rng.uniform(0.0, 0.2))
        if k == corrupt_at:
            latest = run_dir / "checkpoints" / "latest" / "model.safetensors"
            raw = bytearray(latest.read_bytes())
            raw[len(raw) // 2] ^= 0x01
            latest.write_bytes(bytes(raw))
        before, where = _metrics_steps(run_dir)[-1][0], _where(run_dir)
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            continue
        events.append({"kill": k, "where": where + (", latest weights flipped" if k == corrupt_at else ""),
                       "last_step": before})  # fmt: skip
        last_pid = pid
    code = supervisor.wait(timeout=1800)
    resumes = [e for e in _history(run_dir) if e["event"] == "resume"]
    for event, resume in zip((e for e in events if "last_step" in e), resumes, strict=False):
        event["resumed_at"] = resume["step"]
        event["lost"] = event["last_step"] - resume["step"]
    ref_w = load_file(str(work / "ref" / "chaos" / "checkpoints" / "latest" / "model.safetensors"))
    cut_w = load_file(str(run_dir / "checkpoints" / "latest" / "model.safetensors"))
    same_weights = ref_w.keys() == cut_w.keys() and all(torch.equal(ref_w[k], cut_w[k]) for k in ref_w)
    same_losses = _metrics_steps(work / "ref" / "chaos") == _metrics_steps(run_dir)
    lost = [e["lost"] for e in events if e.get("lost") is not None]
    return {
        "kills": len(events),
        "supervisor_exit": code,
        "restarts": sum(e["event"] == "restart" for e in _history(run_dir)),
        "corrupt_moved_aside": sorted(p.name for p in (run_dir / "checkpoints").glob("corrupt-*")),
        "steps_lost": {"total": sum(lost), "max": max(lost, default=0), "mean": sum(lost) / max(len(lost), 1)},
        "where": {w: sum(e["where"].startswith(w) for e in events) for w in {e["where"].split(",")[0] for e in events}},
        "final_weights_bitwise_equal": same_weights,
        "losses_equal": same_losses,
        "events": events,
    }


def _history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--disk-mb", type=int, default=24, help="size of the tmpfs the run is written to")
    p.add_argument("--out", type=Path, default=Path("chaos.json"))
    args = p.parse_args()
    if os.environ.get(NAMESPACE_FLAG) != "1":
        if shutil.which("unshare") is None:
            raise SystemExit("needs unshare (util-linux) for a private tmpfs")
        cmd = ["unshare", "--user", "--map-root-user", "--mount", sys.executable, *sys.argv]
        return subprocess.run(cmd, env={**os.environ, NAMESPACE_FLAG: "1"}, check=False).returncode
    with tempfile.TemporaryDirectory() as tmp:
        disk = Path(tmp) / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.disk_mb}M", "tmpfs", str(disk)], check=True)
        try:
            t0 = time.perf_counter()
            report = soak(args.kills, args.seed, disk, Path(tmp) / "work")
            report["wall_s"] = round(time.perf_counter() - t0, 1)
        finally:
            subprocess.run(["umount", str(disk)], check=False)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k != "events"}
    print(json.dumps(summary, indent=2))
    return 0 if report["final_weights_bitwise_equal"] and report["losses_equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
