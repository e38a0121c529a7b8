"""Build the book: refresh the battery results, generate the pages, run Sphinx with warnings as errors."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from sphinx.cmd.build import build_main

from albor.verify.book.generate import DanglingError, generate
from albor.verify.book.layout import Layout


def refresh_results(layout: Layout) -> None:
    """Run the battery, the mutants and the report on this machine into ``falsification/results/local``.

    Failing falsifiers or surviving mutants do not stop the build: the book is where they are shown.
    """

    def falsify(*args: str) -> int:
        return subprocess.run([sys.executable, "-m", "albor", *args], cwd=layout.root, check=False).returncode

    falsify("battery")
    falsify("mutants")
    junit = sorted(layout.local_results.glob("junit-*.xml"), key=lambda p: p.stat().st_mtime)
    if not junit:
        raise RuntimeError(f"the battery wrote no JUnit XML into {layout.local_results}")
    if falsify("report", "--junit", str(junit[-1])):
        raise RuntimeError("albor report failed; see its output above")


def sphinx_html(layout: Layout) -> int:
    """Sphinx's exit status: non-zero on any warning (``-W --keep-going`` lists them all first).

    ``-E`` reads every page afresh, so a warning is never hidden by a page left over from a previous build.
    """
    args = [
        "-b",
        "html",
        "-E",
        "-W",
        "--keep-going",
        "-q",
        "-d",
        str(layout.doctrees),
        str(layout.docs),
        str(layout.html),
    ]
    return build_main(args)


def build(layout: Layout | None = None, use_existing: bool = False) -> float:
    """Build the book; returns the seconds spent after the battery. Raises on dangling links or warnings."""
    layout = layout or Layout()
    if not use_existing:
        refresh_results(layout)
    start = time.perf_counter()
    generate(layout)
    if sphinx_html(layout):
        raise RuntimeError(
            "sphinx-build reported warnings or errors (listed above; docs/generated/spec/ holds copies of spec/)"
        )
    return time.perf_counter() - start


def main(argv: list[str] | None = None, prog: str = "python -m albor.verify.book.build") -> int:
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


if __name__ == "__main__":
    sys.exit(main())
