"""Starting the trainer in fresh processes for the falsifiers: one plain process, or ranks under torchrun;
and what such a process measures of its own memory.

A rank waiting on a collective that another rank never joins waits forever; the time limit turns
that hang into a failure that says so, and takes every process of the run down with it, the ranks
included.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from albor.verify.mutant_worker import descendants

HANG_S = 300.0  # the slowest of these runs takes under a minute on a loaded 2-core machine


def train(cfg: Path, cwd: Path, ranks: int | None, *extra: str, crash: str | None = None) -> int:
    """Run the trainer on ``ranks`` processes under torchrun (None: one plain process); its exit status.

    Without ``crash`` the run must succeed; with it (an ``ALBOR_CRASH_AT`` point) it may die there.
    """
    cmd = ["-m", "albor.train", "--config", str(cfg), "--preflight", "off", *extra]
    env = {**os.environ, **({"ALBOR_CRASH_AT": crash} if crash else {})}
    returncode, stderr = _run(_launcher(ranks) + cmd, cwd, env)
    if crash is None:
        assert returncode == 0, stderr[-3000:]
    return returncode


def run_on_ranks(script: str, cwd: Path, n: int, *args: str) -> None:
    """Run the Python source ``script`` on ``n`` ranks under torchrun, with ``args``; every rank must succeed."""
    returncode, stderr = _run(
        [*_launcher(n), "--no-python", sys.executable, "-c", script, *args], cwd, dict(os.environ)
    )
    assert returncode == 0, stderr[-3000:]


def own_peak_rss() -> int:
    """Bytes of this process's peak resident memory since it started (its last exec).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries the peak of the process that forked it across the
    exec, so a child of a large parent reports the parent's memory as its own (ALB-303).
    """
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))


def _launcher(ranks: int | None) -> list[str]:
    return (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
        if ranks
        else [sys.executable]
    )


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        # torchrun starts each rank in a session of its own, out of reach of a group kill; a rank left
        # alive holds the pipes open, and the communicate() below would wait as long as it does.
        for pid in [*descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        raise AssertionError(f"the run did not end within {HANG_S:.0f} s (a rank waits on a collective?)\n"
                             f"{stderr[-2000:]}") from None  # fmt: skip
    return proc.returncode, stderr
