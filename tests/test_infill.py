"""Unit and property tests of ``albor.eval.infill``."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from albor.data.synthetic import tiny_tokenizer
from albor.data.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, encode
from albor.eval.humaneval import Problem, Report, Sample
from albor.eval.infill import InfillReport, infill_prompt, tasks_of

LINES = st.lists(st.sampled_from(["", "   ", "    x = 1", "    return x", "\tpass", "  # note"]), max_size=8)


def _problem(solution: str) -> Problem:
    return Problem("HumanEval/7", "def f(x):\n", solution, "def check(c):\n    pass\n", "f")


@settings(max_examples=40)
@given(lines=LINES, trailing=st.booleans())
def test_each_non_blank_line_is_one_hole(lines: list[str], trailing: bool) -> None:
    solution = "\n".join(lines) + ("\n" if trailing else "")
    problem = _problem(solution)
    tasks = tasks_of(problem)
    assert [t.middle for t in tasks] == [x for x in solution.split("\n") if x.strip()]
    for t in tasks:
        assert t.prefix + t.middle + t.suffix == problem.prompt + solution
        assert t.solution("FILL").replace("FILL", t.middle, 1) == solution
        assert t.task_id == f"SingleLineInfilling/HumanEval/7/L{t.prefix.count(chr(10)) - 1}"


@given(pre=st.integers(0, 60), suf=st.integers(0, 60), new=st.integers(1, 8), context=st.integers(13, 90))
def test_prompt_fits_the_context_and_keeps_its_sentinels(pre: int, suf: int, new: int, context: int) -> None:
    tok = tiny_tokenizer()
    prefix, suffix = "a = 1\n" * pre, "b = 2\n" * suf
    ids, cut = infill_prompt(tok, prefix, suffix, new, context)
    whole = 4 + len(encode(tok, prefix)) + len(encode(tok, suffix))
    assert cut == (whole + new > context)
    assert len(ids) == (context - new if cut else whole)
    assert ids[:2] == [2, FIM_PREFIX] and ids[-1] == FIM_MIDDLE and ids.count(FIM_SUFFIX) == 1


def test_max_new_tokens_must_leave_room() -> None:
    with pytest.raises(ValueError, match="max_new_tokens must lie in"):
        infill_prompt(tiny_tokenizer(), "x", "y", 12, 16)


def test_summary_counts_tasks_and_cut_prompts() -> None:
    samples = [Sample(f"T/{i}", 0, "", r, "", "guard") for i, r in enumerate(["passed", "failed", "error"])]
    report = Report(3, 1, {1: 1 / 3}, {"passed": 1, "failed": 1, "timed out": 0, "error": 1}, "guard", samples)
    summary = InfillReport(report, ["T/2"]).summary()
    assert summary == {
        "n_tasks": 3,
        "pass_at_k": {1: 1 / 3},
        "counts": {"passed": 1, "failed": 1, "timed out": 0, "error": 1},
        "sandbox": "guard",
        "prompts_cut": 1,
    }
