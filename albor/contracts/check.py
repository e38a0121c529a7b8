"""``python -m albor.contracts check``: every contract and gap is valid, wired and (given results) passing.

Each problem is reported as ``<file>: <field>: <what is wrong>``; any problem means exit status 1.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from albor.contracts.collect import collect
from albor.contracts.load import CONTRACTS_DIR, ROOT, load_contract
from albor.contracts.schema import Contract
from albor.falsify.faults import FAULTS
from albor.falsify.junit import cases_of, falsifier_status, load_results
from albor.gaps import Gap, load_gap
from albor.verify.layout import GAPS_DIR


@dataclass
class Report:
    """Problems found, and counts of what was checked."""

    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, where: Path | str, what: str) -> None:
        where = where.relative_to(ROOT) if isinstance(where, Path) and where.is_relative_to(ROOT) else where
        self.problems.append(f"{where}: {what}")


def _import(path: str) -> None:
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)


T = TypeVar("T")


def _load_dir(report: Report, directory: Path, load: Callable[[Path], T]) -> dict[Path, T]:
    """Every YAML file in ``directory`` that loads; each one that does not is a reported problem."""
    loaded: dict[Path, T] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            loaded[path] = load(path)
        except ValueError as e:
            report.add(path, str(e).removeprefix(f"{path}: "))
    return loaded


def check(results: list[Path] | None = None) -> Report:
    """Run every check; ``results`` are JUnit XML files of battery runs to check against."""
    report = Report()
    contracts: dict[Path, Contract] = _load_dir(report, CONTRACTS_DIR, load_contract)
    gaps: dict[Path, Gap] = _load_dir(report, GAPS_DIR, load_gap)
    claims = collect()
    outcomes = load_results(results) if results else None
    known_claims: set[str] = set()

    for path, c in contracts.items():
        for target in [c.implementation, *c.kernels]:
            try:
                _import(target)
            except Exception as e:  # any import failure is a break to report, whatever its type
                report.add(path, f"implementation/kernels: cannot import {target}: {type(e).__name__}: {e}")
        for ob in c.obligations:
            known_claims.add(ob.id)
            for f in ob.falsifiers:
                where = f"obligations[{ob.id}].falsifiers"
                cases = cases_of(f, claims)
                if not cases:
                    report.add(path, f"{where}: {f} is not a collected test")
                    continue
                if any(ob.id not in claims[n] for n in cases):
                    report.add(path, f"{where}: {f} does not carry @pytest.mark.claim({ob.id!r})")
                if outcomes is not None and (status := falsifier_status(f, outcomes)) != "passed":
                    report.add(path, f"{where}: {f} {status} in the given results")

    for node, node_claims in claims.items():
        if node.startswith("falsification/") and not node_claims:
            report.add(node, "falsifier carries no @pytest.mark.claim(...)")
        for claim in node_claims:
            if claim not in known_claims:
                report.add(node, f"claim {claim!r} is not an obligation of any contract")

    components = {c.component for c in contracts.values()}
    faults_in_gaps: dict[str, str] = {}
    for path, g in gaps.items():
        if g.contract not in components:
            report.add(path, f"contract: no contracts/{g.contract}.yaml")
        if g.component not in components:
            report.add(path, f"component: {g.component!r} has no contract")
        for f in g.falsifiers:
            if not cases_of(f, claims):
                report.add(path, f"falsifiers: {f} is not a collected test")
        for name in g.faults:
            fault = FAULTS.get(name)
            if fault is None:
                report.add(path, f"faults: {name!r} is not registered in albor/falsify/faults.py")
            elif fault.gap != g.id:
                report.add(path, f"faults: {name!r} is registered for {fault.gap}, not {g.id}")
            faults_in_gaps[name] = g.id
    for name, fault in FAULTS.items():
        if name not in faults_in_gaps:
            report.add("albor/falsify/faults.py", f"fault {name!r} ({fault.gap}) is named by no gap")

    report.counts = {
        "contracts": len(contracts),
        "obligations": sum(len(c.obligations) for c in contracts.values()),
        "falsifiers": len({f for c in contracts.values() for ob in c.obligations for f in ob.falsifiers}),
        "gaps": len(gaps),
        "faults": len(FAULTS),
    }
    return report
