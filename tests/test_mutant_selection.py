"""Properties of the mutant selection: whatever the probe saw, a mutant runs against a sorted subset of the
falsifiers that passed, and a line range maps to lines coverage can report."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from albor.verify import engine
from albor.verify.mutant_selection import Probe, reported_lines, select, statement_lines

TESTS = [f"falsification/test_x.py::test_{i}" for i in range(5)]
SOURCE = Path(engine.__file__).read_text()


@given(
    outcomes=st.lists(st.sampled_from(["passed", "failed", "skipped"]), min_size=5, max_size=5),
    seconds=st.lists(st.floats(0, 100), min_size=5, max_size=5),
    covered=st.lists(st.sets(st.integers(1, 8)), min_size=5, max_size=5),
    lines=st.sets(st.integers(1, 8), min_size=1),
)
def test_selection_is_the_usable_falsifiers_that_ran_a_line_fastest_first(
    outcomes: list[str], seconds: list[float], covered: list[set[int]], lines: set[int]
) -> None:
    probe = Probe(
        dict(zip(TESTS, outcomes, strict=True)),  # type: ignore[arg-type]
        dict(zip(TESTS, seconds, strict=True)),
        {t: {"a.py": c} for t, c in zip(TESTS, covered, strict=True)},
    )
    chosen = select(engine.Mutation("id", "a.py", 1, 1, "f", "op", "", ""), lines, probe, TESTS)
    usable = [t for t, o in zip(TESTS, outcomes, strict=True) if o == "passed"]
    if any(covered):
        assert set(chosen) == {t for t, c in zip(TESTS, covered, strict=True) if t in usable and c & lines}
    else:
        assert set(chosen) == set(usable)
    assert [probe.seconds[t] for t in chosen] == sorted(probe.seconds[t] for t in chosen)


@given(st.integers(1, SOURCE.count("\n")), st.integers(0, 6))
def test_a_line_range_maps_to_lines_some_statement_reports(line: int, span: int) -> None:
    stmts = statement_lines(SOURCE)
    lines = reported_lines(stmts, line, line + span)
    assert lines <= set().union(*(r for _, _, r in stmts))
    for first, last, reported in stmts:
        if line <= first and last <= line + span:
            assert reported <= lines
