"""The mutant run: each gap's falsifiers, run against a copy of the tree with the gap's fault applied, must fail.

Every mutant is a patch: the runner copies the checkout to a temporary folder, applies the patch
there, checks that the copy's ``albor`` is the one Python imports, and runs the falsifiers in a
subprocess. A fault that no falsifier notices is a surviving mutant. A mutant whose falsifiers all
need a device this machine lacks is reported as not runnable here, and is left out of the kill rate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from albor.hardware import card_name, device_kind
from albor.io import write_json_atomic
from albor.verify import generated
from albor.verify.battery import LOCAL_RESULTS
from albor.verify.faults import FaultError, apply, copy_tree, faults_of
from albor.verify.gaps import Gap, load_gaps
from albor.verify.junit import cases_of, load_results
from albor.verify.layout import GAPS_DIR, ROOT


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


def _imported_from(tree: Path, env: dict[str, str]) -> Path:
    probe = [sys.executable, "-c", "import albor; print(albor.__file__)"]
    out = subprocess.run(probe, cwd=tree, env=env, capture_output=True, text=True, check=True).stdout
    return Path(out.strip()).resolve()


def run_in_copy(root: Path, diff: str | None, tests: list[str]) -> tuple[int, dict[str, str], str]:
    """pytest's exit status, the outcome of every case, and the output's tail, for ``tests`` run against a
    copy of ``root`` with ``diff`` applied (none: the copy as it is). Raises FaultError when it does not apply."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = copy_tree(root, Path(tmp) / "tree")
        if diff is not None:
            apply(diff, tree)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
        where = _imported_from(tree, env)
        if not where.is_relative_to(tree.resolve()):
            raise RuntimeError(f"the copy's albor is not the one imported ({where})")
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *tests]
        proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
        outcomes = load_results([xml]) if xml.is_file() else {}
    return proc.returncode, outcomes, " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])


def run_mutant(m: Mutant, root: Path = ROOT, clean: dict[str, str] | None = None) -> Mutant:
    """Apply ``m`` to a copy of ``root`` and run its falsifiers there; sets ``killed``, ``runnable`` and ``detail``.

    ``clean`` holds the outcomes of the same falsifiers on the unpatched tree: a falsifier that does not
    pass there proves nothing against the mutant, so the mutant is an error, not a kill.
    """
    if clean is not None:
        broken = sorted(n for f in m.falsifiers for n in cases_of(f, clean) if clean[n] == "failed")
        if broken:
            m.detail = f"ERROR: without the fault these falsifiers fail already: {', '.join(broken[:3])}"
            return m
    try:
        code, outcomes, tail = run_in_copy(root, m.diff, m.falsifiers)
    except FaultError as e:
        m.detail = f"ERROR: the patch does not apply: {e}"
        return m
    failed = sorted(n for n, o in outcomes.items() if o == "failed")
    counts = {o: sum(v == o for v in outcomes.values()) for o in ("passed", "failed", "skipped")}
    if code == 1 and failed:
        m.killed, m.detail = True, f"killed by {', '.join(failed[:3])}{' …' if len(failed) > 3 else ''}"
    elif code == 0 and counts["passed"] == 0:
        m.runnable, m.detail = False, f"not runnable here: all {counts['skipped']} case(s) skipped"
    elif code == 0:
        m.detail = f"SURVIVED: {counts['passed']} passed, {counts['skipped']} skipped"
    else:
        m.detail = f"ERROR: pytest exit {code}: {tail}"
    return m


def mutants_of(gaps: list[Gap], gaps_dir: Path = GAPS_DIR) -> list[Mutant]:
    """One mutant per (gap, fault): the fault's patch against the gap's falsifiers."""
    by_id = {g.id: g for g in gaps}
    return [
        Mutant(f.name, f.gap, by_id[f.gap].severity, by_id[f.gap].falsifiers, f.diff) for f in faults_of(gaps, gaps_dir)
    ]


def run_mutants(gaps_dir: Path = GAPS_DIR, workers: int | None = None) -> dict:
    """Run every mutant; returns the JSON-ready summary."""
    mutants = mutants_of(load_gaps(gaps_dir), gaps_dir)
    # Every falsifier once on the unpatched copy: only one that passes there can kill a mutant.
    _, clean, _ = run_in_copy(ROOT, None, sorted({f for m in mutants for f in m.falsifiers}))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        done = list(pool.map(lambda m: run_mutant(m, ROOT, clean), mutants))
    where = {"device": device_kind(), "card": card_name(), "date": dt.date.today().isoformat()}
    return summarize([asdict(m) | {"ran_on": where} for m in done]) | where


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
    summary = run_mutants(GAPS_DIR)
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
