"""Read pytest JUnit XML into node-id results, and decide a falsifier's status from them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from albor.verify.contracts import ROOT

Outcome = Literal["passed", "failed", "skipped"]
Status = Literal["passed", "failed", "not-run"]


def node_id(classname: str, name: str) -> str:
    # pytest writes "falsification.test_rope" (or "...test_rope.TestX") as the classname.
    parts = classname.split(".")
    for cut in range(len(parts), 0, -1):
        path = "/".join(parts[:cut]) + ".py"
        if (ROOT / path).is_file() or cut == 1:
            return "::".join([path, *parts[cut:], name])
    raise AssertionError("unreachable")


def load_results(paths: Iterable[Path]) -> dict[str, Outcome]:
    """Outcome per test node id, merged over several JUnit files (a failure anywhere wins)."""
    roots = []
    for path in paths:
        try:
            roots.append(ET.parse(path).getroot())
        except (OSError, ET.ParseError) as e:
            raise ValueError(f"{path}: not a readable JUnit XML file: {e}") from e
    return _merged(roots)


def durations_of(xml: str | None) -> dict[str, float]:
    """Seconds per test node id of one JUnit report given as text (the longest where it repeats a node)."""
    seconds: dict[str, float] = {}
    for case in ET.fromstring(xml).iter("testcase") if xml else ():
        node = node_id(case.get("classname", ""), case.get("name", ""))
        seconds[node] = max(seconds.get(node, 0.0), float(case.get("time") or 0.0))
    return seconds


def outcomes_of(xml: str | None) -> dict[str, Outcome]:
    """Outcome per test node id of one JUnit report given as text (none: no outcomes)."""
    return _merged([ET.fromstring(xml)]) if xml else {}


def _merged(roots: list[ET.Element]) -> dict[str, Outcome]:
    results: dict[str, Outcome] = {}
    rank = {"skipped": 0, "passed": 1, "failed": 2}
    for root in roots:
        for case in root.iter("testcase"):
            node = node_id(case.get("classname", ""), case.get("name", ""))
            tags = {child.tag for child in case}
            outcome: Outcome = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
            if node not in results or rank[outcome] > rank[results[node]]:
                results[node] = outcome
    return results


def cases_of(falsifier: str, node_ids: Iterable[str]) -> list[str]:
    """The node ids that a falsifier id names: itself, or its parametrized cases."""
    return [n for n in node_ids if n == falsifier or n.startswith(falsifier + "[")]


def falsifier_status(falsifier: str, results: dict[str, Outcome]) -> Status:
    """passed: at least one case passed and none failed; failed: any case failed; else not-run."""
    outcomes = {results[n] for n in cases_of(falsifier, results)}
    if "failed" in outcomes:
        return "failed"
    return "passed" if "passed" in outcomes else "not-run"
