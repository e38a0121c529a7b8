"""``python -m albor.falsify battery | mutants | report``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from albor.contracts.load import ROOT
from albor.falsify.battery import LOCAL_RESULTS, run_battery
from albor.falsify.mutants import run_mutants
from albor.falsify.report import build_report
from albor.io import write_json_atomic

GAPS = ROOT / "gaps"
MUTANTS_JSON = LOCAL_RESULTS / "mutants.json"


def _mutants(args: argparse.Namespace) -> int:
    summary = run_mutants(GAPS)
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


def _report(args: argparse.Namespace) -> int:
    junit = args.junit or [run_battery(LOCAL_RESULTS)]
    if args.mutants.is_file():
        mutants = json.loads(args.mutants.read_text())
    else:
        mutants = run_mutants(GAPS)
        write_json_atomic(args.mutants, mutants)
    report = build_report(junit, mutants, GAPS)
    write_json_atomic(args.out, report)
    print(
        f"grade: {report['grade']}; score {report['score']:.1%} (battery {report['battery']['pass_rate']:.1%}, "
        f"coverage {report['coverage']:.1%}, mutants killed {report['kill_rate']:.1%}); "
        f"{len(report['critical_failures'])} critical failure(s); written to {args.out}"
    )
    for line in report["critical_failures"]:
        print(f"  critical: {line}")
    return 0


def _parser(prog: str) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("battery", help="run pytest falsification/ and record card, date and results")
    b.add_argument("--out", type=Path, default=LOCAL_RESULTS)
    b.add_argument("--all", action="store_true", help="include tests marked slow")
    b.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    m = sub.add_parser("mutants", help="run each gap's falsifiers with its fault on; all must be killed")
    m.add_argument("--json", type=Path, default=MUTANTS_JSON)
    r = sub.add_parser("report", help="write the graded report (runs the battery and mutants if not given)")
    r.add_argument("--junit", type=Path, nargs="+", help="battery results; the battery runs here when absent")
    r.add_argument("--mutants", type=Path, default=MUTANTS_JSON, help="mutant summary; run when absent")
    r.add_argument("--out", type=Path, default=LOCAL_RESULTS / "report.json")
    return parser, {"battery": b, "mutants": m, "report": r}


def _run(args: argparse.Namespace) -> int:
    if args.command == "battery":
        xml = run_battery(args.out, fast=not args.all, extra=args.pytest_args)
        return json.loads(xml.with_suffix(".json").read_text())["exit_code"]
    return _mutants(args) if args.command == "mutants" else _report(args)


def _one(command: str, argv: list[str] | None, prog: str) -> int:
    _, subs = _parser("python -m albor.falsify")
    sub = subs[command]
    sub.prog = prog
    args = sub.parse_args(argv)
    args.command = command
    return _run(args)


def mutants_main(argv: list[str] | None = None, prog: str = "python -m albor.falsify mutants") -> int:
    return _one("mutants", argv, prog)


def report_main(argv: list[str] | None = None, prog: str = "python -m albor.falsify report") -> int:
    return _one("report", argv, prog)


def main(argv: list[str] | None = None) -> int:
    parser, _ = _parser("python -m albor.falsify")
    return _run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
