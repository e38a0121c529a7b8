"""Falsifiers for the ``infill`` contract (contracts/infill.yaml)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from albor.data.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, encode, train_tokenizer
from albor.eval import __main__ as eval_cli
from albor.eval import infill, sandbox
from albor.eval.humaneval import InferenceError, load_problems
from albor.eval.infill import Task, infill_prompt, load_tasks
from albor.eval.sandbox import OUTCOMES
from albor.generate import fim_prompt
from falsification.test_humaneval import _checkpoint, _model

# sha256 of the 1,033 tasks as infill.task_set_sha256 serialises them (ids, prefixes, middles, suffixes).
TASK_SET_SHA256 = "b3de1953d6bb73abab87c6f177bff2b334242c5205103c0ee8ce417eb800327f"
SUBSET = slice(None, None, 250)

# The test model's context is short, so most prompts are cut to fit; that is what INF-004 allows.
pytestmark = pytest.mark.filterwarnings("ignore:prompt of .* truncated:UserWarning")


def _mode() -> str:
    """The package's own programs: guard mode will do where namespaces cannot be made."""
    return "namespaces" if sandbox.namespaces_available() else "guard"


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return load_tasks()


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer([p.prompt + p.canonical_solution for p in load_problems()], 300)


@pytest.mark.claim("INF-001")
def test_task_set_is_fixed(tasks: list[Task]) -> None:
    assert len(tasks) == infill.N_TASKS == 1033
    assert infill.task_set_sha256(tasks) == TASK_SET_SHA256
    assert infill.task_set_sha256(load_tasks()) == TASK_SET_SHA256
    first = load_tasks(3)
    assert first == tasks[: len(first)] and {t.problem.task_id for t in first} == {f"HumanEval/{i}" for i in range(3)}
    assert len({t.task_id for t in tasks}) == len(tasks)


@pytest.mark.claim("INF-002")
def test_tasks_reassemble_the_canonical_program(tasks: list[Task]) -> None:
    by_problem: dict[str, list[Task]] = {}
    for t in tasks:
        assert t.prefix + t.middle + t.suffix == t.problem.prompt + t.problem.canonical_solution, t.task_id
        assert t.solution(t.middle) == t.problem.canonical_solution
        assert t.middle.strip() and "\n" not in t.middle and t.suffix.startswith("\n"), t.task_id
        by_problem.setdefault(t.problem.task_id, []).append(t)
    for p in load_problems():
        lines = [line for line in p.canonical_solution.split("\n") if line.strip()]
        assert [t.middle for t in by_problem[p.task_id]] == lines, p.task_id


@pytest.mark.claim("INF-003")
def test_self_check_subset(tasks: list[Task]) -> None:
    check = infill.self_check(tasks[SUBSET], workers=2, mode=_mode())
    n = len(tasks[SUBSET])
    assert check.canonical_passed == n, [r for r in check.canonical if not r.passed]
    assert check.empty_passed < n


@pytest.mark.slow
@pytest.mark.claim("INF-003")
def test_self_check_full(tasks: list[Task]) -> None:
    results = infill.run_fills(tasks, [t.middle for t in tasks], workers=2, mode=_mode())
    failed = [(t.task_id, r.outcome, r.detail) for t, r in zip(tasks, results, strict=True) if not r.passed]
    assert len(results) == 1033 and not failed, failed[:5]


