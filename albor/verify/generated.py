"""Generated mutants: the engine's mutants of a contract's source files, each against that contract's falsifiers.

Registered faults are bugs someone wrote down beside the falsifier that catches them; generated
mutants are bugs nobody chose, so their kill rate measures the battery. For one contract the run

1. runs each falsifier alone on an unpatched copy of the tree, under coverage (subprocesses
   included): its outcome, its time, and the lines of the runtime it executes;
2. asks the engine (``albor.verify.engine``) for every mutant of the contract's source files;
3. runs each mutant against the falsifiers that execute its lines and passed on the clean copy,
   fastest first, stopping at the first failure. A mutant no falsifier executes survives unrun; one in
   a file coverage never saw run (a child process it cannot follow) runs against every such falsifier.

A run may be scoped to some of the contract's files or functions (``--files``, ``--functions``): the
mutants outside the scope are counted, not run, and the run says so. ``REQUIRED`` names the contracts
whose score the project promises, each with the scope the promise covers.

A survivor listed in ``contracts/equivalent/<component>.yaml``, with the reason it cannot change
behaviour, counts as equivalent and leaves the score's denominator; the list is reviewed by hand.
The full run of a contract is committed as ``falsification/results/generated/<component>.json``
with its date, commit and machine; ``sample`` re-runs a deterministic few of its killed mutants
against the falsifier that killed them, to catch a battery that has grown weaker since.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

from albor.config import load_yaml
from albor.hardware import card_name, device_kind
from albor.io import write_json_atomic
from albor.verify import mutant_worker
from albor.verify.contracts import load_contracts
from albor.verify.faults import copy_tree
from albor.verify.junit import Outcome, outcomes_of
from albor.verify.layout import COMMITTED_RESULTS, CONTRACTS_DIR, ROOT
from albor.verify.mutant_selection import Probe, reported_lines, select, statement_lines
from albor.verify.schema import Contract

if TYPE_CHECKING:
    from albor.verify.engine import Mutation

Status = Literal["killed", "survived", "equivalent", "not-runnable", "error"]
GENERATED_RESULTS = COMMITTED_RESULTS / "generated"
EQUIVALENTS_DIR = CONTRACTS_DIR / "equivalent"
PROBE_TIMEOUT = 1800.0
FLOOR = 0.90


@dataclass(frozen=True)
class Scope:
    """The part of a contract's mutants a run measures: all of them (empty scope), or those in some files and/or
    some functions (a function's nested definitions included)."""

    files: tuple[str, ...] = ()
    functions: tuple[str, ...] = ()

    def admits(self, file: str, function: str) -> bool:
        """Whether a mutant of ``function`` in ``file`` is inside the scope."""
        in_file = not self.files or file in self.files
        in_function = not self.functions or any(function == f or function.startswith(f + ".") for f in self.functions)
        return in_file and in_function

    def covers(self, other: Scope) -> bool:
        """Whether every mutant ``other`` admits is admitted here too (an empty scope covers every scope)."""
        files = not self.files or (bool(other.files) and set(other.files) <= set(self.files))
        functions = not self.functions or (bool(other.functions) and set(other.functions) <= set(self.functions))
        return files and functions

    def describe(self) -> str:
        """``all sources``, or the files and functions it is limited to."""
        parts = [*(["files " + ", ".join(self.files)] if self.files else []),
                 *(["functions " + ", ".join(self.functions)] if self.functions else [])]  # fmt: skip
        return "; ".join(parts) or "all sources"

    def to_json(self) -> dict[str, list[str]]:
        return {"files": list(self.files), "functions": list(self.functions)}

    @staticmethod
    def from_json(d: dict[str, list[str]] | None) -> Scope:
        d = d or {}
        return Scope(tuple(d.get("files", ())), tuple(d.get("functions", ())))


# What the project promises: a generated-mutant score of at least FLOOR for the ops, every optimizer contract,
# the data cursor, checkpoints and the trainer step. The ops' promise covers their reference implementations
# (albor/ops/): the Triton kernels beside them are measured where a run includes them. The trainer's covers
# the step: the batch it reads, the loss it sums, autocast and the update.
TRAINER_STEP = ("Trainer.train_step", "Trainer._batch", "Trainer._loss_sum", "Trainer._autocast", "steps_available")
REQUIRED: dict[str, Scope] = {
    "attention": Scope(("albor/ops/attention.py",)),
    "cross_entropy": Scope(("albor/ops/cross_entropy.py",)),
    "rmsnorm": Scope(("albor/ops/rmsnorm.py",)),
    "rope": Scope(("albor/ops/rope.py",)),
    "swiglu": Scope(("albor/ops/swiglu.py",)),
    "adamw": Scope(),
    "muon": Scope(),
    "lr_schedule": Scope(),
    "grad_clip": Scope(),
    "grad_accumulation": Scope(),
    "cursor": Scope(),
    "checkpoint": Scope(),
    "trainer": Scope(("albor/train/trainer.py",), TRAINER_STEP),
}
# Promised contracts with no committed run over the promised scope yet, and why (a run below the floor is kept
# out of the committed runs): the report names them as not measured (no score, never counted as met), and an
# entry must go once a run covering the scope is committed.
NOT_YET_MEASURED: dict[str, str] = {}


class Equivalent(BaseModel):
    """A generated mutant marked by hand as unable to change behaviour, and why."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[0-9a-f]{12}(-\d+)?$")
    file: str
    function: str
    change: str = Field(min_length=1, description="the changed line, for the reader")
    reason: str = Field(min_length=10)


def load_equivalents(component: str, directory: Path = EQUIVALENTS_DIR) -> dict[str, Equivalent]:
    """The reviewed equivalent mutants of ``component`` by id (none when it has no file)."""
    path = directory / f"{component}.yaml"
    if not path.is_file():
        return {}
    entries = load_yaml(path).get("equivalent") or []
    try:
        items = [Equivalent(**e) for e in entries]
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None
    return {e.id: e for e in items}


@dataclass
class Result:
    """One generated mutant and what the battery made of it."""

    id: str
    file: str
    line: int
    function: str
    operator: str
    status: Status = "survived"
    detail: str = ""
    killed_by: str | None = None
    seconds: float = 0.0
    tests: list[str] = field(default_factory=list)
    diff: str | None = None


class Workers:
    """``n`` mutant workers, each with its own copy of the tree; ``run`` sends a job to a free one."""

    def __init__(self, n: int, root: Path = ROOT) -> None:
        # The commit of the tree as it is copied: what the workers test, whatever the checkout does meanwhile.
        self.commit = _commit()
        self._tmp = tempfile.TemporaryDirectory(prefix="albor-mutants-")
        self._free: queue.Queue[subprocess.Popen[str]] = queue.Queue()
        self.procs: list[subprocess.Popen[str]] = []
        script = Path(mutant_worker.__file__)
        env = dict(os.environ)
        if device_kind() == "cpu":
            # Without CUDA the kernels run in Triton's interpreter (as falsification/settings.py sets for
            # the tests); the worker reads it before importing triton and cannot ask torch itself.
            env.setdefault("TRITON_INTERPRET", "1")
        for i in range(n):
            tree = copy_tree(root, Path(self._tmp.name) / f"w{i}" / "tree")
            proc = subprocess.Popen(
                [sys.executable, str(script), str(tree)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=env,
            )
            assert proc.stdout is not None
            if json.loads(proc.stdout.readline() or "{}").get("ready") is not True:
                raise RuntimeError(f"mutant worker {i} did not start")
            self.procs.append(proc)
            self._free.put(proc)

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        proc = self._free.get()
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(json.dumps(job) + "\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline() or '{"error": "the worker died"}')
        finally:
            self._free.put(proc)
        if "error" in reply:
            raise RuntimeError(f"mutant worker: {reply['error']}")
        return reply

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)
        self._tmp.cleanup()


@contextmanager
def workers(n: int, root: Path = ROOT) -> Iterator[Workers]:
    pool = Workers(n, root)
    try:
        yield pool
    finally:
        pool.close()


def falsifiers_of(contract: Contract) -> list[str]:
    """The contract's falsifier node ids, each once, in the contract's order."""
    return list(dict.fromkeys(f for ob in contract.obligations for f in ob.falsifiers))


def probe(contract: Contract, pool: Workers) -> Probe:
    """Each falsifier alone on the clean copy, under coverage of the contract's sources."""
    tests = falsifiers_of(contract)
    sources = contract.source_files()

    def one(test: str) -> tuple[str, dict[str, Any]]:
        return test, pool.run({"tests": [test], "coverage": sources, "timeout": PROBE_TIMEOUT})

    outcomes: dict[str, Outcome] = {}
    seconds: dict[str, float] = {}
    covered: dict[str, dict[str, set[int]]] = {}
    compiled: set[str] = set()
    with ThreadPoolExecutor(len(pool.procs)) as ex:
        for test, reply in ex.map(one, tests):
            if reply["unreadable"]:
                raise RuntimeError(
                    f"{test} on the clean copy: {reply['unreadable']}, so the run cannot know whether it passed; "
                    f"the worker's log ends:\n{reply['tail'][-1500:]}"
                )
            outcomes |= outcomes_of(reply["junit"])
            seconds[test] = reply["seconds"]
            covered[test] = {f: set(lines) for f, lines in (reply["covered"] or {}).items()}
            if reply["compiled"]:
                compiled.add(test)
    return Probe(outcomes, seconds, covered, compiled)


def verdict(r: Result, reply: dict[str, Any]) -> Result:
    """Set ``r``'s status from a worker's reply for a mutant run."""
    r.seconds = reply["seconds"]
    outcomes = outcomes_of(reply["junit"])
    failed = [n for n, o in outcomes.items() if o == "failed"]
    code = reply["code"]
    if reply["timed_out"]:
        r.status, r.detail = "killed", f"timed out after {reply['seconds']:.0f} s"
        r.killed_by = r.tests[0] if len(r.tests) == 1 else None
    elif code == mutant_worker.WORKER_FAILED:
        r.status, r.detail = "error", f"the worker failed: {reply['tail'][-500:]}"
    elif code == 0:
        passed = sum(o == "passed" for o in outcomes.values())
        r.status = "survived" if passed else "not-runnable"
        r.detail = f"{passed} passed, {len(outcomes) - passed} skipped"
    else:
        # Every selected falsifier passed on the clean copy with the same command: any failure is the mutant's.
        r.status, r.killed_by = "killed", failed[0] if failed else None
        r.detail = f"killed by {failed[0]}" if failed else f"pytest exit {code}: {reply['tail'][-300:].strip()}"
    return r


Engine = Callable[[str, str], list["Mutation"]]


def engine_mutations() -> Engine:
    """The engine's ``mutations`` (albor.verify.engine), which needs mutmut, a test dependency."""
    try:
        from albor.verify import engine
    except ImportError as e:
        raise RuntimeError(f"generated mutants need the mutation engine: pip install 'albor[test]' ({e})") from e
    return engine.mutations


def run_contract(
    contract: Contract,
    pool: Workers,
    log: TextIO | None = None,
    make: Engine | None = None,
    scope: Scope | None = None,
) -> dict[str, Any]:
    """Probe, generate (with ``make``, the engine), run every mutant of ``contract`` inside ``scope`` (all when
    None); returns the JSON-ready summary."""
    make = make or engine_mutations()
    scope = scope or Scope()
    unknown = sorted(set(scope.files) - set(contract.source_files()))
    if unknown:
        raise ValueError(f"{contract.component}: {unknown} are not among its sources {contract.source_files()}")
    p = probe(contract, pool)
    tests = falsifiers_of(contract)
    broken = [t for t in tests if not p.usable(t) and any(o == "failed" for o in _cases(t, p.outcomes))]
    if broken:
        raise RuntimeError(f"{contract.component}: falsifiers fail on the clean tree: {broken}")
    equivalents = load_equivalents(contract.component)
    jobs: list[tuple[Result, Mutation]] = []
    population = 0
    hashes = {f: sha256(ROOT / f) for f in contract.source_files()}
    for file in contract.source_files():
        source = (ROOT / file).read_text()
        statements = statement_lines(source)
        for m in make(file, source):
            population += 1
            if not scope.admits(m.file, m.function):
                continue
            r = Result(m.id, m.file, m.line, m.function, m.operator)
            r.tests = select(m, reported_lines(statements, m.line, m.end_line), p, tests)
            jobs.append((r, m))

    def one(job: tuple[Result, Mutation]) -> Result:
        r, m = job
        if not r.tests:
            runnable = any(p.usable(t) for t in tests)
            r.status = "survived" if runnable else "not-runnable"
            r.detail = "no falsifier executes this code" if runnable else "no falsifier runs on this machine"
        else:
            timeout = 3 * sum(p.seconds[t] for t in r.tests) + 120
            reply = pool.run({"files": {m.file: m.source}, "tests": r.tests, "exitfirst": True, "timeout": timeout})
            verdict(r, reply)
        if r.status == "survived" and r.id in equivalents:
            r.status, r.detail = "equivalent", equivalents[r.id].reason
        elif r.status == "killed" and r.id in equivalents:
            r.detail += "; listed as equivalent in the reviewed file, wrongly"
        if r.status != "killed":
            r.diff = m.diff
        if log is not None:
            print(
                f"  {r.status:<12} {r.file}:{r.line} {r.function} [{r.operator}] {r.detail[:100]}", file=log, flush=True
            )
        return r

    with ThreadPoolExecutor(len(pool.procs)) as ex:
        results = list(ex.map(one, jobs))
    stale = sorted(set(equivalents) - {r.id for r in results} - {e.id for e in equivalents.values()
                                                                  if not scope.admits(e.file, e.function)})  # fmt: skip
    return summary(contract, results, p, stale, scope, population, pool.commit, hashes)


def _cases(test: str, outcomes: dict[str, Outcome]) -> list[Outcome]:
    return [o for n, o in outcomes.items() if n == test or n.startswith(test + "[")]


def counts(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Killed, survived, equivalent … and the score: killed over killed and survived (None when none ran)."""
    n = {
        s: sum(r["status"] == s for r in results) for s in ("killed", "survived", "equivalent", "not-runnable", "error")
    }
    ran = n["killed"] + n["survived"]
    return {**n, "total": len(results), "score": n["killed"] / ran if ran else None}


def _commit() -> str:
    """The checkout's commit, with ``-dirty`` when files differ from it (the run then tested those)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    return (head.stdout.strip() or "unknown") + ("-dirty" if status.stdout.strip() else "")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def summary(
    contract: Contract,
    results: list[Result],
    p: Probe,
    stale: list[str],
    scope: Scope,
    population: int,
    commit: str,
    hashes: dict[str, str],
) -> dict[str, Any]:
    # A kill names its falsifier; the falsifiers a survivor passed are kept, to show what did not catch it.
    rows = [asdict(r) | ({"tests": []} if r.status == "killed" else {}) for r in results]
    return {
        "component": contract.component,
        "engine": f"mutmut {metadata.version('mutmut')} operators (albor.verify.engine)",
        "date": dt.date.today().isoformat(),
        "commit": commit,
        "device": device_kind(),
        "card": card_name(),
        "sources": hashes,
        "scope": scope.to_json(),
        "population": population,
        "falsifier_seconds": p.seconds,
        "stale_equivalents": stale,
        **counts(rows),
        "mutants": rows,
    }


def load_run(component: str, directory: Path = GENERATED_RESULTS) -> dict[str, Any] | None:
    """The committed full run of ``component``, or None."""
    path = directory / f"{component}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_runs(directory: Path = GENERATED_RESULTS) -> dict[str, dict[str, Any]]:
    """Every committed full run, by component."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))}


def is_stale(run: dict[str, Any], contracts: dict[str, Contract]) -> bool:
    """Whether the contract's sources changed since the run (or the contract is gone)."""
    contract = contracts.get(run["component"])
    if contract is None:
        return True
    now = {f: sha256(ROOT / f) for f in contract.source_files() if (ROOT / f).is_file()}
    return now != run["sources"]


def scoped_score(run: dict[str, Any], scope: Scope) -> float | None:
    """The run's score over the mutants inside ``scope`` (None when none of them ran)."""
    inside = [m for m in run["mutants"] if scope.admits(m["file"], m["function"])]
    return counts(inside)["score"]


def requirement(component: str, run: dict[str, Any] | None) -> dict[str, Any] | None:
    """For a contract in REQUIRED: the scope promised, the score over it, and whether the promise is met."""
    if component not in REQUIRED:
        return None
    want = REQUIRED[component]
    if run is None or not Scope.from_json(run.get("scope")).covers(want):
        why = "no committed run" if run is None else "the committed run does not cover the promised scope"
        return {"scope": want.describe(), "score": None, "met": False, "why": why}
    score = scoped_score(run, want)
    met = score is not None and score >= FLOOR
    why = "" if met else "nothing in the promised scope ran" if score is None else f"below {FLOOR:.0%}"
    return {"scope": want.describe(), "score": score, "met": met, "why": why}


def overall(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-contract counts, scores, scopes, dates and staleness, and the score over all contracts (killed over
    killed and survived); ``missing``: the contracts with no committed run, which have no score (never counted
    as killed); ``unmet``: the REQUIRED contracts whose promise a committed run does not show met."""
    contracts = load_contracts()
    keys = ("killed", "survived", "equivalent", "not-runnable", "error", "total", "score", "date", "commit", "card")
    per = {
        c: {k: run[k] for k in keys}
        | {
            "stale": is_stale(run, contracts),
            "scope": Scope.from_json(run.get("scope")).describe(),
            "population": run.get("population", run["total"]),
        }
        for c, run in runs.items()
    }
    killed = sum(v["killed"] for v in per.values())
    ran = killed + sum(v["survived"] for v in per.values())
    missing = sorted(set(contracts) - set(runs))
    required = {c: requirement(c, runs.get(c)) for c in REQUIRED}
    for c, why in NOT_YET_MEASURED.items():
        if required[c] is not None and not required[c]["met"] and required[c]["score"] is None:
            required[c]["why"] += f": {why}"
    unmet = sorted(c for c, r in required.items() if r is not None and not r["met"])
    return {
        "contracts": per,
        "killed": killed,
        "ran": ran,
        "score": killed / ran if ran else None,
        "missing": missing,
        "required": required,
        "floor": FLOOR,
        "unmet": unmet,
        "not_yet_measured": sorted(NOT_YET_MEASURED),
    }


def sample_ids(run: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """``n`` killed mutants of a committed run, the same every time: lowest sha256 of their id first."""
    killed = [m for m in run["mutants"] if m["status"] == "killed" and m.get("killed_by")]
    return sorted(killed, key=lambda m: hashlib.sha256(m["id"].encode()).hexdigest())[:n]


def run_sample(components: list[str], per_contract: int, pool: Workers) -> dict[str, Any]:
    """Re-run a deterministic sample of each committed run's killed mutants against the falsifier that killed
    them; a sampled mutant that now survives is a regression of the battery."""
    contracts = load_contracts()
    make = engine_mutations()
    jobs: list[tuple[str, dict[str, Any], Mutation]] = []
    notes: list[str] = []
    for component in components:
        run = load_run(component)
        if run is None:
            notes.append(f"{component}: no committed run")
            continue
        current = {m.id: m for f in contracts[component].source_files() for m in make(f, (ROOT / f).read_text())}
        chosen = [m for m in sample_ids(run, len(run["mutants"])) if m["id"] in current][:per_contract]
        gone = len(run["mutants"]) - sum(m["id"] in current for m in run["mutants"])
        if gone:
            notes.append(f"{component}: {gone} mutants of the committed run no longer exist (the source changed)")
        jobs += [(component, m, current[m["id"]]) for m in chosen]

    def one(job: tuple[str, dict[str, Any], Mutation]) -> dict[str, Any]:
        component, committed, m = job
        r = Result(m.id, m.file, m.line, m.function, m.operator, tests=[committed["killed_by"]])
        reply = pool.run({"files": {m.file: m.source}, "tests": r.tests, "exitfirst": True, "timeout": 600})
        verdict(r, reply)
        return {"component": component, **asdict(r), "diff": m.diff if r.status != "killed" else None}

    with ThreadPoolExecutor(len(pool.procs)) as ex:
        done = list(ex.map(one, jobs))
    regressions = [d for d in done if d["status"] != "killed"]
    return {"date": dt.date.today().isoformat(), "commit": pool.commit, "sampled": done, "regressions": regressions,
            "notes": notes}  # fmt: skip


def write_run(run: dict[str, Any], directory: Path = GENERATED_RESULTS) -> Path:
    path = directory / f"{run['component']}.json"
    write_json_atomic(path, run)
    return path


def print_run(run: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """A contract's counts and score, then every survivor as a diff."""
    score = "n/a" if run["score"] is None else f"{run['score']:.1%}"
    print(
        f"{run['component']}: {run['killed']} killed, {run['survived']} survived, {run['equivalent']} equivalent, "
        f"{run['not-runnable']} not runnable, {run['error']} errors of {run['total']}: score {score}",
        file=out,
    )
    population = run.get("population", run["total"])
    if population != run["total"]:
        scope = Scope.from_json(run.get("scope")).describe()
        print(f"scope: {scope} ({run['total']} of the contract's {population} mutants)", file=out)
    if (req := requirement(run["component"], run)) is not None:
        verdict = "met" if req["met"] else f"NOT met: {req['why']}"
        shown = "n/a" if req["score"] is None else f"{req['score']:.1%}"
        print(f"promised: at least {FLOOR:.0%} over {req['scope']}: {shown}, {verdict}", file=out)
    for m in run["mutants"]:
        if m["status"] in ("survived", "error"):
            print(
                f"\n{m['status'].upper()} {m['file']}:{m['line']} {m['function']} [{m['operator']}]: {m['detail']}",
                file=out,
            )
            print(m["diff"], end="", file=out)
    for stale in run["stale_equivalents"]:
        print(
            f"STALE: {stale} is listed in contracts/equivalent/{run['component']}.yaml but no longer generated",
            file=out,
        )


def main(components: list[str], workers_n: int, sample: int | None, out_dir: Path, scope: Scope | None = None) -> int:
    """``albor mutants --generated``: the run of each component (all when none are named) over ``scope`` (all its
    mutants when None), written to ``out_dir``, or with ``sample`` the regression check against the committed
    runs."""
    contracts = load_contracts()
    unknown = sorted(set(components) - set(contracts))
    if unknown:
        print(f"unknown component(s) {unknown}; contracts: {', '.join(contracts)}", file=sys.stderr)
        return 2
    names = components or list(contracts)
    with workers(workers_n) as pool:
        if sample is not None:
            result = run_sample(names, sample, pool)
            write_json_atomic(out_dir / "generated-sample.json", result)
            for note in result["notes"]:
                print(f"note: {note}")
            for r in result["regressions"]:
                print(
                    f"REGRESSION {r['component']} {r['file']}:{r['line']} {r['function']}: {r['detail']}\n{r['diff']}"
                )
            print(f"sample: {len(result['sampled']) - len(result['regressions'])} of {len(result['sampled'])} "
                  f"committed kills reproduced; {len(result['regressions'])} regression(s)")  # fmt: skip
            return 1 if result["regressions"] else 0
        failed = False
        for name in names:
            print(f"== {name}", flush=True)
            run = run_contract(contracts[name], pool, log=sys.stdout, scope=scope)
            path = write_run(run, out_dir)
            print_run(run)
            print(f"written to {path}", flush=True)
            failed |= run["error"] > 0 or bool(run["stale_equivalents"])
    return 1 if failed else 0
