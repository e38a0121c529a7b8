"""Unit tests of the mutant worker's job: the mutated files are what the forked tests import, the originals
come back byte for byte, and a job past its time is killed."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from albor.verify.junit import outcomes_of

# In a fresh interpreter, as the real worker runs it: a fork of an xdist worker could deadlock on its threads' locks.
from falsification.test_mutant_worker import job_in_fresh_interpreter as run_job

ORIGINAL = "# the unmutated module\nVALUE = 1\n"


def _tree(root: Path) -> Path:
    tree = root / "tree"
    tree.mkdir(exist_ok=True)
    (tree / "mod.py").write_text(ORIGINAL)
    (tree / "test_mod.py").write_text(
        "import time\n\nimport mod\n\n\ndef test_value():\n    assert mod.VALUE == 1\n\n\n"
        "def test_slow():\n    time.sleep(60)\n"
    )
    return tree


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(-3, 3))
@example(1)  # the unmutated value: the job passes
def test_a_job_tests_its_mutant_and_restores_the_original(tmp_path: Path, value: int) -> None:
    tree = _tree(tmp_path)
    job = {"files": {"mod.py": f"VALUE = {value}\n"}, "tests": ["test_mod.py::test_value"], "timeout": 120}
    reply = run_job(tree, job, tmp_path / "work")
    assert outcomes_of(reply["junit"]) == {"test_mod.py::test_value": "passed" if value == 1 else "failed"}
    assert (reply["code"] == 0) == (value == 1) and not reply["timed_out"]
    assert (tree / "mod.py").read_text() == ORIGINAL
    assert not list((tree / "__pycache__").glob("mod.*.pyc")), "the mutant's bytecode outlived its job"


def test_a_job_past_its_time_is_killed(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    reply = run_job(tree, {"tests": ["test_mod.py::test_slow"], "timeout": 2}, tmp_path / "work")
    assert reply["timed_out"] and reply["code"] != 0
    assert reply["seconds"] < 30


def test_an_exitfirst_job_stops_at_its_first_failure(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    job = {"files": {"mod.py": "VALUE = 2\n"}, "tests": ["test_mod.py::test_value", "test_mod.py::test_slow"]}
    reply = run_job(tree, job | {"exitfirst": True, "timeout": 30}, tmp_path / "work")
    assert outcomes_of(reply["junit"]) == {"test_mod.py::test_value": "failed"}
    assert reply["code"] == 1 and not reply["timed_out"]
