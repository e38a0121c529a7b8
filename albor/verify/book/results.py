"""Battery results the book shows: JUnit XML with card and date, the mutant run and the report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from albor.verify.book.layout import Layout
from albor.verify.junit import Outcome, cases_of, load_results

Status = Literal["passed", "failed", "skipped", "not-run"]


@dataclass(frozen=True)
class ResultSet:
    """One battery run: outcome per test node id, and where and when it ran."""

    path: Path
    device: str
    card: str
    date: str
    torch: str
    committed: bool
    outcomes: dict[str, Outcome]

    @property
    def label(self) -> str:
        """A short column title: ``CPU`` (the local run) or ``CUDA H100 80GB HBM3``."""
        if self.device == "cpu" and not self.committed:
            return "CPU"
        return f"{self.device.upper()} {self.card.removeprefix('NVIDIA ')}"

    @property
    def origin(self) -> str:
        return "committed" if self.committed else "last local run"

    def count(self, outcome: Outcome) -> int:
        return sum(o == outcome for o in self.outcomes.values())


@dataclass(frozen=True)
class FalsifierResult:
    """A falsifier's outcome over its parametrized cases in one result set."""

    status: Status
    passed: int
    ran: int
    skipped: int

    @property
    def text(self) -> str:
        """``passed``, ``passed 3/3``, ``failed 1/3, 2 skipped`` …: cases passed of those that ran."""
        word = self.status.replace("-", " ")
        text = f"{word} {self.passed}/{self.ran}" if self.ran > 1 else word
        return f"{text}, {self.skipped} skipped" if self.skipped and self.ran else text


def load_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file does not exist."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_result_set(xml: Path, committed: bool) -> ResultSet:
    """A JUnit file and its ``.json`` sidecar; the sidecar must name card, date and device."""
    meta = load_json(xml.with_suffix(".json"))
    if meta is None:
        raise ValueError(f"{xml}: no sidecar {xml.with_suffix('.json').name} with card, date and device")
    missing = [k for k in ("card", "date", "device") if not meta.get(k)]
    if missing:
        raise ValueError(f"{xml.with_suffix('.json')}: missing {', '.join(missing)}")
    return ResultSet(
        path=xml,
        device=str(meta["device"]),
        card=str(meta["card"]),
        date=str(meta["date"]),
        torch=str(meta.get("torch", "")),
        committed=committed,
        outcomes=load_results([xml]),
    )


def load_result_sets(layout: Layout) -> list[ResultSet]:
    """The last local run per device, then the newest committed run per (device, card)."""
    local = [load_result_set(p, False) for p in sorted(layout.local_results.glob("junit-*.xml"))]
    newest: dict[tuple[str, str], ResultSet] = {}
    for p in sorted(layout.committed_results.glob("*.xml")):
        rs = load_result_set(p, True)
        key = (rs.device, rs.card)
        if key not in newest or (rs.date, rs.path.name) > (newest[key].date, newest[key].path.name):
            newest[key] = rs
    return local + sorted(newest.values(), key=lambda r: (r.device, r.card))


def falsifier_result(falsifier: str, rs: ResultSet) -> FalsifierResult:
    """failed if any case failed; passed if one passed and none failed; skipped if all skipped."""
    outcomes = [rs.outcomes[n] for n in cases_of(falsifier, rs.outcomes)]
    passed, skipped = outcomes.count("passed"), outcomes.count("skipped")
    if "failed" in outcomes:
        status: Status = "failed"
    elif passed:
        status = "passed"
    else:
        status = "skipped" if outcomes else "not-run"
    return FalsifierResult(status, passed, len(outcomes) - skipped, skipped)


def load_mutants(layout: Layout) -> dict[str, Any] | None:
    """The last mutant run: from the report when there is one (so every page agrees), else mutants.json."""
    report = load_json(layout.local_results / "report.json")
    if report is not None:
        return {"mutants": report.get("mutants", []), "source": "report.json"}
    mutants = load_json(layout.local_results / "mutants.json")
    return None if mutants is None else {**mutants, "source": "mutants.json"}


def mutant_verdict(m: dict[str, Any]) -> Status:
    """passed when the mutant was killed, failed when it survived, skipped when not runnable here."""
    if m.get("killed"):
        return "passed"
    return "failed" if m.get("runnable", True) else "skipped"
