"""Run the falsification battery on this machine's device and record where and when it ran."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch

from albor.hardware import card_name, device_kind
from albor.io import write_json_atomic
from albor.verify.layout import LOCAL_RESULTS, ROOT


def run_battery(
    out_dir: Path = LOCAL_RESULTS, fast: bool = True, paths: list[str] | None = None, extra: list[str] | None = None
) -> Path:
    """Run ``pytest falsification/`` (or ``paths``; the fast tier unless ``fast`` is False) into ``out_dir``.

    Writes ``junit-<device>.xml`` and a ``junit-<device>.json`` sidecar with card, date, command and
    versions; returns the XML path. The exit status of pytest is in the sidecar as ``exit_code``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = device_kind()
    xml = out_dir / f"junit-{kind}.xml"
    cmd = [sys.executable, "-m", "pytest", *(paths or ["falsification"]), "-q", "-p", "no:cacheprovider"]
    cmd.append(f"--junitxml={xml}")
    if fast:
        cmd += ["-m", "not slow"]
    cmd += extra or []
    proc = subprocess.run(cmd, cwd=ROOT, check=False)
    meta = {
        "card": card_name(),
        "device": kind,
        "date": dt.date.today().isoformat(),
        "command": " ".join(["python -m pytest", *cmd[3:]]),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "exit_code": proc.returncode,
    }
    write_json_atomic(xml.with_suffix(".json"), meta)
    return xml


def main(argv: list[str] | None = None, prog: str = "python -m albor.verify.battery") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="run the battery and record card, date and results")
    parser.add_argument("--out", type=Path, default=LOCAL_RESULTS)
    parser.add_argument("--all", action="store_true", help="include tests marked slow")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    xml = run_battery(args.out, fast=not args.all, extra=args.pytest_args)
    return json.loads(xml.with_suffix(".json").read_text())["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
