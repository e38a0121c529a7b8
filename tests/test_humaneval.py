"""Unit and property tests of ``albor.eval.humaneval`` and ``albor.eval.passk``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from albor.eval import __main__ as eval_cli
from albor.eval import humaneval
from albor.eval.humaneval import Sample, load_problems, program, report
from albor.eval.passk import pass_at_k


def test_problems_come_from_the_package_in_order() -> None:
    problems = load_problems()
    assert [p.task_id for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    assert load_problems(5) == problems[:5]
    with pytest.raises(ValueError, match="limit"):
        load_problems(0)


def test_program_layout() -> None:
    p = load_problems(1)[0]
    text = program(p, "    return True\n")
    assert text.startswith(p.prompt + "    return True\n") and text.endswith(f"\ncheck({p.entry_point})\n")
    assert p.test in text
    assert humaneval.corrupted_solution(p).startswith(p.canonical_solution)


@given(st.integers(1, 30).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_is_a_probability_monotone_in_k(nck: tuple[int, int, int]) -> None:
    n, c, k = nck
    p = pass_at_k(n, c, k)
    assert 0.0 <= p <= 1.0
    assert (p == 0.0) == (c == 0) and (p == 1.0) == (n - c < k)
    if k < n:
        assert pass_at_k(n, c, k + 1) >= p


def test_report_counts_and_pass_at_k() -> None:
    results = {"A": ["passed", "failed", "error", "timed out"], "B": ["passed", "passed", "failed", "failed"]}
    samples = [Sample(t, j, "", r, "") for t, rs in results.items() for j, r in enumerate(rs)]
    rep = report(samples, 2, 4)
    assert rep.pass_at_k == {1: pytest.approx((1 / 4 + 2 / 4) / 2)}
    assert rep.counts == {"passed": 3, "failed": 3, "timed out": 1, "error": 1}
    assert "samples" not in rep.summary()


def test_samples_written_as_jsonl(tmp_path: Path) -> None:
    samples = [Sample("HumanEval/0", 0, "    return 1\n", "failed", "AssertionError: ")]
    path = tmp_path / "deep" / "samples.jsonl"
    humaneval.write_samples(path, samples)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {
            "task_id": "HumanEval/0",
            "index": 0,
            "completion": "    return 1\n",
            "result": "failed",
            "detail": "AssertionError: ",
        }
    ]


def test_default_samples_file() -> None:
    ckpt = Path("runs/default/checkpoints/step-00000100")
    assert eval_cli._default_out(ckpt) == Path("runs/default/eval/humaneval-step-00000100.jsonl")
    assert eval_cli._default_out(Path("elsewhere/ckpt")) == Path("elsewhere/eval/humaneval-ckpt.jsonl")
