"""The falsification report: battery score, obligation coverage, mutant kill rate and a grade."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from albor.io import write_json_atomic
from albor.verify.battery import LOCAL_RESULTS, run_battery
from albor.verify.contracts import load_contracts
from albor.verify.gaps import load_gaps
from albor.verify.generated import load_runs, overall
from albor.verify.junit import falsifier_status, load_results
from albor.verify.layout import COMMITTED_RESULTS, GAPS_DIR
from albor.verify.mutants import MUTANTS_JSON, merge_runs, run_mutants

GRADES = [(0.95, "Toyota Standard"), (0.85, "Kaizen Required"), (0.70, "Andon Warning")]


def grade(score: float, critical_failures: list[str]) -> str:
    """Toyota Standard needs ≥ 95 % and no critical failure; then ≥ 85 %, ≥ 70 %, else Stop the Line."""
    for threshold, name in GRADES:
        if score >= threshold and not (critical_failures and name == "Toyota Standard"):
            return name
    return "Stop the Line"


def build_report(junit: list[Path], mutants: dict, gaps_dir: Path, generated: dict | None = None) -> dict:
    """Combine battery results, a mutant run and the committed generated-mutant runs into the report.

    The score is the lowest of the rates (battery pass rate, obligation coverage, registered mutants
    killed, generated mutants killed), so none of them can hide behind the others. A critical failure
    is a falsifier of a critical gap that failed or did not run, or a surviving mutant of a critical gap.
    """
    results = load_results(junit)
    counts = {o: sum(v == o for v in results.values()) for o in ("passed", "failed", "skipped")}
    ran = counts["passed"] + counts["failed"]
    pass_rate = counts["passed"] / ran if ran else 0.0

    obligations = []
    for c in load_contracts().values():
        for ob in c.obligations:
            statuses = {falsifier_status(f, results) for f in ob.falsifiers}
            status = "failed" if "failed" in statuses else "not-run" if "not-run" in statuses else "passed"
            obligations.append(
                {
                    "id": ob.id,
                    "component": c.component,
                    "kind": ob.kind,
                    "statement": ob.statement,
                    "falsifiers": ob.falsifiers,
                    "status": status,
                }
            )
    coverage = sum(o["status"] == "passed" for o in obligations) / len(obligations) if obligations else 0.0

    critical: list[str] = []
    for g in load_gaps(gaps_dir):
        if g.severity != "critical":
            continue
        for f in g.falsifiers:
            if (status := falsifier_status(f, results)) != "passed":
                critical.append(f"{g.id}: falsifier {f} {status}")
    for m in mutants["mutants"]:
        if m["severity"] == "critical" and m["runnable"] and not m["killed"]:
            critical.append(f"{m['gap']}: mutant {m['fault']} survived")

    generated = generated or {"contracts": {}, "killed": 0, "ran": 0, "score": None, "missing": [], "unmet": []}
    rates = [pass_rate, coverage, mutants["kill_rate"]]
    score = min([*rates, generated["score"]] if generated["score"] is not None else rates)
    return {
        "generated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "battery": {"junit": [str(p) for p in junit], "tests": len(results), **counts, "pass_rate": pass_rate},
        "obligations": obligations,
        "coverage": coverage,
        "mutants": mutants["mutants"],
        "kill_rate": mutants["kill_rate"],
        "generated_mutants": generated,
        "score": score,
        "critical_failures": critical,
        "grade": grade(score, critical),
    }


def main(argv: list[str] | None = None, prog: str = "python -m albor.verify.report") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="the graded report: battery, coverage, mutants")
    parser.add_argument("--junit", type=Path, nargs="+", help="battery results; the battery runs here when absent")
    parser.add_argument("--mutants", type=Path, default=MUTANTS_JSON, help="this machine's mutant run; run when absent")
    parser.add_argument(
        "--mutants-elsewhere",
        type=Path,
        nargs="*",
        default=sorted(COMMITTED_RESULTS.glob("mutants-*.json")),
        help="committed runs (GPU) that supply the mutants this machine cannot run (default: falsification/results/)",
    )
    parser.add_argument("--out", type=Path, default=LOCAL_RESULTS / "report.json")
    args = parser.parse_args(argv)
    junit = args.junit or [run_battery(LOCAL_RESULTS)]
    if args.mutants.is_file():
        mutants = json.loads(args.mutants.read_text())
    else:
        mutants = run_mutants(GAPS_DIR)
        write_json_atomic(args.mutants, mutants)
    mutants = merge_runs(mutants, [json.loads(p.read_text()) for p in args.mutants_elsewhere])
    report = build_report(junit, mutants, GAPS_DIR, overall(load_runs()))
    write_json_atomic(args.out, report)
    gen = report["generated_mutants"]
    generated_text = "none committed" if gen["score"] is None else f"{gen['score']:.1%} of {gen['ran']}"
    print(
        f"grade: {report['grade']}; score {report['score']:.1%} (battery {report['battery']['pass_rate']:.1%}, "
        f"coverage {report['coverage']:.1%}, registered mutants killed {report['kill_rate']:.1%}, "
        f"generated mutants killed {generated_text}); "
        f"{len(report['critical_failures'])} critical failure(s); written to {args.out}"
    )
    if gen["missing"]:
        print(f"  no generated-mutant run (no score, not counted): {', '.join(gen['missing'])}")
    for c in gen.get("unmet", []):
        print(f"  promise not met: {c}: {gen['required'][c]['why']} (at least {gen['floor']:.0%} over "
              f"{gen['required'][c]['scope']})")  # fmt: skip
    for line in report["critical_failures"]:
        print(f"  critical: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
