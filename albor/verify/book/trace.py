"""Traceability: contract → obligation → falsifier → gap → fault, and every link that dangles."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from albor.verify.faults import faults_of, stray_patches
from albor.verify.gaps import Gap
from albor.verify.schema import Contract


@dataclass(frozen=True)
class TraceRow:
    """One falsifier of one obligation, with the gaps it guards and their faults."""

    contract: str
    obligation: str
    falsifier: str
    gaps: tuple[str, ...]
    faults: tuple[str, ...]


@cache
def _test_functions(path: Path, mtime: float) -> frozenset[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return frozenset(
        n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test")
    )


def missing_falsifier(root: Path, falsifier: str) -> str | None:
    """Why ``falsifier`` (``file.py::test_name``) does not exist under ``root``, or None when it does."""
    file, name = falsifier.split("::", 1)
    path = root / file
    if not path.is_file():
        return f"{file} does not exist"
    if name not in _test_functions(path, path.stat().st_mtime):
        return f"{file} has no test function {name}"
    return None


def trace_rows(contracts: dict[str, Contract], gaps: list[Gap]) -> list[TraceRow]:
    """The matrix, one row per (obligation, falsifier), in contract order."""
    rows = []
    for c in contracts.values():
        for ob in c.obligations:
            for f in ob.falsifiers:
                guarding = [g for g in gaps if f in g.falsifiers]
                rows.append(
                    TraceRow(
                        contract=c.component,
                        obligation=ob.id,
                        falsifier=f,
                        gaps=tuple(g.id for g in guarding),
                        faults=tuple(dict.fromkeys(x for g in guarding for x in g.faults)),
                    )
                )
    return rows


def dangling(root: Path, contracts: dict[str, Contract], gaps: list[Gap], gaps_dir: Path) -> list[str]:
    """Every broken link, each as a sentence naming the file and the missing thing."""
    problems = []
    listed: set[str] = set()
    owner: dict[str, str] = {}
    for c in contracts.values():
        for ob in c.obligations:
            if ob.id in owner:
                problems.append(f"contracts/{c.component}.yaml: obligation id {ob.id} is also used by {owner[ob.id]}")
            owner[ob.id] = c.component
            for f in ob.falsifiers:
                listed.add(f)
                if why := missing_falsifier(root, f):
                    problems.append(f"contracts/{c.component}.yaml: {ob.id} names falsifier {f}, but {why}")
    for g in gaps:
        where = f"gaps/{g.id}.yaml"
        if g.contract not in contracts:
            problems.append(f"{where}: contract {g.contract!r} does not exist (no contracts/{g.contract}.yaml)")
        for f in g.falsifiers:
            if why := missing_falsifier(root, f):
                problems.append(f"{where}: falsifier {f} does not exist: {why}")
            elif f not in listed:
                problems.append(f"{where}: falsifier {f} is listed by no contract obligation")
        for fault in faults_of([g], gaps_dir):
            if not fault.path.is_file():
                problems.append(f"{where}: fault {fault.name!r} has no patch gaps/{g.id}/{fault.name}.patch")
    for stray in stray_patches(gaps, gaps_dir):
        problems.append(f"gaps/{stray.parent.name}/{stray.name}: no gap names this fault")
    return problems
