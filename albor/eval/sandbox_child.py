"""The child side of the sandbox: confine a program and its check, and report exactly one outcome.

``albor.eval.sandbox`` starts this file as ``python -P -s -S -B sandbox_child.py``, with the configuration
(a ``marshal`` dict) on standard input and the check's source on a descriptor of its own. It imports nothing
beside it, and only modules that come with the interpreter.

Three processes run a program:

- the supervisor: in ``namespaces`` mode the init of fresh PID, mount, network, IPC and UTS namespaces
  (the launcher outside them only waits for it), in ``guard`` mode the launcher itself. It keeps its
  privileges, is not dumpable (no process of the run may read its memory or descriptors), forks the two
  others, enforces the wall time, and alone writes the status pipe: one line, the outcome, once every
  process of the run is gone.
- the program process, under an unprivileged uid of its own: runs the untrusted program, then answers
  the check's calls of its functions.
- the check process, under another uid, not dumpable: reads the trusted check's source from its
  descriptor (opened after the program process was forked, so the program never holds it in any
  memory), waits for the program to load, then runs the check, whose ``remote(name)`` calls the
  program's function ``name``. Arguments and results cross a pipe as data only (``encode``, ``decode``),
  so nothing of the program's ever runs in the check, and the check's verdict reaches the supervisor on
  a pipe the program does not hold.

``namespaces`` mode: the file tree is a fresh tmpfs holding only what a program needs, read-only: the
standard library (its ``site-packages`` hidden), the shared libraries its extension modules load,
``/dev/null``, ``/dev/zero`` and ``/dev/urandom``; plus a size-capped tmpfs work dir and a ``/proc`` in
which each uid sees only its own processes. The program and check processes run in a memory cgroup of
the run's own, capped at ``memory_bytes`` for all their processes together. The init's exit kills
everything left in the PID namespace.

``guard`` mode (only when asked for by name): an audit hook, installed before the program's first line,
refuses sockets, process creation, signals, ctypes and writes outside the work dir. It contains the
accidents of a program, not a hostile one (see ``contracts/sandbox.yaml``).
"""

import builtins
import contextlib
import ctypes
import json
import marshal
import os
import resource
import select
import signal
import struct
import sys
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 0x1, 0x2, 0x4, 0x8, 0x20
MS_BIND, MS_REC, MS_PRIVATE, MNT_DETACH = 0x1000, 0x4000, 0x40000, 0x2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
DETAIL_CHARS = 300
MAX_MESSAGE = 64 << 20
# The shared libraries that the standard library's extension modules load live here.
LIBRARY_DIRS = ("/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/local/lib")
FILES = ("/etc/ld.so.cache", "/dev/null", "/dev/zero", "/dev/urandom")
CGROUP = "/sys/fs/cgroup"
VERDICTS = ("passed", "failed", "error", "lost", "setup")

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """The confinement could not be put in place; the harness raises, it never scores this."""


class ProgramLost(BaseException):
    """The program process stopped answering (it exited or was killed); the supervisor says why."""


class ProtocolError(BaseException):
    """The program process sent something that is not an answer; a BaseException, so no check catches it."""


class ProgramEnded(BaseException):
    """The program raised SystemExit: it left before the end."""


class ProgramError(Exception):
    """An exception of the program's whose class is not a builtin one."""


def _call(what: str, rc: int) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)} (errno {err})")


def _line(outcome: str, detail: str) -> bytes:
    return f"{outcome}\t{detail.replace(chr(10), ' ')[:DETAIL_CHARS]}\n".encode("utf-8", "replace")


# -- values between the program and its check ---------------------------------------------------------

_CONTAINERS = {"l": list, "t": tuple, "s": set, "F": frozenset}


