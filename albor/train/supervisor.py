"""``albor train --supervise``: keep a run going through crashes.

The trainer runs as a child process. When it dies (killed, out of memory, a failed write), the
supervisor waits, then starts it again with ``--resume``, from the run's last checkpoint that
verifies; the wait doubles with each restart that followed no progress and falls back after one
that did. It stops when the run finishes, on a training alert or a refusal (restarting would not
help), when the run dies twice at the same step (the failure repeats), or after ``MAX_RESTARTS``
restarts in all. Every restart and the stop are recorded in the run's history.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from albor.checkpoint import list_checkpoints
from albor.plot import read_metrics
from albor.train.run import record

MAX_RESTARTS = 100
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # the wait after k restarts without progress, then the last one
EXIT_REFUSED, EXIT_ALERT = 2, 3  # the trainer's exit statuses for a refusal and for a training alert


@dataclass(frozen=True)
class Attempt:
    """How one run of the trainer ended: its exit status and the last step it logged."""

    exit_code: int
    last_step: int | None


def decide(attempts: list[Attempt]) -> str | None:
    """None to restart after the last attempt, or why to stop."""
    last = attempts[-1]
    if last.exit_code == 0:
        return "the run finished"
    if last.exit_code == EXIT_REFUSED:
        return "the trainer refused to run (exit 2): restarting would not help"
    if last.exit_code == EXIT_ALERT:
        return "a training alert stopped the run (exit 3)"
    if len(attempts) > MAX_RESTARTS:
        return f"the run died {len(attempts)} times; gave up after {MAX_RESTARTS} restarts"
    if len(attempts) >= 2 and last.last_step is not None and attempts[-2].last_step == last.last_step:
        return f"the run died twice after step {last.last_step}: the failure repeats"
    return None


def wait_before_restart(attempts: list[Attempt]) -> float:
    """The back-off: longer for every attempt in a row that got no further than the one before it."""
    stalled, best = 0, None
    for a in attempts:
        progressed = a.last_step is not None and (best is None or a.last_step > best)
        stalled = 0 if progressed else stalled + 1
        best = a.last_step if progressed else best
    return BACKOFF_S[min(stalled, len(BACKOFF_S) - 1)]


def last_step(run_dir: Path) -> int | None:
    """The last step the run logged (its metrics), or None before its first step."""
    train, _ = read_metrics(run_dir / "metrics.jsonl")
    return train[-1]["step"] if train else None


def supervise(run_dir: Path, argv: list[str], prog: str) -> int:
    """Run ``albor train argv`` until :func:`decide` says stop; returns the last attempt's exit status."""
    attempts: list[Attempt] = []
    child: subprocess.Popen | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)
    args = list(argv)
    while True:
        child = subprocess.Popen([sys.executable, "-m", "albor.train", *args])
        code = child.wait()
        attempts.append(Attempt(code, last_step(run_dir)))
        reason = decide(attempts)
        if reason is not None:
            record(run_dir, "supervisor-stop", reason=reason, attempts=len(attempts), exit_code=code)
            print(f"{prog}: supervisor: {reason}", file=sys.stderr)
            return code
        wait = wait_before_restart(attempts)
        record(run_dir, "restart", attempt=len(attempts), exit_code=code, last_step=attempts[-1].last_step, wait_s=wait)
        print(f"{prog}: supervisor: the trainer exited {code}; restarting in {wait:g} s", file=sys.stderr)
        time.sleep(wait)
        if list_checkpoints(run_dir / "checkpoints") and "--resume" not in args:
            args.append("--resume")
