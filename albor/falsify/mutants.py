"""The mutant run: each gap's falsifiers with its fault switched on must fail.

A fault that no falsifier notices is a surviving mutant. A mutant whose falsifiers all need a device
this machine lacks is reported as not runnable here, and is left out of the kill rate.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from albor.contracts.load import ROOT
from albor.falsify.faults import ENV_VAR
from albor.falsify.junit import load_results
from albor.gaps import Gap, load_gaps


@dataclass
class Mutant:
    """One fault run against its gap's falsifiers."""

    fault: str
    gap: str
    severity: str
    falsifiers: list[str]
    killed: bool = False
    runnable: bool = True
    detail: str = ""


def _run(m: Mutant) -> Mutant:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        env = {**os.environ, ENV_VAR: m.fault}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *m.falsifiers]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        outcomes = load_results([xml]) if xml.is_file() else {}
    failed = sorted(n for n, o in outcomes.items() if o == "failed")
    counts = {o: sum(v == o for v in outcomes.values()) for o in ("passed", "failed", "skipped")}
    if proc.returncode == 1 and failed:
        m.killed, m.detail = True, f"killed by {', '.join(failed[:3])}{' …' if len(failed) > 3 else ''}"
    elif proc.returncode == 0 and counts["passed"] == 0:
        m.runnable, m.detail = False, f"not runnable here: all {counts['skipped']} case(s) skipped"
    elif proc.returncode == 0:
        m.detail = f"SURVIVED: {counts['passed']} passed, {counts['skipped']} skipped"
    else:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        m.detail = f"ERROR: pytest exit {proc.returncode}: {' | '.join(tail)}"
    return m


def mutants_of(gaps: list[Gap]) -> list[Mutant]:
    """One mutant per (gap, fault)."""
    return [Mutant(fault, g.id, g.severity, g.falsifiers) for g in gaps for fault in g.faults]


def run_mutants(gaps_dir: Path = ROOT / "gaps", workers: int | None = None) -> dict:
    """Run every mutant; returns the JSON-ready summary."""
    mutants = mutants_of(load_gaps(gaps_dir))
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        done = list(pool.map(_run, mutants))
    runnable = [m for m in done if m.runnable]
    killed = sum(m.killed for m in runnable)
    return {
        "mutants": [asdict(m) for m in done],
        "killed": killed,
        "total": len(runnable),
        "not_runnable": len(done) - len(runnable),
        "kill_rate": killed / len(runnable) if runnable else 1.0,
    }
