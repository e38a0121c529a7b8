"""Run the falsification battery on this machine's device and record where and when it ran."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
import sys
from pathlib import Path

import torch

from albor.contracts.load import ROOT
from albor.io import write_json_atomic

LOCAL_RESULTS = ROOT / "falsification" / "results" / "local"


def device_kind() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def card_name() -> str:
    """The GPU's name, or the CPU's model name."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


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
