"""Starting the trainer in fresh processes for the falsifiers: one plain process, or ranks under torchrun.

A rank waiting on a collective that another rank never joins waits forever; the time limit turns
that hang into a failure that says so, and takes the whole process group down with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

HANG_S = 300.0  # the slowest of these runs takes under a minute on a loaded 2-core machine


def train(cfg: Path, cwd: Path, ranks: int | None, *extra: str, crash: str | None = None) -> int:
    """Run the trainer on ``ranks`` processes under torchrun (None: one plain process); its exit status.

    Without ``crash`` the run must succeed; with it (an ``ALBOR_CRASH_AT`` point) it may die there.
    """
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    cmd = [*(launch if ranks else [sys.executable]), "-m", "albor.train", "--config", str(cfg), "--preflight", "off"]
    env = {**os.environ, **({"ALBOR_CRASH_AT": crash} if crash else {})}
    proc = subprocess.Popen(
        [*cmd, *extra], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=HANG_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        raise AssertionError(f"the run did not end within {HANG_S:.0f} s (a rank waits on a collective?)\n"
                             f"{stderr[-2000:]}") from None  # fmt: skip
    if crash is None:
        assert proc.returncode == 0, stderr[-3000:]
    return proc.returncode
