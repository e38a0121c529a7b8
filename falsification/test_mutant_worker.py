"""Falsifiers for the ``mutant_worker`` contract (contracts/mutant_worker.yaml): what the worker does before it
forks leaves its jobs the GPU, no process of a job outlives it, and a coverage job measures the files it names.

On a CPU-only build torch answers every CUDA question without initialising anything, so the first
falsifier watches the questions themselves, in a fresh interpreter where every preloaded module is
imported for the first time; the second forks after preloading on a GPU machine and
allocates there, as a job would. The second runs in every GPU preflight but is not yet listed in the
contract: the contract check accepts only falsifiers with a recorded pass, and no committed H200 battery
result holds it yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from albor.verify import mutant_worker
from falsification.exports import need

# The torch.cuda calls that initialise CUDA, or that a module would make before one that does.
CUDA_QUESTIONS = (
    "is_available",
    "device_count",
    "init",
    "_lazy_init",
    "current_device",
    "get_device_name",
    "get_device_properties",
    "get_device_capability",
    "set_device",
)


@pytest.mark.slow
@pytest.mark.claim("MUTANT_WORKER-001")
def test_preloading_leaves_cuda_to_the_jobs() -> None:
    # A fresh interpreter, so that every preloaded module is imported here for the first time and any
    # CUDA question its import asks is seen.
    script = textwrap.dedent(
        """
        import json
        import torch
        asked = []
        for name in QUESTIONS:
            answer = getattr(torch.cuda, name)
            setattr(torch.cuda, name, lambda *a, _n=name, _f=answer, **k: asked.append(_n) or _f(*a, **k))
        from albor.verify import mutant_worker
        mutant_worker.preload()
        print(json.dumps(asked))
        """
    ).replace("QUESTIONS", repr(CUDA_QUESTIONS))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    asked = json.loads(run.stdout.strip().splitlines()[-1])
    assert not asked, f"preloading asked torch.cuda {asked}: on a GPU machine no forked job could use the GPU"


@pytest.mark.cuda
@pytest.mark.claim("MUTANT_WORKER-001")
def test_a_job_forked_after_preloading_runs_on_the_gpu() -> None:
    # A fresh interpreter: this test process may have used CUDA already, which no fork of it could undo.
    script = textwrap.dedent(
        """
        import os
        from albor.verify import mutant_worker
        mutant_worker.preload()
        pid = os.fork()
        if pid == 0:
            import torch
            try:
                os._exit(0 if torch.ones(3, device="cuda").sum().item() == 3 else 1)
            except Exception as e:
                print(e, flush=True)
                os._exit(2)
        os._exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, f"a job forked after preloading could not use the GPU: {run.stdout}{run.stderr[-1500:]}"


def job_in_fresh_interpreter(tree: Path, job: dict, work: Path) -> dict:
    """The worker's run_job in a fresh interpreter, as the real worker runs it (a fork of this test process
    could deadlock on another thread's lock)."""
    script = textwrap.dedent(
        f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(Path(mutant_worker.__file__).parent)!r})
        import mutant_worker
        print(json.dumps(mutant_worker.run_job(Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3]))))
        """
    )
    argv = [sys.executable, "-c", script, str(tree), json.dumps(job), str(work)]
    run = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.claim("MUTANT_WORKER-002")
@pytest.mark.parametrize("ends", ["passes", "times-out"])
def test_a_job_leaves_no_process_behind(tmp_path: Path, ends: str) -> None:
    # A process in a session of its own, as torchrun starts its ranks: the job's process group misses it.
    tree = tmp_path / "tree"
    tree.mkdir()
    pids = tmp_path / "pids"
    (tree / "test_leftover.py").write_text(
        "import subprocess, time\n\n\n"
        "def test_starts_a_session():\n"
        "    p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        f"    open({str(pids)!r}, 'a').write(f'{{p.pid}}\\n')\n"
        f"    time.sleep({60 if ends == 'times-out' else 0})\n"
    )
    job = {"tests": ["test_leftover.py"], "timeout": 8}
    reply = job_in_fresh_interpreter(tree, job, tmp_path / "work")
    assert reply["timed_out"] == (ends == "times-out"), reply["tail"]
    (pid,) = map(int, pids.read_text().split())
    assert not Path(f"/proc/{pid}").exists(), f"the job's process {pid} outlived it"


def _covered_by(tmp_path: Path, files: dict[str, str], test: str) -> dict:
    """A coverage job over ``tools/helper.py`` in a tree of ``files`` (a ``tools`` package and the test
    file ``test``): the worker's reply, after checking that the test passed."""
    reply = _coverage_job(tmp_path, files, test)
    assert reply["code"] == 0, reply["tail"]
    return reply["covered"]


def _coverage_job(tmp_path: Path, files: dict[str, str], test: str) -> dict:
    """The worker's reply to a coverage job over ``tools/helper.py`` in a tree of ``files``."""
    need("coverage")  # it comes with the mutation engine, in the test extra
    tree = tmp_path / "tree"
    (tree / "tools").mkdir(parents=True, exist_ok=True)
    (tree / "tools" / "__init__.py").write_text("")
    for name, text in files.items():
        (tree / name).write_text(text)
    job = {"tests": [test], "timeout": 120, "coverage": ["tools/helper.py"]}
    return job_in_fresh_interpreter(tree, job, tmp_path / "work")


