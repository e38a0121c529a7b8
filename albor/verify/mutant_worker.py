"""A mutant worker: runs pytest jobs against its own copy of the tree, each in a fresh fork.

The worker imports the heavy libraries (torch, hypothesis, pyarrow, …) once; every job forks it, so
a job costs its tests and not the interpreter's start. It imports no ``albor`` module and must be
started by path (``python …/mutant_worker.py TREE``): each forked child imports the copy's
``albor``, with the job's mutated file in place.

Jobs arrive as JSON lines on stdin, ``{"files", "tests", "exitfirst", "timeout", "coverage"}``
(``files`` maps repository-relative paths to the sources they hold for the job; empty for the copy
as it is); each reply is one JSON line on stdout with pytest's exit status, the JUnit XML, the
output's tail, whether it timed out, and with ``coverage`` (the repository-relative files to measure:
a contract's sources) the lines of those files each test ran, in this process and in every subprocess
it started, and whether the job compiled a frame with torch.compile (whose lines coverage cannot see).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.metadata
import json
import os
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from xml.etree import ElementTree

PRELOAD = (
    "torch",
    # torch's compiler and distributed parts take about 1.6 s to import: every trainer and checkpoint job
    # would pay it again.
    "torch._dynamo",
    "torch._inductor",
    "torch.distributed.checkpoint",
    "torch.distributed.fsdp",
    "transformers",
    "peft",
    "numpy",
    "pytest",
    "hypothesis",
    "pyarrow.parquet",
    "tokenizers",
    "datasketch",
    "pydantic",
    "yaml",
    "safetensors.torch",
    "regex",
    "tqdm",
    "coverage",
    "triton",
)
WORKER_FAILED = 70  # the child failed before pytest ran: the runner's fault, not the mutant's
# Started by every Python process of a coverage job (the tree is first on PYTHONPATH).
SITECUSTOMIZE = "import coverage\n\ncoverage.process_startup()\n"


def preload() -> None:
    """Import the heavy libraries and pytest's plugins, so that no forked child pays for them.

    Nothing here may ask torch about CUDA: ``torch.cuda.is_available()`` initialises CUDA in the asking
    process, and a child forked after that cannot use the GPU, so every CUDA falsifier would fail in
    the jobs. Triton reads TRITON_INTERPRET when it is imported, so the runner that starts the worker
    sets it on a machine without CUDA (``albor.verify.generated.Workers``).
    """
    plugins = [ep.value.partition(":")[0] for ep in importlib.metadata.entry_points(group="pytest11")]
    for name in [*PRELOAD, *plugins]:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` in the process tree, read from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def _kill_descendants() -> None:
    """SIGKILL every process below this one, until none is left (one may start another meanwhile)."""
    for _ in range(10):
        pids = descendants(os.getpid())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _reap() -> None:
    """Collect the exit status of every child left, so none stays a zombie."""
    with contextlib.suppress(ChildProcessError):
        while True:
            os.waitpid(-1, 0)


def _drop_pyc(source: Path) -> None:
    """Remove the cached bytecode of ``source``: a mutant and the original must never see each other's."""
    for pyc in (source.parent / "__pycache__").glob(f"{source.stem}.*.pyc"):
        pyc.unlink(missing_ok=True)


def _coverage_rc(tree: Path, data: Path, sources: list[str]) -> Path:
    """A coverage config that measures ``sources`` (repository-relative files) only, in every process, also one
    ended by SIGTERM (a server stopped by its test, which uvicorn ends by re-raising the signal)."""
    rc = tree / ".mutant-coveragerc"
    include = ",".join(str(tree / f) for f in sources)
    rc.write_text(f"[run]\ndata_file = {data}/cov\nparallel = true\nsigterm = true\ninclude = {include}\n")
    return rc


