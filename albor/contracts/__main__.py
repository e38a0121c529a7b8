"""``python -m albor.contracts check [--results JUNIT ...]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from albor.contracts.check import check


def check_main(argv: list[str] | None = None, prog: str = "python -m albor.contracts check") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="validate contracts and gaps, and that their falsifiers exist and pass"
    )
    parser.add_argument("--results", type=Path, nargs="+", help="JUnit XML of battery runs: each falsifier must pass")
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["check"]:
        print("usage: python -m albor.contracts check [--results JUNIT ...]", file=sys.stderr)
        return 2
    return check_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
