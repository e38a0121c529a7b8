"""The mutant run: each gap's falsifiers, run against a copy of the tree with the gap's fault applied,
must fail.

Every mutant is a patch. The runner starts a few mutant workers (albor.verify.mutant_worker), each
with its own copy of the checkout and the heavy libraries imported once; for each mutant a worker
puts the patched files in its copy, runs the falsifiers in a forked process, and puts the files
back. A fault that no falsifier notices is a surviving mutant. A mutant whose falsifiers all need a
device this machine lacks is reported as not runnable here, and is left out of the kill rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from albor.hardware import card_name, device_kind
from albor.io import write_json_atomic
from albor.verify import generated
from albor.verify.battery import LOCAL_RESULTS
from albor.verify.faults import FaultError, faults_of, files_of, patched_sources
from albor.verify.gaps import Gap, load_gaps
from albor.verify.generated import Workers
from albor.verify.generated import workers as worker_pool
from albor.verify.junit import cases_of, durations_of, load_results, outcomes_of
from albor.verify.layout import GAPS_DIR, ROOT

MUTANT_TIMEOUT_S = 900.0  # the slowest gap's falsifiers take a few minutes on a loaded 2-core machine


@dataclass
class Mutant:
    """One patch run against the falsifiers that must catch it."""

    fault: str
    gap: str
    severity: str
    falsifiers: list[str]
    diff: str
    killed: bool = False
    runnable: bool = True
    detail: str = ""


def run_mutant(m: Mutant, pool: Workers, clean: dict[str, str], seconds: dict[str, float], root: Path = ROOT) -> Mutant:
    """Run ``m``'s falsifiers on a worker's copy of ``root`` with the patch's files in place; sets ``killed``,
    ``runnable`` and ``detail``.

    ``clean`` holds the outcomes of the same falsifiers on the unpatched tree: a falsifier that does not
    pass there proves nothing against the mutant, so the mutant is an error, not a kill. ``seconds``, their
    times there, orders them fastest first; the first failure kills the mutant and ends its run.
    """
    broken = sorted(n for f in m.falsifiers for n in cases_of(f, clean) if clean[n] == "failed")
    if broken:
        m.detail = f"ERROR: without the fault these falsifiers fail already: {', '.join(broken[:3])}"
        return m
    try:
        files = patched_sources(m.diff, files_of(m.diff), root)
    except FaultError as e:
        m.detail = f"ERROR: the patch does not apply: {e}"
        return m
    tests = sorted(m.falsifiers, key=lambda f: _cost([f], seconds))
    reply = pool.run({"files": files, "tests": tests, "exitfirst": True, "timeout": MUTANT_TIMEOUT_S})
    outcomes = outcomes_of(reply["junit"])
    failed = sorted(n for n, o in outcomes.items() if o == "failed")
    counts = {o: sum(v == o for v in outcomes.values()) for o in ("passed", "failed", "skipped")}
    code = reply["code"]
    if reply["timed_out"]:  # the falsifiers end on the clean tree: a hang is the mutant's
        m.killed, m.detail = True, f"killed: the falsifiers did not end within {MUTANT_TIMEOUT_S:.0f} s"
    elif code == 1 and failed:
        m.killed, m.detail = True, f"killed by {', '.join(failed[:3])}{' …' if len(failed) > 3 else ''}"
    elif code == 0 and counts["passed"] == 0:
        m.runnable, m.detail = False, f"not runnable here: all {counts['skipped']} case(s) skipped"
    elif code == 0:
        m.detail = f"SURVIVED: {counts['passed']} passed, {counts['skipped']} skipped"
    else:
        m.detail = f"ERROR: pytest exit {code}: {' | '.join(reply['tail'].strip().splitlines()[-5:])}"
    return m


def _cost(falsifiers: list[str], seconds: dict[str, float]) -> float:
    """The clean run's seconds for these falsifiers, every parametrized case counted."""
    return sum(seconds[n] for f in falsifiers for n in cases_of(f, seconds))


def mutants_of(gaps: list[Gap], gaps_dir: Path = GAPS_DIR) -> list[Mutant]:
    """One mutant per (gap, fault): the fault's patch against the gap's falsifiers."""
    by_id = {g.id: g for g in gaps}
    return [
        Mutant(f.name, f.gap, by_id[f.gap].severity, by_id[f.gap].falsifiers, f.diff) for f in faults_of(gaps, gaps_dir)
    ]


