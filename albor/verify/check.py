"""``albor check``: every contract and gap is valid, wired and (given results) passing.

Each problem is reported as ``<file>: <field>: <what is wrong>``; any problem means exit status 1.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from albor.verify.collect import collect
from albor.verify.contracts import CONTRACTS_DIR, ROOT, load_contract, single_source
from albor.verify.faults import faults_of, stray_patches
from albor.verify.faults import problems as fault_problems
from albor.verify.gaps import Gap, load_gap
from albor.verify.generated import EQUIVALENTS_DIR, engine_mutations, load_equivalents
from albor.verify.junit import cases_of, falsifier_status, load_results
from albor.verify.layout import GAPS_DIR
from albor.verify.schema import Contract, Declared


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
        for name, d in c.declares.items():
            _check_declared(report, path, name, d)
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

    _check_names(report, contracts, claims)
    _check_gaps(report, contracts, gaps, claims)
    _check_equivalents(report, contracts)
    report.counts = {
        "contracts": len(contracts),
        "obligations": sum(len(c.obligations) for c in contracts.values()),
        "falsifiers": len({f for c in contracts.values() for ob in c.obligations for f in ob.falsifiers}),
        "gaps": len(gaps),
        "faults": sum(len(g.faults) for g in gaps.values()),
    }
    return report


def _same(a: object, b: object) -> bool:
    """Equal as JSON would have them (a tuple and a list of the same items are the same value)."""
    norm = lambda x: list(x) if isinstance(x, tuple) else x  # noqa: E731
    return norm(a) == norm(b)


def _check_declared(report: Report, path: Path, name: str, d: Declared) -> None:
    try:
        actual = single_source(d.source)
    except Exception as e:  # an unresolvable source is a break to report, whatever its type
        report.add(path, f"declares[{name}]: cannot resolve {d.source}: {type(e).__name__}: {e}")
        return
    if not _same(actual, d.value):
        report.add(path, f"declares[{name}]: the contract says {d.value!r}, its single source {d.source} is {actual!r}")


def _stem(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def _check_names(report: Report, contracts: dict[Path, Contract], claims: dict[str, list[str]]) -> None:
    """One name per component: module stem, contract, tests, falsifiers and obligation ids agree."""
    owner: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    by_claim = {ob.id: c.component for c in contracts.values() for ob in c.obligations}
    for path, c in contracts.items():
        for module in c.modules():
            if _stem(module) != c.component:
                report.add(
                    path, f"implementation/kernels: module {module} is not named like the component {c.component!r}"
                )
        for src in c.source_files():
            if not (ROOT / src).is_file():
                report.add(path, f"sources: no file {src}")
            elif src in owner and owner[src] != c.component:
                report.add(path, f"sources: {src} is also a source of contracts/{owner[src]}.yaml")
            owner.setdefault(src, c.component)
        ids = {ob.id.rsplit("-", 1)[0] for ob in c.obligations}
        if len(ids) > 1:
            report.add(path, f"obligations: one id prefix per contract, found {sorted(ids)}")
        for prefix in ids:
            if prefixes.setdefault(prefix, c.component) != c.component:
                report.add(path, f"obligations: id prefix {prefix} is also used by contracts/{prefixes[prefix]}.yaml")
        home = f"falsification/test_{c.component}.py"
        for ob in c.obligations:
            for f in ob.falsifiers:
                if not f.startswith(f"{home}::"):
                    report.add(path, f"obligations[{ob.id}].falsifiers: {f} is not in {home}")
        if not (ROOT / "tests" / f"test_{c.component}.py").is_file():
            report.add(path, f"tests/test_{c.component}.py: the component's property tests are missing")
    components = {c.component for c in contracts.values()}
    for test_file in sorted((ROOT / "falsification").glob("test_*.py")):
        name = test_file.stem.removeprefix("test_")
        if name not in components:
            report.add(test_file, f"no contracts/{name}.yaml: a battery file is named after its component")
    for node, node_claims in claims.items():
        if not node.startswith("falsification/test_"):
            continue
        name = node.split("::")[0].removeprefix("falsification/test_").removesuffix(".py")
        for claim in node_claims:
            if claim in by_claim and by_claim[claim] != name:
                report.add(node, f"claim {claim} belongs to contracts/{by_claim[claim]}.yaml, not to {name}")


def _preflight_battery(g: Gap) -> set[str]:
    """The battery's modules a trainer gap's fault may change besides the trainer's sources: the trainer's
    preflight runs them, so a module that breaks the preflight is a trainer bug (ALB-306). The modules of the
    gap's own falsifiers stay out, since a fault there could only break the falsifier that judges it."""
    if g.component != "trainer":
        return set()
    own = {f.partition("::")[0] for f in g.falsifiers}
    return {f"falsification/{p.name}" for p in (ROOT / "falsification").glob("test_*.py")} - own


