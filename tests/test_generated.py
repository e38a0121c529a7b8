"""Generated mutants: the engine's mutants, the verdict on a worker's reply, the reviewed equivalents, the
declared values' check, the report's use of the committed runs, and the scores the project requires."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from albor.verify import engine, generated
from albor.verify.check import Report, _check_declared, _preflight_battery
from albor.verify.contracts import load_contracts
from albor.verify.gaps import load_gap
from albor.verify.layout import GAPS_DIR
from albor.verify.report import build_report, grade
from albor.verify.schema import Declared

SOURCE = '''"""A module."""

from functools import cache

LIMIT = 3


def clip(x: int, top: int = 4) -> int:
    """Docstrings are not mutated."""
    return min(x, top) if x > 0 else 0


@cache
def tripled(n: int) -> int:
    return n * LIMIT
'''


def test_mutants_compile_apply_and_keep_their_ids_when_lines_move(tmp_path: Path) -> None:
    found = engine.mutations("m.py", SOURCE)
    assert found and len({m.id for m in found}) == len(found)
    assert {m.function for m in found} >= {"<module>", "clip", "tripled"}, "decorated functions are mutated too"
    assert not any("Docstrings" in line for m in found for line in m.diff.splitlines() if line.startswith("+")), (
        "docstrings are not mutated"
    )
    for m in found:
        compile(m.source, "m.py", "exec")
        (tmp_path / "m.py").write_text(SOURCE)
        subprocess.run(["git", "apply", "-"], input=m.diff, text=True, cwd=tmp_path, check=True)
        assert (tmp_path / "m.py").read_text() == m.source, m.diff
    moved = engine.mutations("m.py", SOURCE.replace("LIMIT = 3\n", "LIMIT = 3\nOTHER = 1\n\n"))
    assert {m.id for m in found} <= {m.id for m in moved}, "an unchanged line keeps its mutants' ids"


def _result(tests: list[str] | None = None) -> generated.Result:
    return generated.Result("abc", "albor/x.py", 1, "f", "operator_number", tests=tests or ["t.py::a"])


JUNIT = '<testsuite><testcase classname="falsification.test_cursor" name="test_a">{}</testcase></testsuite>'


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ({"code": 1, "timed_out": False, "junit": JUNIT.format("<failure/>")}, "killed"),
        ({"code": 0, "timed_out": False, "junit": JUNIT.format("")}, "survived"),
        ({"code": 0, "timed_out": False, "junit": JUNIT.format("<skipped/>")}, "not-runnable"),
        ({"code": -9, "timed_out": True, "junit": None}, "killed"),
        ({"code": 4, "timed_out": False, "junit": None}, "killed"),
        ({"code": 70, "timed_out": False, "junit": None}, "error"),
    ],
)
def test_verdict(reply: dict, status: str) -> None:
    r = generated.verdict(_result(), {"seconds": 1.0, "tail": "", **reply})
    assert r.status == status, r.detail
    if reply.get("junit") and "<failure/>" in reply["junit"]:
        assert r.killed_by == "falsification/test_cursor.py::test_a"


def test_equivalents_need_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "cursor.yaml"
    entry = "  - {id: 0123456789ab, file: albor/data/cursor.py, function: f, change: '-a +b', reason: %s}\n"
    path.write_text("equivalent:\n" + entry % "'no falsifier can tell: the value is never read'")
    assert set(generated.load_equivalents("cursor", tmp_path)) == {"0123456789ab"}
    path.write_text("equivalent:\n" + entry % "''")
    with pytest.raises(ValueError, match=r"cursor\.yaml"):
        generated.load_equivalents("cursor", tmp_path)


def test_declared_value_checked_against_its_single_source() -> None:
    report = Report()
    good = Declared(value=[0.9, 0.95], source="albor.config:OptimConfig.betas", meaning="betas")
    _check_declared(report, Path("contracts/adamw.yaml"), "betas", good)
    assert report.problems == []
    bad = Declared(value=500000.0, source="albor.config:ModelConfig.rope_theta", meaning="base")
    _check_declared(report, Path("contracts/rope.yaml"), "base", bad)
    missing = Declared(value=1, source="albor.config:ModelConfig.no_such_field", meaning="x")
    _check_declared(report, Path("contracts/rope.yaml"), "gone", missing)
    assert len(report.problems) == 2 and "10000.0" in report.problems[0] and "cannot resolve" in report.problems[1]


def test_only_a_trainer_gaps_fault_may_change_a_battery_module_and_never_its_own_falsifiers() -> None:
    trainer = load_gap(GAPS_DIR / "ALB-306.yaml")
    allowed = _preflight_battery(trainer)
    assert "falsification/test_mutant_selection.py" in allowed and "falsification/test_rope.py" in allowed
    assert "falsification/test_trainer.py" not in allowed, "the module of the gap's own falsifier"
    assert not any(f.startswith("falsification/") and "/test_" not in f for f in allowed), "helpers stay out"
    assert _preflight_battery(load_gap(GAPS_DIR / "ALB-305.yaml")) == set()


def test_the_probe_names_a_falsifier_whose_report_is_unreadable() -> None:
    contract = next(c for c in load_contracts().values() if c.component == "corpus")

    class Pool:
        procs = (None,)

        def run(self, job: dict) -> dict:
            return {"code": 1, "junit": None, "unreadable": "pytest's JUnit report is unreadable (no element found)",
                    "tail": "TypeError: the tracer's", "seconds": 0.1, "covered": {}}  # fmt: skip

    with pytest.raises(RuntimeError, match=r"(?s)falsification/test_corpus\.py::\w+ on the clean copy: pytest's JUnit "
                       r"report is unreadable .*TypeError: the tracer's"):  # fmt: skip
        generated.probe(contract, Pool())  # type: ignore[arg-type]


def test_report_score_is_the_lowest_rate_generated_included(tmp_path: Path) -> None:
    # Every falsifier passed and every registered fault died: the generated mutants alone set the score.
    cases = [f.split("::") for c in load_contracts().values() for ob in c.obligations for f in ob.falsifiers]
    xml = tmp_path / "junit.xml"
    xml.write_text(
        "<testsuite>"
        + "".join(f'<testcase classname="{p.removesuffix(".py").replace("/", ".")}" name="{n}"/>' for p, n in cases)
        + "</testsuite>"
    )
    mutants = {"mutants": [], "killed": 0, "total": 0, "not_runnable": 0, "kill_rate": 1.0}
    for score, want in ((0.8, 0.8), (0.99, 0.99), (None, 1.0)):
        gen = {"contracts": {}, "killed": 0, "ran": 0, "score": score, "missing": []}
        report = build_report([xml], mutants, tmp_path, gen)
        assert report["coverage"] == 1.0 and report["score"] == want
        assert report["grade"] == grade(want, [])


def test_scope_admits_its_files_and_functions_and_covers_narrower_scopes() -> None:
    step = generated.Scope(("albor/train/trainer.py",), ("Trainer.save",))
    assert step.admits("albor/train/trainer.py", "Trainer.save") and step.admits(
        "albor/train/trainer.py", "Trainer.save.complete"
    )
    assert not step.admits("albor/train/trainer.py", "Trainer.saved") and not step.admits(
        "albor/train/run.py", "Trainer.save"
    )
    assert generated.Scope().covers(step) and step.covers(step) and not step.covers(generated.Scope())
    assert not generated.Scope(("albor/train/trainer.py",)).covers(generated.Scope(("albor/train/run.py",)))
    assert generated.Scope.from_json(step.to_json()) == step


def test_missing_runs_are_shown_never_counted_and_promises_are_kept() -> None:
    runs = generated.load_runs()
    summary = generated.overall(runs)
    # A contract without a committed run has no score: it is listed, and adds nothing to killed or ran.
    assert summary["missing"] == sorted(set(load_contracts()) - set(runs))
    assert summary["ran"] == sum(r["killed"] + r["survived"] for r in runs.values())
    # The project's promise (generated.REQUIRED): each of these contracts has a committed run over the promised
    # scope, scoring at least 90 % there.
    assert set(generated.REQUIRED) <= set(load_contracts())
    # A promise is kept by a committed run, or is listed in NOT_YET_MEASURED with why (and has no run over its
    # scope): a run below 90 % can never hide there.
    assert set(generated.NOT_YET_MEASURED) <= set(generated.REQUIRED)
    for c in generated.NOT_YET_MEASURED:
        assert summary["required"][c]["score"] is None, f"{c} has a committed run: take it out of NOT_YET_MEASURED"
    assert set(summary["unmet"]) == set(generated.NOT_YET_MEASURED), {
        c: summary["required"][c] for c in summary["unmet"]
    }
    fake = {"scope": {"files": [], "functions": []}, "mutants": [
        {"file": "albor/train/trainer.py", "function": "Trainer.train_step", "status": "killed"},
        {"file": "albor/train/trainer.py", "function": "Trainer.save", "status": "survived"}]}  # fmt: skip
    assert generated.requirement("trainer", fake)["score"] == 1.0, "the promise is scored over its scope only"
    assert not generated.requirement("trainer", None)["met"]
