"""Run untrusted Python programs (model completions) against trusted checks, each run contained.

A run is a ``program`` (untrusted source) and a ``check`` (trusted source). The program runs in one
process; the check runs in another, where the program cannot reach it, and calls the program's functions
through ``remote(name)``, their arguments and results passing between the two as plain data. The
outcome comes from the check's process and is written by the sandbox's supervisor, exactly once, on a
pipe the program never holds: ``passed`` (the program loaded and the check ran to its end), ``failed``
(an AssertionError, in the check or raised by the program), ``timed out`` (wall or CPU time, the CPU
time read from the program's own accounting), ``error`` (anything else: an exception, an early exit, a
limit). With no check a run passes when the program loads (its top level runs to its end).

Each run has its own temporary directory as working dir, HOME and TMPDIR, standard input closed, a clean
environment, and limits on CPU time, wall time, memory, file size and process count. Only the standard
library is importable (``-S``). Two modes (``albor.eval.sandbox_child`` has the details):

- ``namespaces``, the default: no network at all (a network namespace whose loopback is down), a file
  tree that holds only the standard library and the shared libraries it loads (read-only) and a
  size-capped tmpfs work dir, a PID namespace whose teardown kills every process the program started,
  and a memory cgroup that caps all of the program's processes together. It needs root.
- ``guard``, only when asked for by name: an audit hook refuses sockets, process creation, signals,
  ctypes and writes outside the work dir. It contains a program's accidents, not a hostile program
  (``contracts/sandbox.yaml`` lists what it leaves open); every result records its mode.

If the sandbox cannot confine a program (in ``namespaces`` mode: no root, no cgroup), ``SandboxError`` is
raised: no program runs outside the sandbox, and none is ever scored by a broken harness.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import IO, Literal

Mode = Literal["namespaces", "guard"]
MODES: tuple[Mode, ...] = ("namespaces", "guard")
Outcome = Literal["passed", "failed", "timed out", "error"]
OUTCOMES: tuple[Outcome, ...] = ("passed", "failed", "timed out", "error")

CHILD = Path(__file__).with_name("sandbox_child.py")
TAIL_BYTES = 4096
BACKSTOP_S = 10.0
# Each run's program gets an unprivileged uid of its own and its check the next one (under a root
# harness), so that RLIMIT_NPROC counts only the program's processes and neither can signal the other;
# no such users need to exist.
UID_BASE, UID_SPAN = 1_500_000_000, 1_000_000
GUARD_HINT = (
    "untrusted code runs only inside the sandbox's namespaces; mode='guard' (`--sandbox guard`) runs it "
    "under an audit hook instead, which contains a program's accidents but not a hostile program, and "
    "records that in every result"
)


class SandboxError(RuntimeError):
    """The sandbox could not confine a program; the run must stop rather than score anything."""


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``memory_bytes`` caps each process's address space and, in ``namespaces`` mode,
    all the program's processes together (a cgroup); ``disk_bytes`` caps the tmpfs work dir there."""

    cpu_s: int = 5
    wall_s: float = 10.0
    memory_bytes: int = 1 << 30
    file_bytes: int = 16 << 20
    processes: int = 16
    disk_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value <= 0:
                raise ValueError(f"Limits.{name} must be positive, got {value}")


@dataclass(frozen=True)
class Result:
    """How one run ended, in which mode; ``stdout`` and ``stderr`` are the last few KiB of each."""

    outcome: Outcome
    detail: str
    mode: Mode
    stdout: str = ""
    stderr: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


def _tail(f: IO[bytes]) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - TAIL_BYTES))
    return f.read().decode("utf-8", "replace")