def encode(value: object) -> object:
    """``value`` as JSON data that keeps its type; only builtin data passes between program and check."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"f": float.hex(value)}
    if isinstance(value, complex):
        return {"c": [float.hex(value.real), float.hex(value.imag)]}
    if isinstance(value, bytes):
        return {"b": value.hex()}
    if isinstance(value, dict):
        return {"d": [[encode(k), encode(v)] for k, v in value.items()]}
    for tag, kind in _CONTAINERS.items():
        if isinstance(value, kind):
            return {tag: [encode(v) for v in value]}
    raise TypeError(
        f"a {type(value).__name__} cannot pass between the program and its check: only None, bool, int, "
        "float, complex, str, bytes, list, tuple, dict, set and frozenset can"
    )


def decode(data: object) -> object:
    """The value ``encode`` gave ``data`` for, built from builtin types only; ValueError if it is none."""
    if data is None or type(data) in (bool, int, str):
        return data
    if type(data) is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag == "f":
            return float.fromhex(body)
        if tag == "c":
            return complex(float.fromhex(body[0]), float.fromhex(body[1]))
        if tag == "b":
            return bytes.fromhex(body)
        if tag == "d" and type(body) is list:
            return {decode(k): decode(v) for k, v in body}
        if tag in _CONTAINERS and type(body) is list:
            return _CONTAINERS[tag](decode(v) for v in body)
    raise ValueError(f"not an encoded value: {str(data)[:80]}")


def _frame(message: list) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">I", len(data)) + data


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _send(fd: int, message: list) -> None:
    _write_all(fd, _frame(message))


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _recv(fd: int) -> list:
    """One message; EOFError when the other side hung up, ValueError when it is not a message."""
    (size,) = struct.unpack(">I", _read_exactly(fd, 4))
    if size > MAX_MESSAGE:
        raise ValueError(f"a message of {size} bytes, over the limit of {MAX_MESSAGE}")
    message = json.loads(_read_exactly(fd, size))
    if type(message) is not list or not message or type(message[0]) is not str:
        raise ValueError("not a message")
    return message


# -- the program process ------------------------------------------------------------------------------


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def _answer(run) -> bytes:
    """Run ``run()`` (the program's code); the message that says how it went."""
    try:
        result = run()
        _flush()
        return _frame(["returned", encode(result)])
    except BaseException as e:
        return _frame(["raised", type(e).__name__, str(e)[:DETAIL_CHARS]])


def _program(cfg: dict, calls: int, answers: int) -> None:
    """Confine, run the program, then answer the check's calls until it hangs up; never returns."""
    try:
        if cfg["mode"] == "guard" and os.geteuid() == 0:
            os.chown(cfg["workdir"], cfg["uid"], cfg["uid"])
        _confine(cfg, cfg["uid"], cfg["workdir"], undumpable=False)
        if cfg["mode"] == "guard":
            _install_guard(cfg["workdir"])
    except BaseException as e:
        _send(answers, ["setup", f"{type(e).__name__}: {e}"])
        os._exit(125)
    _send(answers, ["confined"])
    namespace = {"__name__": "__main__", "__builtins__": builtins}
    sys.argv = ["program.py"]
    _write_all(answers, _answer(lambda: exec(compile(cfg["program"], "program.py", "exec"), namespace)))

    def call(name: object, args: object, kwargs: object) -> object:
        if type(name) is not str or name not in namespace:
            raise NameError(f"name {name!r} is not defined")
        return namespace[name](*decode(args), **decode(kwargs))

    while True:
        try:
            _, name, args, kwargs = _recv(calls)
        except (EOFError, ValueError):
            os._exit(0)
        _write_all(answers, _answer(lambda: call(name, args, kwargs)))  # noqa: B023 (called at once)


# -- the check process --------------------------------------------------------------------------------


def _rebuilt(name: str, message: str) -> BaseException:
    """The program's exception as the check sees it: the builtin class of that name, else ProgramError."""
    cls = getattr(builtins, name, None)
    if name == "SystemExit":
        exc: BaseException = ProgramEnded(f"exited before the end (SystemExit: {message})")
    elif isinstance(cls, type) and issubclass(cls, Exception):
        try:
            exc = cls(message)
        except Exception:
            exc = ProgramError(message)
    else:
        exc = ProgramError(message)
    exc.sandbox_detail = f"{name}: {message}" if name != "SystemExit" else str(exc)
    return exc


def _unpack(answers: int) -> object:
    """The program's next answer: its value, or its exception raised here."""
    # Whatever goes wrong reading an answer (a message nested too deep, say) is a ProtocolError, which no
    # check can catch as the program's own exception.
    try:
        reply = _recv(answers)
    except EOFError:
        raise ProgramLost from None
    except Exception as e:
        raise ProtocolError(f"the program sent {e}") from None
    if reply[0] == "returned" and len(reply) == 2:
        try:
            return decode(reply[1])
        except Exception as e:
            raise ProtocolError(f"the program's answer cannot be read: {type(e).__name__}: {e}") from None
    if reply[0] == "raised" and len(reply) == 3 and all(type(x) is str for x in reply[1:]):
        raise _rebuilt(reply[1], reply[2])
    raise ProtocolError("the program sent something that is not an answer")


def _remote(answers: int, calls: int):
    def remote(name: str):
        """The program's function ``name``, called in the program process."""

        def call(*args: object, **kwargs: object) -> object:
            try:
                _send(calls, ["call", name, encode(list(args)), encode(kwargs)])
            except BrokenPipeError:
                raise ProgramLost from None
            return _unpack(answers)

        call.__name__ = call.__qualname__ = name
        return call

    return remote


def _judge(source: str, answers: int, calls: int) -> tuple[str, str]:
    """The verdict: wait for the program to load, then run the check against it."""
    try:
        first = _recv(answers)
        if first != ["confined"]:
            return "setup", f"program process: {first[1:]}"
    except (EOFError, ValueError):
        return "setup", "the program process ended before its confinement was in place"
    try:
        _unpack(answers)  # the program's load: raises what the program raised
        exec(compile(source, "check.py", "exec"), {"__name__": "__main__", "remote": _remote(answers, calls)})
        _flush()
    except ProgramLost:
        return "lost", ""
    except AssertionError as e:
        return "failed", getattr(e, "sandbox_detail", None) or f"AssertionError: {e}"
    except BaseException as e:
        return "error", getattr(e, "sandbox_detail", None) or f"{type(e).__name__}: {e}"
    return "passed", ""


def _check(cfg: dict, answers: int, calls: int, verdict: int) -> None:
    """Confine, read the check's source, judge, and hand the verdict to the supervisor; never returns."""
    try:
        _confine(cfg, cfg["uid"] + 1, "/", undumpable=True)
        chunks = []
        while chunk := os.read(cfg["check_fd"], 1 << 20):
            chunks.append(chunk)
        os.close(cfg["check_fd"])
        source = b"".join(chunks).decode("utf-8")
    except BaseException as e:
        os.write(verdict, _line("setup", f"check process: {type(e).__name__}: {e}"))
        os._exit(125)
    os.write(verdict, _line(*_judge(source, answers, calls)))
    os._exit(0)


# -- confinement --------------------------------------------------------------------------------------


def _keep_only(keep: list[int]) -> None:
    """Close every descriptor above 2 except ``keep``."""
    low = 3
    for fd in sorted(set(keep)):
        if fd >= low:
            os.closerange(low, fd)
            low = fd + 1
    os.closerange(low, resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def _move_imports(mapping) -> None:
    """Import from ``mapping(path)`` for every path of ``sys.path``, in packages imported already too."""
    sys.path[:] = map(mapping, sys.path)
    for module in list(sys.modules.values()):
        path = getattr(module, "__path__", None)
        if isinstance(path, list):
            path[:] = map(mapping, path)


def _reach_stdlib() -> None:
    """Guard mode under root: import through descriptors opened while still root.

    The unprivileged uid may not traverse the installation's path (a home dir of mode 0700, say); a
    path through ``/proc/self/fd`` skips the checks of the directories above the one opened, and grants
    nothing else.
    """
    opened = {}
    for path in sys.path:
        real = os.path.realpath(path)
        if os.path.isdir(real) and real not in opened:
            opened[real] = f"/proc/self/fd/{os.open(real, os.O_RDONLY | os.O_DIRECTORY)}"

    def mapping(path: str) -> str:
        real = os.path.realpath(path)
        for base, fd_path in opened.items():
            if real == base or real.startswith(base + "/"):
                return fd_path + real[len(base) :]
        return path

    _move_imports(mapping)


def _confine(cfg: dict, uid: int, cwd: str, undumpable: bool) -> None:
    """Resource limits, then an unprivileged uid (under root), then no way back to privileges."""
    # SIGXCPU at cpu_s, SIGKILL a second later for a program that ignores it: by then its CPU time, as
    # wait4 reports it (a little behind the kernel's own count), is over cpu_s, whatever signal ended it.
    cpu = cfg["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    for limit, value in (
        (resource.RLIMIT_AS, cfg["memory_bytes"]),
        (resource.RLIMIT_FSIZE, cfg["file_bytes"]),
        (resource.RLIMIT_NPROC, cfg["processes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    if os.geteuid() == 0:
        if cfg["mode"] == "guard":
            _reach_stdlib()
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    # After the uid change, which clears both.
    _call("parent-death signal", _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))
    if undumpable:
        _call("not dumpable", _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0))
    _call("no_new_privs", _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    os.chdir(cwd)


def _install_guard(workdir: str) -> None:
    """Audit hook for ``guard`` mode: refuse what the namespaces would have contained."""
    root = os.path.realpath(workdir)
    refused_prefixes = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork")
    refused = {"os.system", "os.kill", "os.killpg", "signal.pthread_kill", "pty.spawn"}
    path_events = {
        "os.remove",
        "os.rmdir",
        "os.rename",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.symlink",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
    }
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    # Modules whose functions start processes without raising an audit event of their own.
    refused_imports = {"_posixsubprocess"}
    realpath, fspath = os.path.realpath, os.fspath

    def inside(path: object) -> bool:
        if isinstance(path, int):
            return True
        p = realpath(fspath(path))
        if isinstance(p, bytes):
            p = p.decode("utf-8", "surrogateescape")
        return p == root or p.startswith(root + "/")

    def hook(event: str, args: tuple) -> None:
        if event in refused or event.startswith(refused_prefixes):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0] in refused_imports:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            writes = (flags or 0) & write_flags or (isinstance(mode, str) and any(c in mode for c in "wax+"))
            if writes and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the work dir is not allowed")
        elif event in path_events:
            # A symlink's target may lie outside; opening through it is checked by the open event.
            paths = {"os.rename": args[:2], "os.link": args[:2], "os.symlink": args[1:2]}.get(event, args[:1])
            for path in paths:
                if not inside(path):
                    raise PermissionError(f"sandbox: {event} on {path!r} outside the work dir is not allowed")

    sys.addaudithook(hook)


# -- namespaces: the file tree and the memory cgroup --------------------------------------------------


def _mount(source: bytes | None, target: str, fstype: bytes | None, flags: int, options: bytes | None) -> None:
    _call(f"mount {target}", _libc.mount(source, target.encode(), fstype, flags, options))


def _tree() -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """What the program's file tree holds: directories bound read-only, symlinks, package dirs hidden."""
    dirs, links = [], []
    for path in LIBRARY_DIRS:
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            dirs.append(path)
    dirs += [p for p in sys.path if os.path.isdir(p)]
    kept: list[str] = []
    for d in sorted(set(dirs), key=len):
        if not any(d == k or d.startswith(k + "/") for k in kept):
            kept.append(d)
    hidden = []
    for d in kept:
        bases = [d] + [e.path for e in os.scandir(d) if e.name.startswith("python") and e.is_dir(follow_symlinks=False)]
        for base in bases:
            for name in ("site-packages", "dist-packages"):
                path = os.path.join(base, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    hidden.append(path)
    return kept, links, hidden


def _build_root(cfg: dict) -> None:
    """Replace the file tree by a tmpfs holding only what the program needs, read-only, and the work dir."""
    _move_imports(os.path.realpath)  # the tree below holds each directory at its real path only
    root = cfg["root"]
    _mount(b"tmpfs", root, b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755,size=1m")
    dirs, links, hidden = _tree()
    for path in dirs:
        os.makedirs(root + path, mode=0o755, exist_ok=True)
        _mount(path.encode(), root + path, None, MS_BIND, None)
        _mount(None, root + path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    for path, target in links:
        os.makedirs(os.path.dirname(root + path), mode=0o755, exist_ok=True)
        os.symlink(target, root + path)
    for path in FILES:
        if os.path.exists(path):
            os.makedirs(os.path.dirname(root + path), mode=0o755, exist_ok=True)
            open(root + path, "w").close()
            _mount(path.encode(), root + path, None, MS_BIND, None)
            _mount(None, root + path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID, None)
    for path in hidden:
        _mount(b"tmpfs", root + path, b"tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, b"size=4k")
    uid = cfg["uid"]
    os.makedirs(root + cfg["workdir"], mode=0o755)
    options = f"size={cfg['disk_bytes']},mode=0700,uid={uid},gid={uid}".encode()
    _mount(b"tmpfs", root + cfg["workdir"], b"tmpfs", MS_NOSUID | MS_NODEV, options)
    os.mkdir(root + "/proc")
    os.mkdir(root + "/.old")
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise SetupError(f"pivot_root: no system call number known for {os.uname().machine}")
    _call("pivot_root", _libc.syscall(ctypes.c_long(number), root.encode(), (root + "/.old").encode()))
    os.chdir("/")
    _call("detach the host's tree", _libc.umount2(b"/.old", MNT_DETACH))
    os.rmdir("/.old")
    # hidepid=2: a uid sees only its own processes (the program not the check's, nor the init's).
    _mount(b"proc", "/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, b"hidepid=2")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _make_cgroup(limit: int) -> tuple[str, int, int]:
    """A memory cgroup of the run's own, capped at ``limit`` bytes: its path, its procs and its OOM counts open.

    The unified hierarchy (v2) where the memory controller is there, else the v1 memory hierarchy.
    """
    name = f"albor-sandbox-{os.getpid()}"
    try:
        if os.path.exists(f"{CGROUP}/cgroup.controllers"):
            if "memory" not in _read(f"{CGROUP}/cgroup.controllers").split():
                raise SetupError("the cgroup v2 hierarchy has no memory controller")
            if "memory" not in _read(f"{CGROUP}/cgroup.subtree_control").split():
                _write(f"{CGROUP}/cgroup.subtree_control", "+memory")
            path, events = f"{CGROUP}/{name}", "memory.events"
            os.mkdir(path, 0o700)
            _write(f"{path}/memory.max", str(limit))
            _write(f"{path}/memory.oom.group", "1")
            if os.path.exists(f"{path}/memory.swap.max"):
                _write(f"{path}/memory.swap.max", "0")
        else:
            own = [
                line.split(":", 2)[2].strip() for line in _read("/proc/self/cgroup").splitlines() if ":memory:" in line
            ]
            if not own:
                raise SetupError("no cgroup v2 hierarchy and no v1 memory controller")
            path, events = f"{CGROUP}/memory{own[0].rstrip('/')}/{name}", "memory.oom_control"
            os.mkdir(path, 0o700)
            _write(f"{path}/memory.limit_in_bytes", str(limit))
            if os.path.exists(f"{path}/memory.memsw.limit_in_bytes"):
                _write(f"{path}/memory.memsw.limit_in_bytes", str(limit))
        return path, os.open(f"{path}/cgroup.procs", os.O_WRONLY), os.open(f"{path}/{events}", os.O_RDONLY)
    except OSError as e:
        raise SetupError(f"memory cgroup: {e}") from e


def _oom_kills(events_fd: int) -> int:
    for line in os.pread(events_fd, 4096, 0).decode().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


def _leave_after(init: int, parent_fd: int, name: str) -> None:
    """The launcher: wait for the init (which reports), remove the run's cgroup, and leave; never raises.

    The cgroup goes through a descriptor of its parent: the init's pivot_root moved this process's root too.
    """
    status = os.waitpid(init, 0)[1]
    for _ in range(100):
        try:
            os.rmdir(name, dir_fd=parent_fd)
            break
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(0.01)  # the last of the run's processes are still leaving the cgroup
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _enter_namespaces(cfg: dict) -> tuple[int, int]:
    """Returns only in the init of the new namespaces: the cgroup's procs and OOM-count descriptors."""
    path, procs, events = _make_cgroup(cfg["memory_bytes"])
    parent_fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
        _call("unshare", _libc.unshare(flags))
        # Private first: nothing mounted below may propagate back to the host's mount table.
        _mount(b"none", "/", None, MS_REC | MS_PRIVATE, None)
        init = os.fork()
    except BaseException:
        os.rmdir(path)
        raise
    if init:
        _leave_after(init, parent_fd, os.path.basename(path))
    os.close(parent_fd)
    _call("parent-death signal", _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0))
    _build_root(cfg)
    return procs, events


# -- the supervisor -----------------------------------------------------------------------------------


def _spawn(keep: list[int], cgroup_procs: int | None, target, *args: object) -> int:
    pid = os.fork()
    if pid:
        return pid
    try:
        if cgroup_procs is not None:
            os.write(cgroup_procs, b"0")  # join the run's memory cgroup before anything else
        _keep_only(keep)
        target(*args)
    except BaseException:
        sys.excepthook(*sys.exc_info())
    os._exit(126)


def _ending(status: int) -> str:
    if not os.WIFSIGNALED(status):
        return f"exited with code {os.WEXITSTATUS(status)}"
    number = os.WTERMSIG(status)
    try:
        return f"killed by {signal.Signals(number).name}"
    except ValueError:  # a real-time signal has no name of its own
        return f"killed by signal {number}"


def fate(status: int, cpu_s: float, cfg: dict) -> tuple[str, str]:
    """How the program process ended, from its wait status and CPU time (which a program cannot mask)."""
    # RLIMIT_CPU's SIGXCPU says it even when wait4's CPU time, which lags the kernel's count, is under cpu_s.
    xcpu = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXCPU
    if cpu_s >= cfg["cpu_s"] or xcpu:
        return "timed out", f"CPU time over {cfg['cpu_s']} s"
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXFSZ:
        return "error", f"file size limit ({cfg['file_bytes']} bytes)"
    return "error", f"{_ending(status)} before the end"


def _reap(watched: set[int], fates: dict[int, tuple[int, float]]) -> None:
    """Reap every ended child (orphans land on a namespace's init); keep the fates of ``watched``."""
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in watched:
            fates[pid] = (status, usage.ru_utime + usage.ru_stime)


def _await(pids: dict[int, int], watched: set[int], fates: dict, deadline: float, cfg: dict) -> tuple[str, str] | None:
    """Wait until one of ``pids`` (pid -> pidfd) ends; the outcome instead if the wall time runs out first."""
    while True:
        _reap(watched, fates)
        if fates.keys() & pids.keys():
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timed out", f"wall time over {cfg['wall_s']} s"
        # Wake now and then to reap orphans, whose zombies would count against RLIMIT_NPROC.
        select.select(list(pids.values()), [], [], min(remaining, 0.1))


def _end_program(cfg: dict) -> None:
    """When the program process ends, so do the processes it started (they may hold its answers pipe).

    A helper under the program's uid sends SIGKILL to every process it may signal: exactly the program's
    (the check and the init have other uids), all at once, so no fork escapes. Guard mode refuses forks.
    """
    if cfg["mode"] != "namespaces":
        return
    helper = os.fork()
    if helper == 0:
        try:
            os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
        finally:
            os._exit(0)
    os.waitpid(helper, 0)


def _end_all(cfg: dict, watched: set[int], fates: dict) -> None:
    """Kill every process of the run and reap it."""
    if cfg["mode"] == "namespaces":
        with contextlib.suppress(ProcessLookupError):
            os.kill(-1, signal.SIGKILL)  # from the init: every process in its PID namespace
        while True:
            try:
                os.wait()
            except ChildProcessError:
                return
    for pid in watched - fates.keys():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _verdict(fd: int, check_fate: tuple[int, float], cfg: dict) -> tuple[str, str]:
    """The check's one verdict line; if there is not exactly one, the check died, and never passes."""
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    lines = data.decode("utf-8", "replace").splitlines()
    if len(lines) == 1:
        outcome, _, detail = lines[0].partition("\t")
        if outcome in VERDICTS:
            return outcome, detail
    status, cpu = check_fate
    if cpu >= cfg["cpu_s"]:
        return "timed out", f"CPU time over {cfg['cpu_s']} s (in the check)"
    return "error", f"the check ended without a verdict ({_ending(status)})"


def _supervise(cfg: dict, cgroup: tuple[int, int] | None) -> tuple[str, str]:
    """Fork the program and check processes, wait for the verdict, end them all; the run's one outcome."""
    deadline = time.monotonic() + cfg["wall_s"]
    calls_r, calls_w = os.pipe()
    answers_r, answers_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    program = _spawn([calls_r, answers_w], cgroup and cgroup[0], _program, cfg, calls_r, answers_w)
    check = _spawn([answers_r, calls_w, verdict_w, cfg["check_fd"]], None, _check, cfg, answers_r, calls_w, verdict_w)
    pidfds = {program: os.pidfd_open(program), check: os.pidfd_open(check)}
    for fd in (calls_r, calls_w, answers_r, answers_w, verdict_w, cfg["check_fd"], *(cgroup[:1] if cgroup else ())):
        os.close(fd)
    watched, fates = {program, check}, {}
    outcome = None
    while check not in fates and outcome is None:
        outcome = _await({p: fd for p, fd in pidfds.items() if p not in fates}, watched, fates, deadline, cfg)
        if program in fates and check not in fates:
            _end_program(cfg)
    if outcome is None:
        outcome = _verdict(verdict_r, fates[check], cfg)
        if outcome[0] == "lost":
            outcome = _await({program: pidfds[program]}, watched, fates, deadline, cfg) or fate(*fates[program], cfg)
    _end_all(cfg, watched, fates)
    if cgroup and _oom_kills(cgroup[1]):
        outcome = "error", f"memory over {cfg['memory_bytes']} bytes (all the program's processes together)"
    return outcome


def main() -> None:
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    cfg = marshal.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    sys.stdin = sys.__stdin__ = None
    try:
        cgroup = _enter_namespaces(cfg) if cfg["mode"] == "namespaces" else None
        outcome = _supervise(cfg, cgroup)
    except BaseException as e:
        outcome = "setup", f"{type(e).__name__}: {e}"
    os.write(cfg["status_fd"], _line(*outcome))
    os._exit(0)


if __name__ == "__main__":
    main()
