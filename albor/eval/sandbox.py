"""Run untrusted Python programs (model completions and their tests), each one contained.

Each program runs in its own subprocess (its own session, so its own process group) with its own
temporary directory as working dir, HOME and TMPDIR, standard input closed, a clean environment,
and limits on CPU time, wall time, address space, file size and process count. Only the standard
library is importable (``-S``). Two isolation modes (``albor.eval.sandbox_child`` has the details):

- ``namespaces`` where the kernel allows them: no network at all (a fresh network namespace with
  only a loopback that is down), the file tree read-only except a size-capped tmpfs work dir, a PID
  namespace whose teardown kills every process the program started;
- ``guard`` otherwise: an audit hook refuses sockets, process creation, signals, ctypes and writes
  outside the work dir before the program's first line runs.

``isolation()`` says which one applies here. Outcomes: ``passed`` (ran to the end), ``failed`` (an
AssertionError: a test caught a wrong answer), ``timed out`` (wall or CPU time), ``error`` (anything
else, limits included). A program that exits early, or dies without reporting, never passes. If the
sandbox itself cannot start, ``SandboxError`` is raised: no program is ever scored by a broken harness.
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
# Each program gets an unprivileged uid of its own (when the harness runs as root), so that
# RLIMIT_NPROC counts only that program's processes; no such user needs to exist.
UID_BASE, UID_SPAN = 1_500_000_000, 1_000_000


class SandboxError(RuntimeError):
    """The sandbox could not confine a program; the run must stop rather than score anything."""


@dataclass(frozen=True)
class Limits:
    """Per-program limits. ``disk_bytes`` caps the tmpfs work dir (``namespaces`` mode)."""

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
    """How one program ended; ``stdout`` and ``stderr`` are the last few KiB of each."""

    outcome: Outcome
    detail: str
    returncode: int | None
    stdout: str = ""
    stderr: str = ""

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


def _tail(f: IO[bytes]) -> str:
    size = f.seek(0, os.SEEK_END)
    f.seek(max(0, size - TAIL_BYTES))
    return f.read().decode("utf-8", "replace")


def _read_status(fd: int, nonce: str) -> list[tuple[str, str]]:
    """The (outcome, detail) lines the child reported under ``nonce``; anything else is ignored."""
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
    lines = []
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        parts = line.split("\t", 2)
        if len(parts) == 3 and parts[0] == nonce:
            lines.append((parts[1], parts[2]))
    return lines


def _classify(returncode: int, limits: Limits) -> tuple[Outcome, str]:
    """Outcome of a program that ended without reporting, from its exit status."""
    sig = -returncode if returncode < 0 else returncode - 128 if returncode > 128 else 0
    if sig == signal.SIGXCPU:
        return "timed out", f"CPU time over {limits.cpu_s} s"
    if sig == signal.SIGXFSZ:
        return "error", f"file size limit ({limits.file_bytes} bytes)"
    if sig:
        return "error", f"killed by {signal.Signals(sig).name}"
    return "error", f"exited with code {returncode} before the end"


def run(program: str, limits: Limits | None = None, mode: Mode | None = None) -> Result:
    """Run ``program`` (Python source) in the sandbox and say how it ended."""
    limits = limits or Limits()
    mode = mode or isolation()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    nonce = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="albor-sandbox-") as tmp:
        os.chmod(tmp, 0o711)
        work = Path(tmp) / "work"
        work.mkdir(mode=0o700)
        (Path(tmp) / "python").mkdir(mode=0o755)
        status_r, status_w = os.pipe()
        cfg = {
            **vars(limits),
            "program": program,
            "mode": mode,
            "workdir": str(work),
            "stdlib_mount": str(Path(tmp) / "python"),
            "nonce": nonce,
            "status_fd": status_w,
            "uid": UID_BASE + secrets.randbelow(UID_SPAN),
        }
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work), "TMPDIR": str(work), "LANG": "C.UTF-8"}
        # A fixed hash seed makes set and dict-of-str orders, hence results, reproducible.
        env["PYTHONHASHSEED"] = "0"
        try:
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                proc = subprocess.Popen(
                    [sys.executable, "-P", "-s", "-S", "-B", str(CHILD)],
                    stdin=subprocess.PIPE,
                    stdout=out,
                    stderr=err,
                    cwd=work,
                    env=env,
                    pass_fds=(status_w,),
                    start_new_session=True,
                )
                os.close(status_w)
                status_w = -1
                timed_out = False
                # In namespaces mode the launcher enforces wall_s and waits for the namespace to
                # empty; the harness's own limit is only a backstop.
                backstop = limits.wall_s + (BACKSTOP_S if mode == "namespaces" else 0.0)
                try:
                    proc.communicate(marshal.dumps(cfg), timeout=backstop)
                except subprocess.TimeoutExpired:
                    timed_out = True
                    # Still unreaped, so its process group id cannot have been reused.
                    _kill_group(proc.pid)
                    proc.kill()
                    proc.wait()
                reports = _read_status(status_r, nonce)
                stdout, stderr = _tail(out), _tail(err)
        finally:
            os.close(status_r)
            if status_w >= 0:
                os.close(status_w)
    return _result(reports, proc.returncode, timed_out, limits, stdout, stderr)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _result(
    reports: list[tuple[str, str]], returncode: int, timed_out: bool, limits: Limits, stdout: str, stderr: str
) -> Result:
    outcomes = [o for o, _ in reports]
    if "setup" in outcomes:
        detail = reports[outcomes.index("setup")][1]
        raise SandboxError(f"sandbox setup failed: {detail}\n{stderr}")
    if timed_out and "started" not in outcomes:
        raise SandboxError(f"sandbox did not start within {limits.wall_s} s\n{stderr}")
    if not timed_out and "started" not in outcomes:
        raise SandboxError(f"sandbox child exited with code {returncode} before confining the program\n{stderr}")
    final = [(o, d) for o, d in reports if o in OUTCOMES]
    if timed_out:
        outcome, detail = "timed out", f"wall time over {limits.wall_s} s"
    elif final:
        outcome, detail = final[0]
    else:
        outcome, detail = _classify(returncode, limits)
    return Result(outcome, detail, returncode, stdout, stderr)  # type: ignore[arg-type]


def run_many(
    programs: Sequence[str], limits: Limits | None = None, workers: int = 1, mode: Mode | None = None
) -> list[Result]:
    """Run each program in its own sandbox, ``workers`` at a time; results in input order."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    mode = mode or isolation()
    if workers == 1:
        return [run(p, limits, mode) for p in programs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda p: run(p, limits, mode), programs))


@cache
def isolation() -> Mode:
    """``namespaces`` when this kernel lets the sandbox create them, else ``guard``."""
    try:
        result = run("pass", Limits(wall_s=30.0), "namespaces")
    except SandboxError:
        return "guard"
    return "namespaces" if result.passed else "guard"
