"""``python -m albor.spec build [--use-existing]``: build the spec book into ``docs/_build/html``."""

from __future__ import annotations

import argparse
import sys

from albor.spec.build import build
from albor.spec.generate import DanglingError
from albor.spec.layout import Layout


def book_main(argv: list[str] | None = None, prog: str = "python -m albor.spec build") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="run the battery, generate the pages and build the HTML book offline"
    )
    parser.add_argument(
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["build"]:
        print("usage: python -m albor.spec build [--use-existing]", file=sys.stderr)
        return 2
    return book_main(args[1:])


if __name__ == "__main__":
    sys.exit(main())
