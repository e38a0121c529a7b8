"""Falsifiers for the ``launch`` contract (contracts/launch.yaml): the falsifiers' launcher ends a hung torchrun
job with every rank, and passes a failing rank's message on."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from falsification import launch
from falsification.test_trainer import MAX_STEPS, small_config

# Each rank records its pid, lets go of the run's pipes (so that reading them cannot wait for the rank:
# what is left to see is whether the rank itself lives on) and waits far past the time limit.
HANG = """
import os, sys, time
from pathlib import Path
Path(sys.argv[1], os.environ["RANK"]).write_text(str(os.getpid()))
print("rank", os.environ["RANK"], "waits", file=sys.stderr, flush=True)
null = os.open(os.devnull, os.O_WRONLY)
os.dup2(null, 1)
os.dup2(null, 2)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, killed and not yet reaped by its new parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow  # two ranks under torchrun, and the time limit
@pytest.mark.claim("LAUNCH-001")
def test_a_hung_job_ends_with_every_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    # The launcher's own limit is finite, and past the slowest run it serves (under a minute).
    assert 60 <= launch.HANG_S < math.inf
    monkeypatch.setattr(launch, "HANG_S", 30.0)  # enough for two ranks to start on a loaded 2-core machine
    # A process of the job that ends by itself between being listed and being killed (here one listed that has
    # already ended) must not keep the launcher from killing the rest.
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    real = launch.descendants
    monkeypatch.setattr(launch, "descendants", lambda root: [ended.pid, *real(root)])
    try:
        with pytest.raises(AssertionError, match="did not end within 30 s") as hung:
            launch.run_on_ranks(HANG, tmp_path, 2, str(pids))
        ranks = [int(p.read_text()) for p in sorted(pids.iterdir())]
        assert len(ranks) == 2, "the ranks did not start within the limit"
        assert [pid for pid in ranks if _alive(pid)] == []
        # The failure ends with what the run wrote to its stderr, the ranks' last words included.
        assert "rank 0 waits" in str(hung.value) and "rank 1 waits" in str(hung.value), str(hung.value)
    finally:
        for p in pids.iterdir():
            if _alive(int(p.read_text())):
                os.kill(int(p.read_text()), signal.SIGKILL)


@pytest.mark.slow  # two ranks under torchrun
@pytest.mark.claim("LAUNCH-002")
def test_a_failing_rank_fails_with_its_message(small_data: Path, tmp_path: Path) -> None:
    script = "import os, sys\nif os.environ['RANK'] == '1':\n    sys.exit('rank one refuses: ' + sys.argv[1])\n"
    with pytest.raises(AssertionError, match="rank one refuses: because") as refused:
        launch.run_on_ranks(script, tmp_path, 2, "because")
    assert "rank one refuses: because\n" in str(refused.value), "the rank's stderr, as text"
    # Every rank of a job that succeeds runs in the folder it is given.
    here = "import os, sys\nassert os.environ['WORLD_SIZE'] == '2'\nassert os.path.samefile(os.getcwd(), sys.argv[1])\n"
    launch.run_on_ranks(here, tmp_path, 2, str(tmp_path))
    cfg = tmp_path / "missing.yaml"
    with pytest.raises(AssertionError, match=r"missing\.yaml"):
        launch.train(cfg, tmp_path, None)
    # A trainer run in the folder it is given (its runs_dir is relative), then one killed where
    # ALBOR_CRASH_AT says: train returns the killed run's status.
    for name, crash in (("whole", None), ("killed", "step:3")):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(small_config(small_data, Path("runs"), name=name).to_yaml())
        code = launch.train(cfg, tmp_path, None, crash=crash)
        steps = [json.loads(line)["step"] for line in (tmp_path / "runs" / name / "metrics.jsonl").open()]
        if crash is None:
            assert code == 0 and max(steps) == MAX_STEPS
        else:
            assert code == -signal.SIGKILL and max(steps) <= 3 < MAX_STEPS
    # On ranks under torchrun: the run trains on that many ranks, as its checkpoint records.
    cfg = tmp_path / "pair.yaml"
    cfg.write_text(small_config(small_data, Path("runs"), name="pair").to_yaml())
    assert launch.train(cfg, tmp_path, 2) == 0
    latest = (tmp_path / "runs" / "pair" / "checkpoints" / "latest").resolve()
    assert json.loads((latest / "state.json").read_text())["world_size"] == 2


@pytest.mark.claim("LAUNCH-003")
def test_a_fresh_processs_peak_memory_is_its_own() -> None:
    held = bytearray(b"x") * (256 << 20)  # 256 MiB written, so resident, in this (the parent) process
    script = "from falsification.launch import own_peak_rss\nprint(own_peak_rss())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    peak = int(out)
    assert 0 < peak < len(held) // 2, f"a fresh interpreter reports a peak of {peak / 2**20:.0f} MiB"
    # In bytes: the kernel's VmHWM, which proc(5) gives in kB, read here on each side of the call.
    before = _vmhwm_bytes()
    own = launch.own_peak_rss()
    assert before <= own <= _vmhwm_bytes(), (before, own)
    assert own >= len(held), "the parent's own peak does not show the memory it holds"


def _vmhwm_bytes() -> int:
    match = re.search(r"^VmHWM:\s+(\d+) kB$", Path("/proc/self/status").read_text(), re.MULTILINE)
    assert match, "no VmHWM line in /proc/self/status"
    return int(match.group(1)) * 1024
