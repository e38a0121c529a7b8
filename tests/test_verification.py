"""The verification core on this machine: the battery, the contract check against its results, the
mutant run (100 % killed), a sample of the committed generated-mutant runs (each killed again), the graded
report, and the spec book built from them. The battery runs
once, here, with every tier this device can run; its JUnit XML, with the GPU runs committed under
falsification/results/ for the CUDA-only falsifiers, is what the contract check and the report read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from albor.verify.battery import LOCAL_RESULTS
from albor.verify.contracts import ROOT, load_contracts
from albor.verify.generated import NOT_YET_MEASURED, REQUIRED, load_runs
from albor.verify.junit import load_results
from albor.verify.report import grade

pytestmark = pytest.mark.slow


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def results() -> Path:
    # The local results folder (git-ignored) is where the spec book reads them from.
    out = LOCAL_RESULTS
    # One pytest worker per core, each test file on one worker (its module fixtures are built once); a
    # crashed worker fails the run by name, as the file scheduler would wait for it forever.
    proc = _run(
        "albor", "battery", "--all", "--out", str(out), "--", "-n", "auto", "--dist", "loadfile",
        "--max-worker-restart", "0",
    )  # fmt: skip
    xml = out / "junit-cpu.xml"
    assert xml.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    failed = sorted(n for n, o in load_results([xml]).items() if o == "failed")
    assert proc.returncode == 0 and not failed, f"battery failures: {failed}\n{proc.stdout[-4000:]}"
    return xml


def _with_gpu_runs(results: Path) -> list[str]:
    return [str(results), *map(str, sorted((ROOT / "falsification" / "results").glob("*.xml")))]


def test_contracts_check_against_battery(results: Path) -> None:
    proc = _run("albor", "check", "--results", *_with_gpu_runs(results))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1].startswith("OK:")


def test_every_mutant_killed_and_report_graded(results: Path) -> None:
    mutants = LOCAL_RESULTS / "mutants.json"
    # The battery just ran on this tree: its outcomes are the unpatched copy's.
    proc = _run("albor", "mutants", "--json", str(mutants), "--baseline", str(results))
    summary = json.loads(mutants.read_text())
    survivors = [m for m in summary["mutants"] if m["runnable"] and not m["killed"]]
    assert proc.returncode == 0 and not survivors, proc.stdout[-4000:]
    assert summary["total"] > 0 and summary["kill_rate"] == 1.0

    report_path = LOCAL_RESULTS / "report.json"
    proc = _run(
        "albor",
        "report",
        "--junit",
        *_with_gpu_runs(results),
        "--mutants",
        str(mutants),
        "--out",
        str(report_path),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert not report["critical_failures"], report["critical_failures"]
    assert report["coverage"] == 1.0, [o["id"] for o in report["obligations"] if o["status"] != "passed"]
    generated = report["generated_mutants"]
    # Contracts with no committed run are listed as missing (no score); the promised ones all have runs.
    assert generated["score"] is not None and set(generated["unmet"]) == set(NOT_YET_MEASURED), generated["unmet"]
    assert generated["missing"] == sorted(set(load_contracts()) - set(generated["contracts"]))
    assert report["score"] == min(report["battery"]["pass_rate"], 1.0, 1.0, generated["score"])
    assert report["grade"] == grade(report["score"], [])


def test_generated_sample_killed_again() -> None:
    # Two killed mutants per committed contract run, each against the falsifier that killed it.
    proc = _run("albor", "mutants", "--generated", "--sample", "2", "--workers", "2")
    sample = json.loads((LOCAL_RESULTS / "generated-sample.json").read_text())
    assert proc.returncode == 0 and not sample["regressions"], proc.stdout[-4000:] + proc.stderr[-2000:]
    with_kills = {c for c, run in load_runs().items() if any(m["status"] == "killed" for m in run["mutants"])}
    assert {r["component"] for r in sample["sampled"]} == with_kills
    assert with_kills >= set(REQUIRED) - set(NOT_YET_MEASURED)


def test_spec_book_builds_without_warnings(results: Path) -> None:
    proc = _run("albor", "book", "--use-existing")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (ROOT / "docs" / "_build" / "html" / "generated" / "report.html").is_file()