def _child(tree: Path, job: dict, work: Path) -> None:
    """Run the job's tests in this forked process, then exit with pytest's status."""
    os.setpgid(0, 0)  # a group of its own: a signal meant for the job never reaches the worker
    log = os.open(work / "log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.chdir(tree)
    sys.path.insert(0, str(tree))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])
    cov = None
    if job.get("coverage"):
        import coverage

        rc = _coverage_rc(tree, work / "coverage", job["coverage"])
        (tree / "sitecustomize.py").write_text(SITECUSTOMIZE)
        os.environ["COVERAGE_PROCESS_START"] = str(rc)
        cov = coverage.Coverage(config_file=str(rc))
        cov.start()
    import pytest

    args = ["-q", "-p", "no:cacheprovider", f"--junitxml={work / 'junit.xml'}", f"--basetemp={work / 'tmp'}"]
    code = pytest.main([*args, *(["-x"] if job.get("exitfirst") else []), *job["tests"]])
    if cov is not None:
        cov.stop()
        cov.save()
        # Coverage sees no line of a frame torch.compile traced (Dynamo runs its graph, not its Python): the
        # reply says the job compiled one, so that the lines measured are not taken for all it ran (ALB-309).
        dynamo = sys.modules.get("torch._dynamo.utils")
        if dynamo is not None and dynamo.counters["frames"]["total"]:
            (work / "compiled").touch()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(code))


def _covered(tree: Path, data: Path) -> dict[str, list[int]]:
    import coverage

    lines: dict[str, set[int]] = {}
    for f in sorted(data.glob("cov*")):
        part = coverage.CoverageData(basename=str(f))
        part.read()
        for measured in part.measured_files():
            rel = Path(measured).resolve().relative_to(tree.resolve()).as_posix()
            lines.setdefault(rel, set()).update(part.lines(measured) or [])
    return {f: sorted(v) for f, v in lines.items()}


def _report(xml: Path) -> tuple[str | None, str]:
    """The job's JUnit report, or None and why where pytest wrote none or only a part of one (its session
    ended in an error, such as a test that broke coverage's tracer, after it opened the file: ALB-307)."""
    if not xml.is_file():
        return None, ""
    text = xml.read_text(errors="replace")
    try:
        ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        return None, f"pytest's JUnit report is unreadable ({e}): its session ended in an error"
    return text, ""


def run_job(tree: Path, job: dict, work: Path) -> dict:
    """Fork, run the job in the child, wait (killing it at the timeout), and describe what happened."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "coverage").mkdir(parents=True)
    targets = {tree / name: source for name, source in (job.get("files") or {}).items()}
    originals = {path: path.read_text() for path in targets}
    # Orphans of the job (a torchrun's ranks start sessions of their own, out of reach of the job's
    # process group) become this process's children, so they can be found and killed afterwards.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    start = time.monotonic()
    try:
        for path, source in targets.items():
            _drop_pyc(path)
            path.write_text(source)
        pid = os.fork()
        if pid == 0:
            try:
                _child(tree, job, work)
            except BaseException:
                traceback.print_exc()
                os._exit(WORKER_FAILED)
        timed_out, status = False, 0
        deadline = start + job["timeout"]
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                timed_out = True
                _kill_descendants()
                _, status = os.waitpid(pid, 0)
                break
            time.sleep(0.05)
        _kill_descendants()  # what the tests left running, in the job's process group or not
        _reap()
    finally:
        for path, original in originals.items():
            path.write_text(original)
            _drop_pyc(path)
        (tree / "sitecustomize.py").unlink(missing_ok=True)
        shutil.rmtree(tree / ".hypothesis", ignore_errors=True)
    junit, unreadable = _report(work / "junit.xml")
    log = work / "log"
    return {
        "code": os.waitstatus_to_exitcode(status),
        "timed_out": timed_out,
        "seconds": round(time.monotonic() - start, 3),
        "junit": junit,
        "unreadable": unreadable or None,
        "tail": log.read_text(errors="replace")[-2000:] if log.is_file() else "",
        "covered": _covered(tree, work / "coverage") if job.get("coverage") else None,
        "compiled": (work / "compiled").is_file() if job.get("coverage") else None,
    }


def main() -> None:
    tree = Path(sys.argv[1]).resolve()
    preload()
    # Replies go to the real stdout; anything else the worker prints would corrupt them.
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    print(json.dumps({"ready": True}), file=replies, flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        try:
            reply = run_job(tree, job, tree.parent / "work")
        except Exception:
            reply = {"error": traceback.format_exc()}
        print(json.dumps(reply), file=replies, flush=True)


if __name__ == "__main__":
    main()
