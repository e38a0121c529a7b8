"""Unit tests of the registered-fault run's scheduling: a mutant's falsifiers run fastest first (by the clean
run's times, every parametrized case counted) and stop at the first failure."""

from __future__ import annotations

from typing import Any

from albor.verify.junit import durations_of
from albor.verify.mutants import Mutant, run_mutant

SLOW, FAST = "falsification/test_rope.py::test_slow", "falsification/test_rope.py::test_fast"
JUNIT = (
    '<testsuites><testsuite name="pytest">'
    '<testcase classname="falsification.test_rope" name="test_slow" time="3.5"/>'
    '<testcase classname="falsification.test_rope" name="test_fast[a]" time="1.0"/>'
    '<testcase classname="falsification.test_rope" name="test_fast[b]" time="2.0"/>'
    '<testcase classname="falsification.test_rope" name="test_fast[b]" time="0.5"/>'
    "</testsuite></testsuites>"
)
# A fault whose patch changes one line of a runtime file, as every registered fault does.
DIFF = "\n".join(
    [
        "--- a/albor/ops/rope.py",
        "+++ b/albor/ops/rope.py",
        "@@ -1,2 +1,2 @@",
        '-"""Rotary position embedding reference, rotate-half convention (Su et al. 2021).',
        '+"""Rotary position embedding reference, rotate-half convention.',
        " ",
        "",
    ]
)


class RecordingPool:
    """Stands in for the mutant workers: keeps each job and answers that its first test failed."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        self.jobs.append(job)
        first = job["tests"][0].rpartition("::")[2]
        case = f'<testcase classname="falsification.test_rope" name="{first}"><failure/></testcase>'
        xml = f"<testsuite>{case}</testsuite>"
        return {"junit": xml, "code": 1, "timed_out": False, "tail": ""}


def test_durations_are_read_per_case_the_longest_where_a_case_repeats() -> None:
    assert durations_of(JUNIT) == {SLOW: 3.5, f"{FAST}[a]": 1.0, f"{FAST}[b]": 2.0}
    assert durations_of(None) == {}


def test_a_mutants_falsifiers_run_fastest_first_and_stop_at_the_first_failure() -> None:
    seconds = durations_of(JUNIT)  # test_fast: 3.0 s over its two cases, test_slow 3.5 s
    clean = dict.fromkeys(seconds, "passed")
    pool = RecordingPool()
    m = run_mutant(Mutant("rope_docstring", "ALB-000", "minor", [SLOW, FAST], DIFF), pool, clean, seconds)
    (job,) = pool.jobs
    assert job["tests"] == [FAST, SLOW] and job["exitfirst"] is True
    assert m.killed and m.detail == "killed by falsification/test_rope.py::test_fast"