@pytest.mark.claim("MUTANT_WORKER-003")
def test_a_coverage_job_measures_the_sources_it_names(tmp_path: Path) -> None:
    # A contract's sources need not live under albor/ (the falsifiers' launcher does not): the lines
    # each test ran are measured in the files the job names, wherever they are, and in no other file.
    files = {
        "tools/helper.py": "def double(x):\n    return 2 * x\n\n\ndef unused():\n    return 0\n",
        "tools/other.py": "VALUE = 1\n",
        "test_helper.py": "import subprocess, sys\n\nfrom tools import helper, other\n\n\n"
        "def test_double():\n    assert helper.double(2) == 4 and other.VALUE == 1\n\n\n"
        "def test_in_a_subprocess():\n"
        "    code = 'from tools import helper; assert helper.unused() == 0'\n"
        "    subprocess.run([sys.executable, '-c', code], check=True)\n",
    }
    covered = _covered_by(tmp_path, files, "test_helper.py")
    assert covered == {"tools/helper.py": [1, 2, 5, 6]}, covered


@pytest.mark.claim("MUTANT_WORKER-004")
def test_a_coverage_job_keeps_the_lines_of_a_subprocess_ended_by_sigterm(tmp_path: Path) -> None:
    # A server is stopped with SIGTERM, and uvicorn re-raises it after its shutdown: the process ends by the
    # signal, past every atexit handler, and what coverage held in memory for it must still be reported.
    files = {
        "tools/helper.py": "def served():\n    return 1\n\n\ndef never():\n    return 0\n",
        "test_server.py": "import signal, subprocess, sys\n\n\n"
        "def test_a_server_stopped_by_sigterm():\n"
        "    code = 'import time; from tools import helper; helper.served(); print(1, flush=True); time.sleep(60)'\n"
        "    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)\n"
        "    assert proc.stdout.readline() == '1\\n'\n"
        "    proc.send_signal(signal.SIGTERM)\n"
        "    assert proc.wait(timeout=30) == -signal.SIGTERM\n",
    }
    covered = _covered_by(tmp_path, files, "test_server.py")
    assert covered == {"tools/helper.py": [1, 2, 5]}, covered


@pytest.mark.claim("MUTANT_WORKER-005")
def test_a_job_whose_pytest_session_broke_replies_without_a_report(tmp_path: Path) -> None:
    # A test that replaces sysconfig.get_paths with a function of no arguments breaks coverage's tracer, which
    # asks it for a scheme when sys.path changes: pytest opens its JUnit file and dies writing it (CORPUS-008's
    # falsifier did this, and the corpus run stopped on the half-written file).
    files = {
        "tools/helper.py": "def one():\n    return 1\n",
        "test_breaks.py": "import sys, sysconfig\n\nfrom tools import helper\n\n\n"
        "def test_breaks_coverage(monkeypatch):\n"
        "    paths = sysconfig.get_paths()\n"
        "    monkeypatch.setattr(sysconfig, 'get_paths', lambda: paths)\n"
        "    monkeypatch.setattr(sys, 'path', [*sys.path, '/nonexistent'])\n"
        "    import json.tool  # first imported now, so coverage decides whether to trace it\n"
        "    assert helper.one() == 1\n",
    }
    reply = _coverage_job(tmp_path, files, "test_breaks.py")
    assert (tmp_path / "work" / "junit.xml").is_file(), "the job did break pytest's report (else this tries nothing)"
    assert reply["code"] != 0 and reply["junit"] is None, reply
    assert reply["unreadable"].startswith("pytest's JUnit report is unreadable"), reply["unreadable"]
    # A job whose report is whole replies with it and no complaint.
    fine_test = "from tools import helper\n\n\ndef test_one():\n    assert helper.one() == 1\n"
    fine = _coverage_job(tmp_path, {**files, "test_fine.py": fine_test}, "test_fine.py")
    assert fine["code"] == 0 and fine["unreadable"] is None and "test_one" in fine["junit"], fine


@pytest.mark.claim("MUTANT_WORKER-006")
def test_a_coverage_job_says_whether_it_compiled_a_frame(tmp_path: Path) -> None:
    need("torch")
    files = {
        "tools/helper.py": "def double(x):\n    return 2 * x\n",
        "test_plain.py": "import torch\n\nfrom tools import helper\n\n\n"
        "def test_plain():\n    assert helper.double(torch.ones(2)).tolist() == [2.0, 2.0]\n",
        "test_compiled.py": "import torch\n\nfrom tools import helper\n\n\n"
        "def test_compiled():\n"
        "    f = torch.compile(helper.double, backend='eager')\n"
        "    assert f(torch.ones(2)).tolist() == [2.0, 2.0]\n",
    }
    plain = _coverage_job(tmp_path / "plain", files, "test_plain.py")
    assert plain["code"] == 0 and plain["compiled"] is False, plain["tail"]
    assert plain["covered"] == {"tools/helper.py": [1, 2]}
    compiled = _coverage_job(tmp_path / "compiled", files, "test_compiled.py")
    assert compiled["code"] == 0 and compiled["compiled"] is True, compiled["tail"]
    # Why the reply must say so: the body that ran, compiled, is not among the lines coverage saw.
    assert compiled["covered"] == {"tools/helper.py": [1]}, compiled["covered"]