def run_mutants(gaps_dir: Path = GAPS_DIR, workers: int | None = None, baseline: Path | None = None) -> dict:
    """Run every mutant; returns the JSON-ready summary.

    ``baseline`` is the JUnit XML of a battery run of this same tree (as CI has just made): its outcomes
    stand for the unpatched copy's, instead of running every falsifier once more.
    """
    mutants = mutants_of(load_gaps(gaps_dir), gaps_dir)
    with worker_pool(workers or os.cpu_count() or 1, ROOT) as pool:
        # Every falsifier once on the unpatched copy: only one that passes there can kill a mutant.
        tests = sorted({f for m in mutants for f in m.falsifiers})
        if baseline is not None:
            clean, seconds = load_results([baseline]), durations_of(baseline.read_text())
        else:
            xml = pool.run({"files": {}, "tests": tests, "timeout": MUTANT_TIMEOUT_S * 4})["junit"]
            clean, seconds = outcomes_of(xml), durations_of(xml)
        # The longest first, so that no worker is left alone with a long one at the end.
        order = sorted(mutants, key=lambda m: -_cost(m.falsifiers, seconds))
        with ThreadPoolExecutor(max_workers=len(pool.procs)) as threads:
            list(threads.map(lambda m: run_mutant(m, pool, clean, seconds), order))
    # run_mutant sets each mutant's outcome in place; the summary lists them in gap order.
    where = {"device": device_kind(), "card": card_name(), "date": dt.date.today().isoformat()}
    return summarize([asdict(m) | {"ran_on": where} for m in mutants]) | where


def summarize(mutants: list[dict]) -> dict:
    """Kill counts over the runnable mutants of a run."""
    runnable = [m for m in mutants if m["runnable"]]
    killed = sum(m["killed"] for m in runnable)
    return {
        "mutants": mutants,
        "killed": killed,
        "total": len(runnable),
        "not_runnable": len(mutants) - len(runnable),
        "kill_rate": killed / len(runnable) if runnable else 1.0,
    }


def merge_runs(local: dict, others: list[dict]) -> dict:
    """The local run, with each mutant it could not run taken from another run (a committed GPU run) that
    ran the same patch."""
    merged = []
    for m in local["mutants"]:
        if not m["runnable"]:
            elsewhere = [o for run in others for o in run["mutants"] if o["fault"] == m["fault"] and o["runnable"]]
            same = [o for o in elsewhere if o.get("diff") == m.get("diff")]
            m = same[0] if same else m
        merged.append(m)
    return summarize(merged)


MUTANTS_JSON = LOCAL_RESULTS / "mutants.json"


def main(argv: list[str] | None = None, prog: str = "python -m albor.verify.mutants") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="run each gap's faults (all must die), or with --generated the engine's mutants"
    )
    parser.add_argument("--json", type=Path, default=MUTANTS_JSON, help="where the summary is written")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="the JUnit XML of a battery run of this same tree: the falsifiers' outcomes without any fault",
    )
    parser.add_argument(
        "--generated",
        action="store_true",
        help="run the mutation engine's mutants of each named contract's sources (all contracts when none)",
    )
    parser.add_argument("components", nargs="*", help="with --generated: the contracts to run")
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="with --generated: re-run N killed mutants per contract of the committed runs; fail on any that survives",
    )
    parser.add_argument(
        "--files", nargs="+", default=[], help="with --generated and one contract: only the mutants of these sources"
    )
    parser.add_argument(
        "--functions",
        nargs="+",
        default=[],
        help="with --generated and one contract: only the mutants of these functions (Class.method), nested ones too",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="with --generated: parallel workers")
    parser.add_argument(
        "--out",
        type=Path,
        help="with --generated: where runs are written (default falsification/results/generated/; "
        "a sample goes to falsification/results/local/)",
    )
    args = parser.parse_args(argv)
    scope = generated.Scope(tuple(args.files), tuple(args.functions))
    if args.generated:
        if scope != generated.Scope() and (len(args.components) != 1 or args.sample is not None):
            parser.error("--files and --functions go with one named contract, without --sample")
        out = args.out or (LOCAL_RESULTS if args.sample is not None else generated.GENERATED_RESULTS)
        return generated.main(args.components, args.workers, args.sample, out, scope)
    if args.components or args.sample is not None or scope != generated.Scope():
        parser.error("components, --sample, --files and --functions go with --generated")
    if args.baseline is not None and not args.baseline.is_file():
        parser.error(f"--baseline {args.baseline}: no such JUnit XML file")
    summary = run_mutants(GAPS_DIR, baseline=args.baseline)
    write_json_atomic(args.json, summary)
    width = max(len(m["fault"]) for m in summary["mutants"]) if summary["mutants"] else 5
    print(f"{'fault':<{width}}  {'gap':<7}  {'severity':<8}  result")
    for m in summary["mutants"]:
        verdict = "killed" if m["killed"] else "n/a" if not m["runnable"] else "SURVIVED"
        print(f"{m['fault']:<{width}}  {m['gap']:<7}  {m['severity']:<8}  {verdict}: {m['detail']}")
    print(
        f"mutants: {summary['killed']} killed of {summary['total']} "
        f"({summary['kill_rate']:.0%}); {summary['not_runnable']} not runnable on this device"
    )
    return 0 if summary["killed"] == summary["total"] else 1


if __name__ == "__main__":
    sys.exit(main())
