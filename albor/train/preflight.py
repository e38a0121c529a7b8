"""Preflight: run the battery's fast tier on the trainer's own device before step 0.

The result is kept as ``runs/<name>/preflight.json``. A failure stops the run and names the failed
claims; turning preflight off is allowed, loudly, and recorded in that file.
"""

from __future__ import annotations

import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from albor.falsify.battery import card_name, device_kind, run_battery
from albor.falsify.junit import node_id
from albor.io import write_json_atomic

SKIP_WARNING = "preflight was turned off: this run was NOT checked by the falsification battery on its device"


class PreflightFailed(RuntimeError):
    """The battery found a broken claim on this device; training must not start."""


def failed_claims(xml: Path) -> tuple[list[str], list[str]]:
    """Failed node ids and the claims they carry, from a battery run's JUnit XML."""
    nodes, claims = [], set()
    for case in ET.parse(xml).getroot().iter("testcase"):
        if any(child.tag in ("failure", "error") for child in case):
            nodes.append(node_id(case.get("classname", ""), case.get("name", "")))
            claims.update(p.get("value", "") for p in case.iter("property") if p.get("name") == "claim")
    return sorted(nodes), sorted(claims)


def run_preflight(run_dir: Path, enabled: bool) -> dict[str, Any]:
    """Run (or record the skipping of) the preflight; raises PreflightFailed on any failure."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"device": device_kind(), "card": card_name()}
    if not enabled:
        warnings.warn(SKIP_WARNING, stacklevel=2)
        print(f"\n!!! WARNING: {SKIP_WARNING} !!!\n", flush=True)
        record |= {"status": "skipped", "failed_claims": [], "failed_tests": [], "junit": None, "warning": SKIP_WARNING}
        write_json_atomic(run_dir / "preflight.json", record)
        return record
    xml = run_battery(run_dir / "preflight", fast=True)
    nodes, claims = failed_claims(xml) if xml.is_file() else (["<battery did not run>"], [])
    record |= {
        "status": "failed" if nodes else "passed",
        "failed_claims": claims,
        "failed_tests": nodes,
        "junit": str(xml),
        "warning": None,
    }
    write_json_atomic(run_dir / "preflight.json", record)
    if nodes:
        raise PreflightFailed(
            f"preflight failed on {record['device']} ({record['card']}): claims {claims or '?'} broken by "
            f"{nodes}; see {xml}. Fix them, or pass --preflight off to train anyway (recorded)."
        )
    return record
