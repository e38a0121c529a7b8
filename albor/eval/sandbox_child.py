"""The child side of the sandbox: confine this process, then run the untrusted program in it.

``albor.eval.sandbox`` starts this file as ``python -P -s -S -B sandbox_child.py`` with the
configuration (a ``marshal`` dict) on standard input, so it imports only modules built into the
interpreter or cheap to load. It reports on the status pipe, one line each, prefixed by the nonce
the harness chose: ``started`` once the confinement is in place, then the program's outcome. A
program can exit early or die before it reports; that is why the harness never takes silence for a
pass.

``namespaces`` mode: new mount, network, PID, IPC and UTS namespaces. The launcher (outside the PID
namespace) waits for the namespace's init, which makes the whole file tree read-only, mounts a
size-capped tmpfs over the work dir and a fresh /proc, then forks the program process and reaps.
When the init exits the kernel kills everything left in the PID namespace, so no descendant
outlives a run; the launcher enforces the wall-time limit by killing the init, and exits only after
the namespace is empty.

``guard`` mode (where the kernel refuses namespaces): an audit hook, installed before the program's
first line, refuses sockets, process creation, signals, ctypes and writes outside the work dir.

In both modes a root harness drops the program to an unprivileged uid of its own (so RLIMIT_NPROC
holds and the harness cannot be signalled), and the resource limits are set before it starts.
"""

import ctypes
import marshal
import os
import resource
import select
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x1000, 0x4000, 0x40000
PR_SET_PDEATHSIG, PR_SET_KEEPCAPS, PR_SET_NO_NEW_PRIVS = 1, 8, 38
LINUX_CAPABILITY_VERSION_3, CAP_DAC_READ_SEARCH = 0x20080522, 2
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = 442, -100, 0x8000, 0x1
SIGKILL = 9
DETAIL_CHARS = 300

_libc = ctypes.CDLL(None, use_errno=True)


class SetupError(Exception):
    """The confinement could not be put in place; the harness raises, it never scores this."""


def _call(what: str, rc: int) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)} (errno {err})")


def _report(cfg: dict, outcome: str, detail: str = "") -> None:
    line = f"{cfg['nonce']}\t{outcome}\t{detail.replace(chr(10), ' ')[:DETAIL_CHARS]}\n"
    os.write(cfg["status_fd"], line.encode("utf-8", "replace"))


def _exit_as(status: int) -> None:
    """Leave with the waited-for child's status: its exit code, or 128 + the signal that killed it."""
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status))


def _wait_for(pid: int) -> int:
    """Reap children (orphans land on a namespace's init) until ``pid`` ends; return its status."""
    while True:
        done, status = os.wait()
        if done == pid:
            return status


def _wait_for_init(init: int, cfg: dict) -> int:
    """The launcher's wait, with the wall-time limit: past it, kill the namespace's init.

    The init's exit kills every process left in its PID namespace and completes only once they are
    gone, so when this returns nothing the program started is still alive.
    """
    pidfd = os.pidfd_open(init)
    if not select.select([pidfd], [], [], cfg["wall_s"])[0]:
        os.kill(init, SIGKILL)
        os.waitpid(init, 0)
        _report(cfg, "timed out", f"wall time over {cfg['wall_s']} s")
        os._exit(0)
    return os.waitpid(init, 0)[1]