def _check_gaps(
    report: Report, contracts: dict[Path, Contract], gaps: dict[Path, Gap], claims: dict[str, list[str]]
) -> None:
    """Each gap is one bug in one component, caught by collected falsifiers, re-created by patches that apply."""
    by_component = {c.component: c for c in contracts.values()}
    for path, g in gaps.items():
        contract = by_component.get(g.component)
        if g.contract not in by_component:
            report.add(path, f"contract: no contracts/{g.contract}.yaml")
        if contract is None:
            report.add(path, f"component: {g.component!r} has no contract")
        elif g.contract != g.component:
            report.add(path, f"contract: {g.contract!r} is not the gap's component {g.component!r}")
        for f in g.falsifiers:
            if not cases_of(f, claims):
                report.add(path, f"falsifiers: {f} is not a collected test")
        for fault in faults_of([g], GAPS_DIR):
            where = f"faults: {fault.name}"
            if not fault.name.startswith(f"{g.component}_"):
                report.add(path, f"{where}: a fault is named <component>_<bug>, here {g.component}_…")
            for problem in fault_problems(fault, ROOT):
                report.add(path, f"{where}: {problem}")
            if contract is not None and fault.path.is_file():
                outside = sorted(set(fault.files()) - set(contract.source_files()) - _preflight_battery(g))
                if outside:
                    report.add(path, f"{where}: the patch changes {outside}, which are not sources of {g.component}")
    for stray in stray_patches(list(gaps.values()), GAPS_DIR):
        report.add(stray, "no gap names this fault")


def _check_equivalents(report: Report, contracts: dict[Path, Contract]) -> None:
    """Each reviewed list of equivalent mutants belongs to a contract and names only mutants the engine makes."""
    by_component = {c.component: c for c in contracts.values()}
    for path in sorted(EQUIVALENTS_DIR.glob("*.yaml")):
        contract = by_component.get(path.stem)
        if contract is None:
            report.add(path, f"no contracts/{path.stem}.yaml: a list of equivalent mutants is named after its contract")
            continue
        try:
            listed = load_equivalents(path.stem)
        except ValueError as e:
            report.add(path, str(e).removeprefix(f"{path}: "))
            continue
        make = engine_mutations()
        made = {m.id for f in contract.source_files() for m in make(f, (ROOT / f).read_text())}
        for stale in sorted(set(listed) - made):
            report.add(path, f"{stale}: the engine no longer makes this mutant (the code changed): review the entry")


def main(argv: list[str] | None = None, prog: str = "python -m albor.verify.check") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="validate contracts and gaps, and that their falsifiers exist and pass"
    )
    parser.add_argument("--results", type=Path, nargs="+", help="JUnit XML of battery runs: each falsifier must pass")
    args = parser.parse_args(argv)
    for path in args.results or []:
        if not path.is_file():
            parser.error(f"--results: no file {path}")
    report = check(args.results)
    for problem in report.problems:
        print(problem)
    counts = ", ".join(f"{v} {k}" for k, v in report.counts.items())
    print(f"{'FAILED' if report.problems else 'OK'}: {counts}; {len(report.problems)} problem(s)")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