@pytest.mark.claim("INF-004")
def test_prompt_is_psm_and_a_cut_keeps_the_code_by_the_hole(tasks: list[Task], tokenizer: Tokenizer) -> None:
    task = tasks[40]
    ids, cut = infill_prompt(tokenizer, task.prefix, task.suffix, 16, 2048)
    assert not cut and ids == fim_prompt(tokenizer, task.prefix, task.suffix, 16, 2048)
    pre, suf = encode(tokenizer, task.prefix), encode(tokenizer, task.suffix)
    for max_seq_len in (40, 90, len(pre) + len(suf) + 16 + 3):
        ids, cut = infill_prompt(tokenizer, task.prefix, task.suffix, 16, max_seq_len)
        assert cut and len(ids) == max_seq_len - 16
        assert ids[:2] == [2, FIM_PREFIX] and ids[-1] == FIM_MIDDLE and ids.count(FIM_SUFFIX) == 1
        middle = ids.index(FIM_SUFFIX)
        kept_pre, kept_suf = ids[2:middle], ids[middle + 1 : -1]
        assert kept_pre == pre[len(pre) - len(kept_pre) :] and kept_suf == suf[: len(kept_suf)]
        assert kept_suf, "the suffix keeps its first tokens"
        room = max_seq_len - 16 - 4
        assert len(kept_suf) == min(len(suf), max(room // 2, room - len(pre))), "the suffix's share of the room"
    # The edges: a prompt that fits exactly is not cut, one token less of context cuts it.
    whole = len(pre) + len(suf) + 16 + 4
    assert infill_prompt(tokenizer, task.prefix, task.suffix, 16, whole) == (
        fim_prompt(tokenizer, task.prefix, task.suffix, 16, whole),
        False,
    )
    assert infill_prompt(tokenizer, task.prefix, task.suffix, 16, whole - 1)[1]
    # max_new_tokens lies in [1, max_seq_len - 4): both ends inside are accepted, both outside refused.
    for n in (1, 35):
        assert infill_prompt(tokenizer, "a", "b", n, 40)[0][-1] == FIM_MIDDLE
    for n in (0, 36):
        with pytest.raises(ValueError, match=rf"^max_new_tokens must lie in \[1, max_seq_len - 4 = 36\), got {n}$"):
            infill_prompt(tokenizer, "a", "b", n, 40)


@pytest.mark.claim("INF-004")
def test_fills_that_do_not_match_the_tasks_are_refused(tasks: list[Task]) -> None:
    # One fill short (or one over) would pair every later task with another's fill, or drop a task.
    some = tasks[:3]
    for fills in ([t.middle for t in some[:2]], [t.middle for t in some] + ["x"]):
        for run in (infill.execute, infill.run_fills):
            with pytest.raises(ValueError, match="zip"):
                run(some, fills, workers=1, mode=_mode())


@pytest.mark.claim("INF-005")
def test_cli_writes_every_task(tokenizer: Tokenizer, tmp_path: Path, capsys) -> None:
    ckpt = _checkpoint(tmp_path, _model(), tokenizer)
    args = ["infill", "--checkpoint", str(tmp_path / "run"), "--device", "cpu", "--max-new-tokens", "6"]
    assert eval_cli.main([*args, "--sandbox", _mode(), "--limit", "1", "--workers", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    out = Path(summary["samples_file"])
    assert out == tmp_path / "run" / "eval" / f"infill-{ckpt.name}.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["task_id"] for r in rows] == [t.task_id for t in load_tasks(1)]
    assert all(r["result"] in OUTCOMES and r["sandbox"] == _mode() for r in rows)
    assert not any("\n" in r["completion"] for r in rows)
    assert summary["n_tasks"] == len(rows) and summary["prompts_cut"] == len(rows)  # a 160-token context
    assert summary["pass_at_k"]["1"] == sum(r["result"] == "passed" for r in rows) / len(rows)
    assert summary["counts"] == {o: sum(r["result"] == o for r in rows) for o in OUTCOMES}


@pytest.mark.claim("INF-005")
def test_failing_inference_scores_nothing(tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()

    def broken(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("device lost")

    monkeypatch.setattr(model, "hidden", broken)
    with pytest.raises(InferenceError, match="SingleLineInfilling/HumanEval/0/L0: inference failed: RuntimeError"):
        infill.evaluate_infill(model, tokenizer, load_tasks(1), max_new_tokens=8, workers=2, mode=_mode())


@pytest.mark.claim("INF-006")
def test_the_harness_hands_its_settings_on(
    tasks: list[Task], tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from albor.eval.humaneval import check, program
    from albor.eval.sandbox import Limits, Result
    from albor.generate import Sampling

    picked = [tasks[0], tasks[-1]]  # two problems
    runs: list[dict] = []
    verdicts: list[list[Result]] = []  # what the sandbox answers next, where a test sets it

    def run_many(programs, limits=None, workers=1, mode=None, checks=None):
        runs.append({"programs": list(programs), "limits": limits, "workers": workers, "mode": mode, "checks": checks})
        return verdicts.pop(0) if verdicts else [
            Result("passed", f"ran {i}", mode or "guard") for i in range(len(programs))
        ]  # fmt: skip

    streams: list[tuple] = []

    def stream_text(model, tokenizer, ids, max_new_tokens, stop, sampling):
        streams.append((max_new_tokens, stop, sampling))
        return iter(["a", "b"])

    bars: list[dict] = []

    def tqdm(items, **kwargs):
        bars.append(kwargs)
        return items

    monkeypatch.setattr(infill, "run_many", run_many)
    monkeypatch.setattr(infill, "stream_text", stream_text)
    monkeypatch.setattr(infill, "tqdm", tqdm)
    model = SimpleNamespace(cfg=SimpleNamespace(max_seq_len=80))  # a short context: every prompt is cut
    limits, sampling = Limits(cpu_s=3), Sampling(0.5, 4, 0.9, 2)

    # Defaults: greedy sampling, 64 new tokens, one worker, the sandbox's limits and mode, no progress bar.
    result = infill.evaluate_infill(model, tokenizer, picked)  # type: ignore[arg-type]
    assert streams == [(64, ("\n",), Sampling())] * 2 and [b["disable"] for b in bars] == [True]
    (run,) = runs
    assert (run["limits"], run["workers"], run["mode"]) == (None, 1, None)
    problems = [t.problem for t in picked]
    solutions = [p.canonical_solution for p in problems] + [t.solution("ab") for t in picked]
    assert run["programs"] == [program(p, s) for p, s in zip(problems * 2, solutions, strict=True)]
    assert run["checks"] == [check(p) for p in problems * 2]
    assert result.cut == [t.task_id for t in picked], "both prompts were cut to fit"
    summary = result.summary()
    assert summary["n_tasks"] == 2 and summary["prompts_cut"] == 2
    assert "n_problems" not in summary and "samples_per_problem" not in summary, summary
    # Given settings reach the model's stream and the sandbox.
    for seen in (streams, runs, bars):
        seen.clear()
    infill.evaluate_infill(model, tokenizer, picked, sampling, 7, 3, limits, True, "guard")  # type: ignore[arg-type]
    assert streams == [(7, ("\n",), sampling)] * 2 and [b["disable"] for b in bars] == [False]
    assert (runs[0]["limits"], runs[0]["workers"], runs[0]["mode"]) == (limits, 3, "guard")
    # Each sample is the task's first (index 0), with its fill and the sandbox's verdict and detail.
    samples = infill.execute(picked, ["x", "y"], 2, limits, "guard")
    assert [(s.task_id, s.index, s.completion, s.result, s.detail) for s in samples] == [
        (picked[0].task_id, 0, "x", "passed", "ran 2"), (picked[1].task_id, 0, "y", "passed", "ran 3")
    ]  # fmt: skip
    with pytest.raises(ValueError, match="zip"):  # a fill short is refused, never scored as fewer tasks
        infill.execute(picked, ["x"], 1)
    # A canonical solution that fails stops the run naming its problem.
    verdicts.append([Result("failed", "boom", "guard"), *[Result("passed", "", "guard")] * 3])
    failed = re.escape(f"canonical solutions did not pass: [('{picked[0].problem.task_id}', 'failed', 'boom')]")
    with pytest.raises(sandbox.SandboxError, match=failed):
        infill.execute(picked, ["x", "y"], 1)
    # The self-check runs the canonical middles and then empty ones, with the settings it is given.
    runs.clear()
    infill.self_check(picked, 2, limits, "guard")
    assert [(r["limits"], r["workers"], r["mode"]) for r in runs] == [(limits, 2, "guard")] * 2
    assert runs[1]["programs"] == [program(t.problem, t.solution("")) for t in picked]