def _read_status(fd: int) -> list[tuple[str, str]]:
    """The (outcome, detail) lines on the status pipe; the supervisor writes exactly one."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    text = b"".join(chunks).decode("utf-8", "replace")
    return [(outcome, detail) for outcome, _, detail in (line.partition("\t") for line in text.splitlines())]


def run(program: str, limits: Limits | None = None, mode: Mode | None = None, check: str = "") -> Result:
    """Run ``program`` (untrusted Python source) and ``check`` (trusted) in the sandbox; how it ended."""
    limits = limits or Limits()
    mode = mode or "namespaces"
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    with tempfile.TemporaryDirectory(prefix="albor-sandbox-") as tmp:
        os.chmod(tmp, 0o711)
        work = Path(tmp) / "work"
        work.mkdir(mode=0o700)
        (Path(tmp) / "root").mkdir(mode=0o755)
        status_r, status_w = os.pipe()
        try:
            with (
                tempfile.TemporaryFile() as check_file,
                tempfile.TemporaryFile() as out,
                tempfile.TemporaryFile() as err,
            ):
                check_file.write(check.encode("utf-8"))
                check_file.seek(0)
                cfg = {
                    **vars(limits),
                    "program": program,
                    "mode": mode,
                    "workdir": str(work),
                    "root": str(Path(tmp) / "root"),
                    "status_fd": status_w,
                    "check_fd": check_file.fileno(),
                    "uid": UID_BASE + 2 * secrets.randbelow(UID_SPAN // 2),
                }
                env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
                # A fixed hash seed makes set and dict-of-str orders, hence results, reproducible.
                env["PYTHONHASHSEED"] = "0"
                proc = subprocess.Popen(
                    [sys.executable, "-P", "-s", "-S", "-B", str(CHILD)],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    cwd=work,
                    env=env,
                    pass_fds=(status_w, check_file.fileno()),
                    start_new_session=True,
                )
                os.close(status_w)
                status_w = -1
                check_file.close()
                finished = True
                # The supervisor enforces wall_s; the harness's own limit is only a backstop.
                try:
                    proc.communicate(marshal.dumps(cfg), timeout=limits.wall_s + BACKSTOP_S)
                except subprocess.TimeoutExpired:
                    finished = False
                    # Still unreaped, so its process group id cannot have been reused.
                    _kill_group(proc.pid)
                    proc.kill()
                    proc.wait()
                reports = _read_status(status_r)
                stdout, stderr = _tail(out), _tail(err)
        finally:
            os.close(status_r)
            if status_w >= 0:
                os.close(status_w)
    return _result(reports, finished, proc.returncode, mode, limits, stdout, stderr)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _result(
    reports: list[tuple[str, str]],
    finished: bool,
    returncode: int,
    mode: Mode,
    limits: Limits,
    stdout: str,
    stderr: str,
) -> Result:
    """The run's one outcome; SandboxError where the sandbox itself failed."""
    if not finished:
        raise SandboxError(f"the sandbox ({mode}) did not end within {limits.wall_s + BACKSTOP_S} s\n{stderr}")
    if len(reports) != 1:
        raise SandboxError(
            f"the sandbox ({mode}) reported {len(reports)} outcomes, not one, and exited with code {returncode}\n"
            f"{stderr}"
        )
    outcome, detail = reports[0]
    if outcome == "setup":
        hint = f"; {GUARD_HINT}" if mode == "namespaces" else ""
        raise SandboxError(f"the sandbox ({mode}) could not confine the program: {detail}{hint}\n{stderr}")
    if outcome not in OUTCOMES:
        raise SandboxError(f"the sandbox ({mode}) reported an unknown outcome {outcome!r}")
    return Result(outcome, detail, mode, stdout, stderr)  # type: ignore[arg-type]


def run_many(
    programs: Sequence[str],
    limits: Limits | None = None,
    workers: int = 1,
    mode: Mode | None = None,
    checks: Sequence[str] | None = None,
) -> list[Result]:
    """Run each program (with ``checks[i]`` if given) in its own sandbox, ``workers`` at a time; in order."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    checks = [""] * len(programs) if checks is None else checks
    if len(checks) != len(programs):
        raise ValueError(f"need one check per program, got {len(checks)} for {len(programs)}")
    jobs = list(zip(programs, checks, strict=True))
    if workers == 1:
        return [run(p, limits, mode, c) for p, c in jobs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run(job[0], limits, mode, job[1]), jobs))


@cache
def namespaces_available() -> bool:
    """Whether this machine lets the sandbox confine a program in ``namespaces`` mode."""
    try:
        return run("pass", Limits(wall_s=30.0), "namespaces").passed
    except SandboxError:
        return False
