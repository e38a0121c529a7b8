"""Falsifiers for the ``sandbox`` contract (contracts/sandbox.yaml).

The hostile programs run once per isolation mode (``namespaces`` where this kernel allows it, and
the ``guard`` fallback always), all at once under tight limits, so the battery pays about two
seconds per mode. They are built so that a containment failure stays small: they signal with
SIGUSR1 (caught here), touch only a scratch dir of this test, and run under a wall limit.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from albor.eval import sandbox
from albor.eval.sandbox import Limits, Result, SandboxError
from albor.verify.contracts import tolerance

LIMITS = Limits(cpu_s=1, wall_s=1.5, processes=8, file_bytes=1 << 20)
MODES = ["namespaces", "guard"]


@dataclass
class Hostile:
    """Results of the hostile batch in one mode, and what the programs aimed at."""

    mode: str
    results: dict[str, Result]
    seconds: float
    outside: Path
    escape: Path
    victim: subprocess.Popen
    usr1_received: list[int]
    connections: int


def _programs(port: int, outside: Path, escape: Path, victim: int) -> dict[str, str]:
    return {
        "loop": "while True:\n    pass\n",
        "fork_bomb": (
            "import os\nprint(os.getuid(), flush=True)\n"
            "while True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
        ),
        "allocate": "x = bytearray(10 * 2**30)\n",
        "print": "chunk = 'x' * (1 << 20)\nfor _ in range(1024):\n    print(chunk)\n",
        "filesystem": (
            "import os, shutil\nprint(os.getcwd(), flush=True)\n"
            f"for attempt in (lambda: open({str(outside / 'new.txt')!r}, 'w').write('x'),\n"
            f"                lambda: open({str(escape)!r}, 'w').write('x'),\n"
            f"                lambda: os.remove({str(outside / 'keep.txt')!r}),\n"
            f"                lambda: shutil.rmtree({str(outside)!r})):\n"
            "    try:\n        attempt()\n    except OSError as e:\n        print(e)\n"
            "open('inside.txt', 'w').write('allowed')\n"
            "raise SystemExit(1)\n"
        ),
        "network": (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "print('connected', flush=True)\n"
        ),
        "signals": (
            "import os, signal\n"
            f"targets = [({os.getpid()}, signal.SIGUSR1), ({victim}, signal.SIGKILL)]\n"
            "if os.getppid() > 1:\n    targets.append((os.getppid(), signal.SIGUSR1))\n"
            "for pid, sig in targets:\n"
            "    try:\n        os.kill(pid, sig)\n        print('sent', pid, flush=True)\n"
            "    except OSError as e:\n        print(e)\n"
            "raise SystemExit(1)\n"
        ),
    }


@pytest.fixture(scope="module", params=MODES)
def hostile(request: pytest.FixtureRequest) -> Iterator[Hostile]:
    mode = request.param
    if mode == "namespaces" and sandbox.isolation() != "namespaces":
        pytest.skip("this kernel refuses the sandbox namespaces; the guard mode applies")
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    outside = Path(tempfile.mkdtemp(prefix="albor-outside-"))
    outside.chmod(0o777)
    (outside / "keep.txt").write_text("keep")
    (outside / "keep.txt").chmod(0o666)
    escape = Path(tempfile.gettempdir()) / f"albor-escape-{os.getpid()}-{mode}.txt"
    victim = subprocess.Popen(["sleep", "60"])
    try:
        programs = _programs(listener.getsockname()[1], outside, escape, victim.pid)
        start = time.monotonic()
        results = sandbox.run_many(list(programs.values()), LIMITS, workers=len(programs), mode=mode)
        seconds = time.monotonic() - start
        connections = 0
        try:
            while listener.accept():
                connections += 1
        except BlockingIOError:
            pass
        yield Hostile(
            mode, dict(zip(programs, results, strict=True)), seconds, outside, escape, victim, received, connections
        )
    finally:
        victim.kill()
        victim.wait()
        listener.close()
        signal.signal(signal.SIGUSR1, previous)
        escape.unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(outside)], check=False)


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    pids.append(int(entry.name))
            except FileNotFoundError:
                continue
    return pids


@pytest.mark.claim("SANDBOX-001")
def test_infinite_loop_times_out(hostile: Hostile) -> None:
    r = hostile.results["loop"]
    assert r.outcome == "timed out", r
    assert hostile.seconds <= LIMITS.wall_s + tolerance("SANDBOX-001"), hostile.seconds


@pytest.mark.claim("SANDBOX-002")
def test_fork_bomb_contained(hostile: Hostile) -> None:
    r = hostile.results["fork_bomb"]
    assert r.outcome in ("timed out", "error"), r
    uid = int(r.stdout.split()[0])
    if os.geteuid() == 0:
        assert uid != 0, "the program must not run as root"
        assert _pids_of_uid(uid) == [], "processes of the fork bomb outlived the run"
    assert sandbox.run("print('still fine')").passed


@pytest.mark.claim("SANDBOX-003")
def test_huge_allocation_refused(hostile: Hostile) -> None:
    r = hostile.results["allocate"]
    assert r.outcome == "error" and "MemoryError" in r.detail, r


@pytest.mark.claim("SANDBOX-004")
def test_huge_output_capped(hostile: Hostile) -> None:
    r = hostile.results["print"]
    assert r.outcome == "error", r
    assert len(r.stdout) <= sandbox.TAIL_BYTES and len(r.stderr) <= sandbox.TAIL_BYTES


@pytest.mark.claim("SANDBOX-005")
def test_filesystem_outside_untouched(hostile: Hostile) -> None:
    r = hostile.results["filesystem"]
    assert r.outcome == "error", r
    assert sorted(p.name for p in hostile.outside.iterdir()) == ["keep.txt"], r.stdout
    assert (hostile.outside / "keep.txt").read_text() == "keep"
    assert not hostile.escape.exists(), r.stdout
    workdir = Path(r.stdout.splitlines()[0])
    assert workdir.name == "work" and workdir.parent.name.startswith("albor-sandbox-")
    assert not workdir.parent.exists(), "the temporary directory outlived the run"


@pytest.mark.claim("SANDBOX-006")
def test_no_network(hostile: Hostile) -> None:
    r = hostile.results["network"]
    assert hostile.connections == 0 and "connected" not in r.stdout, r
    assert r.outcome == "error", r


@pytest.mark.claim("SANDBOX-007")
def test_signals_contained(hostile: Hostile) -> None:
    r = hostile.results["signals"]
    assert hostile.usr1_received == [], r.stdout
    assert hostile.victim.poll() is None, "the victim process was killed"
    assert "sent" not in r.stdout, r.stdout


PLAIN = {
    "passes": ("print('ok')", "passed"),
    "assertion": ("assert 1 + 1 == 3, 'wrong'", "failed"),
    "exception": ("{}['missing']", "error"),
    "syntax": ("def f(:\n", "error"),
    "sys_exit_0": ("import sys\nsys.exit(0)", "error"),
    "os_exit_0": ("import os\nos._exit(0)", "error"),
    "stdin": ("import sys\nassert sys.stdin is None\ninput()", "error"),
    "cwd": ("import os\nprint(os.getcwd())\nopen('f.txt', 'w').write('x')", "passed"),
}


@pytest.mark.claim("SANDBOX-008")
@pytest.mark.parametrize("mode", MODES)
def test_outcomes_and_isolation(mode: str) -> None:
    if mode == "namespaces" and sandbox.isolation() != "namespaces":
        pytest.skip("this kernel refuses the sandbox namespaces")
    programs = [p for p, _ in PLAIN.values()] + [PLAIN["cwd"][0]]
    results = sandbox.run_many(programs, Limits(wall_s=20.0), workers=4, mode=mode)
    for (name, (_, expected)), r in zip(PLAIN.items(), results, strict=False):
        assert r.outcome == expected, (name, r)
    assert "lost sys.stdin" in results[6].detail, results[6]
    cwds = [r.stdout.strip() for r in results[-2:]]
    assert cwds[0] != cwds[1] and not any(Path(c).exists() for c in cwds)


@pytest.mark.claim("SANDBOX-009")
@pytest.mark.parametrize("child", ["silent", "setup_fails"])
def test_broken_sandbox_raises(child: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "child.py"
    body = {
        "silent": "import sys\nsys.exit(0)\n",
        "setup_fails": (
            "import marshal, os, sys\ncfg = marshal.loads(sys.stdin.buffer.read())\n"
            "os.write(cfg['status_fd'], f\"{cfg['nonce']}\\tsetup\\tOSError: boom\\n\".encode())\nsys.exit(125)\n"
        ),
    }[child]
    script.write_text(body)
    monkeypatch.setattr(sandbox, "CHILD", script)
    with pytest.raises(SandboxError, match="boom" if child == "setup_fails" else "before confining"):
        sandbox.run("print('never scored')", mode="guard")
