"""Everything the generated pages are made from, loaded once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from albor.verify.book.layout import Layout
from albor.verify.book.results import ResultSet, load_json, load_mutants, load_result_sets
from albor.verify.book.runs import Run, load_runs
from albor.verify.book.trace import TraceRow, dangling, trace_rows
from albor.verify.contracts import load_contracts
from albor.verify.faults import Fault, faults_of
from albor.verify.gaps import Gap, load_gaps
from albor.verify.generated import load_runs as load_generated_runs
from albor.verify.schema import Contract, Obligation


@dataclass
class Book:
    """Contracts, gaps, faults, battery results, the report and the runs, with their cross-links."""

    contracts: dict[str, Contract]
    gaps: list[Gap]
    faults: dict[str, Fault]
    results: list[ResultSet]
    mutants: dict[str, dict[str, Any]]
    mutant_source: str | None
    generated: dict[str, dict[str, Any]]
    report: dict[str, Any] | None
    runs: list[Run]
    rows: list[TraceRow]
    problems: list[str]

    def gaps_of(self, component: str) -> list[Gap]:
        """Gaps filed against ``component``'s contract."""
        return [g for g in self.gaps if g.contract == component]

    def obligations_of(self, falsifier: str) -> list[tuple[str, Obligation]]:
        """(component, obligation) pairs that list ``falsifier``."""
        return [
            (c.component, ob) for c in self.contracts.values() for ob in c.obligations if falsifier in ob.falsifiers
        ]

    @property
    def n_obligations(self) -> int:
        return sum(len(c.obligations) for c in self.contracts.values())

    def stale_note(self) -> str | None:
        """Why the report is older than the repository, or None: obligations or faults it never saw."""
        if self.report is None:
            return None
        seen = {o["id"] for o in self.report.get("obligations", [])}
        new = [ob.id for c in self.contracts.values() for ob in c.obligations if ob.id not in seen]
        ran = {m["fault"] for m in self.report.get("mutants", [])}
        untested = [f for g in self.gaps for f in g.faults if f not in ran]
        if not new and not untested:
            return None
        parts = []
        if new:
            parts.append(f"{len(new)} of the {self.n_obligations} obligations")
        if untested:
            parts.append(f"{len(untested)} of the {sum(len(g.faults) for g in self.gaps)} gap faults")
        return (
            f"This report predates {' and '.join(parts)} now in the repository, so its grade does not cover them; "
            "`albor book` (without `--use-existing`) runs the battery and the mutants again."
        )


def load_book(layout: Layout) -> Book:
    """Load every source of the book; bad files raise errors naming the file."""
    contracts = load_contracts(layout.contracts)
    gaps = load_gaps(layout.gaps)
    faults = {f.name: f for f in faults_of(gaps, layout.gaps)}
    mutants = load_mutants(layout)
    return Book(
        contracts=contracts,
        gaps=gaps,
        faults=faults,
        results=load_result_sets(layout),
        mutants={m["fault"]: m for m in mutants["mutants"]} if mutants else {},
        mutant_source=mutants["source"] if mutants else None,
        generated=load_generated_runs(layout.committed_results / "generated"),
        report=load_json(layout.local_results / "report.json"),
        runs=load_runs(layout),
        rows=trace_rows(contracts, gaps),
        problems=dangling(layout.root, contracts, gaps, layout.gaps),
    )
