"""``python -m albor.contracts check [--results JUNIT ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from albor.contracts.check import check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m albor.contracts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="validate contracts and gaps, and that their falsifiers exist and pass")
    p.add_argument("--results", type=Path, nargs="+", help="JUnit XML of battery runs: each falsifier must pass")
    args = parser.parse_args(argv)
    for path in args.results or []:
        if not path.is_file():
            parser.error(f"--results: no file {path}")
    report = check(args.results)
    for problem in report.problems:
        print(problem)
    counts = ", ".join(f"{v} {k}" for k, v in report.counts.items())
    print(f"{'FAILED' if report.problems else 'OK'}: {counts}; {len(report.problems)} problem(s)")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
