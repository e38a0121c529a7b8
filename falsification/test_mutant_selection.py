"""Falsifiers for the ``mutant_selection`` contract (contracts/mutant_selection.yaml): which falsifiers a
generated mutant runs against.

coverage.py is the independent reference for the lines: what it reports as run when the module runs is
what a mutant's lines must be matched against.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from albor.verify.mutant_selection import Probe, reported_lines, select, statement_lines

# coverage.py and mutmut (the engine's operators) come with the test extra; the preflight of a plain install
# collects this module too and must skip it there, not stop on it (ALB-306).
coverage = pytest.importorskip("coverage", reason="coverage is not installed (pip install 'albor[test]')")
pytest.importorskip("mutmut", reason="mutmut is not installed (pip install 'albor[test]')")
from albor.verify import engine  # noqa: E402

SOURCE = '''"""A module whose statements span several lines."""

import functools


@functools.cache
def f(x: int) -> int:
    y = (
        x
        + 1
    )
    if y > 2:
        return [
            y * 2
            for _ in range(1)
        ][0]
    return 0
'''
# The line coverage reports for the innermost statement around each line a mutant can start on.
INNERMOST = {8: 8, 9: 8, 10: 8, 12: 12, 13: 13, 14: 13, 15: 13, 16: 13, 17: 17}


@pytest.mark.claim("MUTANT_SELECTION-001")
def test_a_mutant_is_matched_to_the_lines_coverage_reports_for_it(tmp_path: Path) -> None:
    path = tmp_path / "spans.py"
    path.write_text(SOURCE)
    cov = coverage.Coverage(data_file=None, include=[str(path)])
    cov.start()
    try:
        spec = importlib.util.spec_from_file_location("spans", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.f(5) == 12
    finally:
        cov.stop()
        sys.modules.pop("spans", None)
    _, statements, _, missing, _ = cov.analysis2(str(path))
    run = set(statements) - set(missing)
    assert set(missing) == {17}, "only `return 0` is left unrun"
    stmts = statement_lines(SOURCE)
    # Every line coverage can report is some statement's (a docstring is a statement coverage does not count).
    assert set(statements) <= set().union(*(r for _, _, r in stmts))
    mutants = engine.mutations("spans.py", SOURCE)
    assert len(mutants) >= 5
    for m in mutants:
        lines = reported_lines(stmts, m.line, m.end_line)
        assert lines == {INNERMOST[m.line]}, (m.line, m.end_line, m.operator, lines)
        # `return 0` (line 17) is the one statement f(5) does not reach: a mutant there must not look run.
        assert bool(lines & run) == (m.line != 17), (m.line, m.operator, lines)
    # A span is matched to its innermost enclosing statement and every statement inside it, ends included
    # (a decorated definition is reported on its decorator's line and its own).
    assert reported_lines(stmts, 12, 16) == {12, 13}
    assert reported_lines(stmts, 12, 17) == {6, 7, 12, 13, 17}
    assert reported_lines(stmts, 13, 16) == {13}
    assert reported_lines(stmts, 2, 2) == set(), "no statement spans line 2"


@pytest.mark.claim("MUTANT_SELECTION-002")
def test_a_mutant_runs_the_usable_falsifiers_of_its_lines_or_all_where_coverage_saw_none_of_its_file() -> None:
    # Names whose alphabetical order is not their order by time, so that the order shows what sorted it.
    slow, fast, skipped, half, param, elsewhere, unmeasured, tie = (
        f"falsification/test_x.py::test_{n}"
        for n in ("a_slow", "b_fast", "c_skipped", "d_half", "e_param", "f_elsewhere", "g_unmeasured", "h_tie")
    )
    tests = [slow, fast, skipped, half, param, elsewhere, unmeasured, tie]
    outcomes = {slow: "passed", fast: "passed", skipped: "skipped", f"{half}[a]": "passed", f"{half}[b]": "failed",
                f"{param}[a]": "passed", f"{param}[b]": "passed", elsewhere: "passed", unmeasured: "passed",
                tie: "passed"}  # fmt: skip
    seconds = {slow: 9.0, fast: 1.0, skipped: 0.5, half: 0.1, param: 5.0, elsewhere: 0.2, unmeasured: 0.3, tie: 1.0}
    covered = {slow: {"a.py": {3, 4}}, fast: {"a.py": {4}}, skipped: {"a.py": {3}}, half: {"a.py": {3, 4}},
               param: {"a.py": {3}}, elsewhere: {"c.py": {3, 4}}, tie: {"a.py": {4}}}  # fmt: skip
    probe = Probe(outcomes, seconds, covered)  # type: ignore[arg-type]

    def mutant(file: str) -> engine.Mutation:
        return engine.Mutation("id", file, 3, 3, "f", "op", "", "")

    # Only falsifiers that passed on the clean copy, every case of a parametrised one, and ran one of the
    # lines; fastest first, ties by name. One measured in other files only, or not at all, never ran them.
    assert select(mutant("a.py"), {3}, probe, tests) == [param, slow]
    assert select(mutant("a.py"), {4}, probe, tests) == [fast, tie, slow]
    assert select(mutant("a.py"), {3, 4}, probe, tests) == [fast, tie, param, slow]
    assert select(mutant("a.py"), {7}, probe, tests) == []
    # No line of b.py ran in any measured process (ALB-304): every usable falsifier, fastest first.
    assert select(mutant("b.py"), {3}, probe, tests) == [elsewhere, unmeasured, fast, tie, param, slow]
    # One that compiled a frame ran lines coverage could not see (ALB-309): it runs for every mutant, if usable.
    compiled = Probe(outcomes, seconds, covered, {elsewhere, skipped})  # type: ignore[arg-type]
    assert select(mutant("a.py"), {3}, compiled, tests) == [elsewhere, param, slow]
    assert select(mutant("a.py"), {7}, compiled, tests) == [elsewhere]