def _enter_namespaces(cfg: dict) -> None:
    """Returns only in the program process, pid 2 of a fresh PID namespace."""
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    _call("unshare", _libc.unshare(flags))
    # Private first: nothing mounted below may propagate back to the host's mount table.
    _call("make / private", _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None))
    init = os.fork()
    if init:
        _exit_as(_wait_for_init(init, cfg))
    _libc.prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0)
    _bind_stdlib(cfg["stdlib_mount"])
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_RDONLY, 0, 0, 0)
    _call(
        "make / read-only",
        _libc.syscall(
            ctypes.c_long(SYS_MOUNT_SETATTR),
            ctypes.c_int(AT_FDCWD),
            ctypes.c_char_p(b"/"),
            ctypes.c_uint(AT_RECURSIVE),
            attr,
            ctypes.c_size_t(ctypes.sizeof(attr)),
        ),
    )
    uid = cfg["uid"] if os.geteuid() == 0 else os.getuid()
    options = f"size={cfg['disk_bytes']},mode=0700,uid={uid},gid={uid}".encode()
    _call("tmpfs work dir", _libc.mount(b"tmpfs", cfg["workdir"].encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options))
    _call("mount /proc", _libc.mount(b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None))
    program = os.fork()
    if program:
        _exit_as(_wait_for(program))


def _bind_stdlib(target: str) -> None:
    """Bind the interpreter's installation at ``target`` and import from there.

    The unprivileged uid may not traverse the installation's own path (a home directory of mode
    0700, say); ``target`` lies in the harness's temp dir, which it may.
    """
    prefix = os.path.realpath(sys.base_prefix)
    _call("bind the standard library", _libc.mount(prefix.encode(), target.encode(), None, MS_BIND | MS_REC, None))

    def moved(paths: list[str]) -> list[str]:
        return [target + p[len(prefix) :] if p.startswith(prefix + "/") else p for p in map(os.path.realpath, paths)]

    sys.path[:] = moved(sys.path)
    # Packages imported already (encodings, say) find their submodules through their own __path__.
    for module in list(sys.modules.values()):
        path = getattr(module, "__path__", None)
        if isinstance(path, list):
            path[:] = moved(path)


def _keep_read_capability() -> None:
    """In ``guard`` mode a root harness's program keeps CAP_DAC_READ_SEARCH alone across the uid change.

    Without a mount namespace there is no other way to let it import a standard library that lies
    under a directory only root may traverse; it still cannot write, signal or fork past its limit.
    """

    class Header(ctypes.Structure):
        _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))

    data = (ctypes.c_uint32 * 6)(1 << CAP_DAC_READ_SEARCH, 1 << CAP_DAC_READ_SEARCH, 0, 0, 0, 0)
    _call("capset", _libc.capset(ctypes.byref(Header(LINUX_CAPABILITY_VERSION_3, 0)), data))


def _confine(cfg: dict) -> None:
    """Resource limits, then the unprivileged uid, then no way back to privileges."""
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
        uid = cfg["uid"]
        if cfg["mode"] == "guard":
            os.chown(cfg["workdir"], uid, uid)
        guard = cfg["mode"] == "guard"
        if guard:
            _call("keep capabilities", _libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
        if guard:
            _keep_read_capability()
    _call("no_new_privs", _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    os.chdir(cfg["workdir"])


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


def _run(cfg: dict) -> None:
    """Run the program as ``__main__`` and report how it ended; never returns."""
    sys.argv = ["program.py"]
    outcome, detail = "passed", ""
    try:
        code = compile(cfg["program"], "program.py", "exec")
        exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
    except AssertionError as e:
        outcome, detail = "failed", f"AssertionError: {e}"
    except SystemExit as e:
        outcome, detail = "error", f"exited before the end (SystemExit: {e.code!r})"
    except BaseException as e:
        outcome, detail = "error", f"{type(e).__name__}: {e}"
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            outcome, detail = "error", detail or "output could not be written (file size limit)"
    _report(cfg, outcome, detail)
    os._exit(0)


def main() -> None:
    cfg = marshal.loads(sys.stdin.buffer.read())
    sys.stdin.close()
    sys.stdin = sys.__stdin__ = None
    try:
        if cfg["mode"] == "namespaces":
            _enter_namespaces(cfg)
        _confine(cfg)
        _report(cfg, "started")
        if cfg["mode"] == "guard":
            _install_guard(cfg["workdir"])
    except BaseException as e:
        _report(cfg, "setup", f"{type(e).__name__}: {e}")
        os._exit(125)
    _run(cfg)


if __name__ == "__main__":
    main()
