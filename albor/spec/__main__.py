"""``python -m albor.spec build [--use-existing]``: build the spec book into ``docs/_build/html``."""

from __future__ import annotations

import argparse
import sys

from albor.spec.build import build
from albor.spec.generate import DanglingError
from albor.spec.layout import Layout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m albor.spec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="run the battery, generate the pages and build the HTML book offline")
    b.add_argument(
        "--use-existing",
        action="store_true",
        help="skip the battery, mutants and report; use the results already in falsification/results/",
    )
    args = parser.parse_args(argv)
    layout = Layout()
    try:
        seconds = build(layout, use_existing=args.use_existing)
    except (DanglingError, RuntimeError, ValueError) as e:
        print(f"spec book: {e}", file=sys.stderr)
        return 1
    print(f"spec book built in {seconds:.1f} s (not counting the battery): {layout.html / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
