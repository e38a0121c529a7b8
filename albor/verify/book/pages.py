"""The generated pages of the book, as MyST text: contracts, gaps, the report and traceability."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from albor.verify.book.book import Book
from albor.verify.book.myst import badge, code, esc, facts, fenced, math, percent, ref, table, target
from albor.verify.book.results import ResultSet, falsifier_result, mutant_verdict
from albor.verify.gaps import Gap
from albor.verify.generated import Scope
from albor.verify.schema import Contract

NO_RESULTS = (
    "No battery results yet: run `albor battery` here, or commit a GPU run's JUnit XML "
    "and its `.json` sidecar under `falsification/results/`."
)
NO_CUDA = "No CUDA results are committed under `falsification/results/` yet, so no GPU column is shown."


def when(iso: str) -> str:
    """An ISO time as ``2026-11-26 08:44 UTC``."""
    try:
        t = dt.datetime.fromisoformat(iso).astimezone(dt.UTC)
    except ValueError:
        return iso
    return t.strftime("%Y-%m-%d %H:%M UTC")


def first_sentence(text: str) -> str:
    """The text up to its first full stop that ends a sentence."""
    return re.split(r"(?<=[.!?])\s+(?=[A-Z`])", " ".join(text.split()), maxsplit=1)[0]


def contract_label(component: str) -> str:
    return f"contract-{component}"


def obligation_label(ob_id: str) -> str:
    return f"obl-{ob_id.lower()}"


def gap_label(gap_id: str) -> str:
    return f"gap-{gap_id.lower()}"


def hidden_toctree(entries: list[str]) -> str:
    return "\n".join(["```{toctree}", ":hidden:", "", *entries, "```"])


def sources_note(results: list[ResultSet], counts: bool = False) -> str:
    """Which battery runs the result columns come from (with their test counts when ``counts``)."""
    if not results:
        return NO_RESULTS
    headers = ["column", "card", "date", "torch", "source", "file"]
    if counts:
        headers += ["passed", "failed", "skipped"]
    rows = []
    for r in results:
        row = [esc(r.label), esc(r.card), esc(r.date), esc(r.torch or "—"), esc(r.origin), code(r.path.name)]
        rows.append(row + ([str(r.count(o)) for o in ("passed", "failed", "skipped")] if counts else []))
    text = table(headers, rows)
    if not any(r.device == "cuda" for r in results):
        text += "\n\n" + NO_CUDA
    return text


def result_cells(falsifier: str, results: list[ResultSet]) -> list[str]:
    cells = []
    for rs in results:
        r = falsifier_result(falsifier, rs)
        cells.append(badge(r.status, r.text))
    return cells


def falsifier_table(falsifiers: list[str], results: list[ResultSet], extra: dict[str, str] | None = None) -> str:
    """One row per falsifier with its outcome in each result set (cases passed / cases run)."""
    headers = ["falsifier", *(["obligation"] if extra is not None else []), *(esc(r.label) for r in results)]
    rows = []
    for f in falsifiers:
        row = [code(f), *([extra.get(f, "—")] if extra is not None else []), *result_cells(f, results)]
        rows.append(row)
    if not results:
        headers.append("result")
        rows = [[*row, badge("not-run")] for row in rows]
    return table(headers, rows)


MUTANT_TEXT = {"passed": "killed", "failed": "survived", "skipped": "not runnable here"}


def mutant_badge(m: dict[str, Any] | None) -> str:
    if m is None:
        return badge("not-run", "not run")
    verdict = mutant_verdict(m)
    return badge(verdict, MUTANT_TEXT[verdict])


def contract_page(c: Contract, book: Book) -> str:
    gaps = book.gaps_of(c.component)
    rows = [
        ("implementation", code(c.implementation)),
        ["kernels", ", ".join(code(k) for k in c.kernels) or "none yet"],
        ["contract file", f"{code(f'contracts/{c.component}.yaml')} (version {c.version})"],
        [
            "falsifiers",
            ", ".join(code(f) for f in sorted({f.split("::")[0] for o in c.obligations for f in o.falsifiers})),
        ],
        ["references", "; ".join(esc(r) for r in c.references) or "none"],
        ["gaps", ", ".join(ref(gap_label(g.id), g.id) for g in gaps) or "none filed"],
    ]
    out = [target(contract_label(c.component)), f"# {esc(c.component)}", "", esc(c.summary), "", facts(rows)]
    if c.equations:
        out += ["", "## Equations"]
        for name, latex in c.equations.items():
            out += ["", f"**{esc(name)}**", "", math(latex, f"eq-{c.component}-{name}")]
    out += ["", "## Obligations", "", "Latest results, by battery run:", "", sources_note(book.results)]
    for ob in c.obligations:
        tol = ", ".join(f"{code(k)} ≤ {v:g}" for k, v in ob.tolerance.items())
        out += ["", target(obligation_label(ob.id)), f"### {esc(ob.id)}: {esc(ob.kind)}", "", esc(ob.statement), ""]
        out += [f"Tolerance: {tol}", ""] if tol else []
        out.append(falsifier_table(ob.falsifiers, book.results))
    out += ["", "## Generated mutants", "", generated_section(c, book)]
    out += ["", "## Gaps guarded by this contract", ""]
    if gaps:
        rows = [
            [ref(gap_label(g.id), g.id), esc(g.title), badge(g.severity), esc(g.status), mutants_cell(g, book)]
            for g in gaps
        ]
        out.append(table(["gap", "title", "severity", "status", "last mutant run"], rows))
    else:
        out.append("No gap has been filed against this contract.")
    return "\n".join(out) + "\n"


def generated_score(run: dict[str, Any] | None) -> str:
    """``87.5 % (140 of 160)``, or why there is no score."""
    if run is None:
        return "no committed run"
    if run["score"] is None:
        return "not runnable here"
    ran = run["killed"] + run["survived"]
    return f"{percent(run['score'])} ({run['killed']} of {ran})"


def scope_text(run: dict[str, Any]) -> str:
    """What a run measured: ``all sources``, or its scope and how many of the contract's mutants that is."""
    scope = Scope.from_json(run.get("scope")).describe()
    population = run.get("population", run["total"])
    return scope if population == run["total"] else f"{scope} ({run['total']} of the contract's {population} mutants)"


def generated_section(c: Contract, book: Book) -> str:
    """The committed generated-mutant run of ``c``: its score, then every survivor and equivalent as a diff."""
    run = book.generated.get(c.component)
    if run is None:
        return f"No generated-mutant run is committed yet: `albor mutants --generated {c.component}` makes one."
    rows = [
        ("score", generated_score(run)),
        (
            "mutants",
            f"{run['total']}: {run['killed']} killed, {run['survived']} survived, "
            f"{run['equivalent']} equivalent, {run['not-runnable']} not runnable",
        ),
        ("scope", esc(scope_text(run))),
        ("run", f"{esc(run['date'])}, commit {code(run['commit'][:10])}, {esc(run['card'])}"),
        ("engine", esc(run["engine"])),
    ]
    out = [facts(rows)]
    for status, title in (("survived", "Survivors"), ("equivalent", "Marked equivalent")):
        found = [m for m in run["mutants"] if m["status"] == status]
        if not found:
            continue
        out += ["", f"### {title}", ""]
        for m in found:
            where = f"{code(m['file'])} line {m['line']}, {code(m['function'])}, {esc(m['operator'])}"
            out += [f"{where}: {esc(m['detail'])}", "", fenced(m["diff"] or "", "diff"), ""]
    return "\n".join(out).rstrip()


def mutants_cell(g: Gap, book: Book) -> str:
    return "; ".join(f"{code(f)} {mutant_badge(book.mutants.get(f))}" for f in g.faults)


def mutants_summary(g: Gap, book: Book) -> str:
    """One badge for a gap's faults in the last mutant run: killed of run, or not run."""
    runs = [book.mutants[f] for f in g.faults if f in book.mutants]
    if not runs:
        return badge("not-run", "not run")
    verdicts = [mutant_verdict(m) for m in runs]
    killed = verdicts.count("passed")
    status = "failed" if "failed" in verdicts else "passed" if killed == len(g.faults) else "skipped"
    return badge(status, f"{killed}/{len(g.faults)}")


def contracts_index(book: Book) -> str:
    out = [
        target("contracts"),
        "# Contracts",
        "",
        "Each component states what it promises as equations and obligations. Every obligation names the "
        "falsifiers, tests written to break it; the columns show how they fared in each battery run.",
        "",
    ]
    rows = []
    for c in book.contracts.values():
        falsifiers = [f for ob in c.obligations for f in ob.falsifiers]
        summary = []
        for rs in book.results:
            res = [falsifier_result(f, rs) for f in falsifiers]
            ok = sum(r.status == "passed" for r in res)
            status = "failed" if any(r.status == "failed" for r in res) else "passed" if ok == len(res) else "not-run"
            summary.append(badge(status, f"{ok}/{len(res)} passed"))
        rows.append(
            [
                ref(contract_label(c.component), c.component),
                esc(first_sentence(c.summary)),
                str(len(c.obligations)),
                *summary,
            ]
        )
    headers = ["contract", "summary", "obligations", *(esc(f"falsifiers, {r.label}") for r in book.results)]
    out += [table(headers, rows) if rows else "No contracts yet.", "", sources_note(book.results), ""]
    out.append(hidden_toctree(list(book.contracts)))
    return "\n".join(out) + "\n"


def gap_register(book: Book) -> str:
    by = {s: sum(g.severity == s for g in book.gaps) for s in ("critical", "major", "minor")}
    out = [
        target("gap-register"),
        "# Gap register",
        "",
        "Every bug that was ever found: the ones the predecessor stack shipped (origin *historic*) and the "
        "ones found while building Albor (origin *found here*). Each names the falsifiers that now catch it "
        "and a fault: a patch to the runtime's source that re-creates the bug. The mutant run applies each "
        "patch to a copy of the tree and checks that a falsifier fails there.",
        "",
        f"{len(book.gaps)} gaps: {by['critical']} critical, {by['major']} major, {by['minor']} minor.",
        "",
    ]
    rows = [
        [
            ref(gap_label(g.id), g.id),
            esc(g.title),
            ref(contract_label(g.contract), g.contract) if g.contract in book.contracts else esc(g.contract),
            badge(g.severity),
            esc(g.status),
            esc(g.origin),
            mutants_summary(g, book),
        ]
        for g in book.gaps
    ]
    headers = ["id", "title", "component", "severity", "status", "origin", "mutants killed"]
    out += [table(headers, rows) if rows else "No gaps filed yet.", ""]
    out.append(hidden_toctree([g.id for g in book.gaps]))
    return "\n".join(out) + "\n"


def gap_page(g: Gap, book: Book) -> str:
    contract = ref(contract_label(g.contract), g.contract) if g.contract in book.contracts else esc(g.contract)
    rows = [
        ("component", esc(g.component)),
        ("contract", contract),
        ("severity", badge(g.severity)),
        ("status", esc(g.status)),
        ("origin", esc(g.origin)),
    ]
    out = [target(gap_label(g.id)), f"# {esc(g.id)}: {esc(g.title)}", "", facts(rows)]
    for title, text in (("Symptom", g.symptom), ("Root cause", g.root_cause), ("Fix", g.fix)):
        out += ["", f"## {title}", "", esc(text)]
    obligations = {
        f: ", ".join(ref(obligation_label(ob.id), ob.id) for _, ob in book.obligations_of(f)) or "—"
        for f in g.falsifiers
    }
    out += ["", "## Falsifiers", "", falsifier_table(g.falsifiers, book.results, obligations)]
    out += [
        "",
        "## Faults",
        "",
        "Each fault is the bug itself, as a patch to the runtime's source; the mutant run applies it to a copy "
        "of the tree and runs the falsifiers above against that copy.",
    ]
    for name in g.faults:
        fault, m = book.faults.get(name), book.mutants.get(name)
        detail = esc(m.get("detail", "")) if m else "no mutant run recorded"
        out += ["", f"### {code(name)}", "", f"{mutant_badge(m)} {detail}", ""]
        patch = fault.path if fault else None
        out.append(fenced(patch.read_text(), "diff") if patch and patch.is_file() else "The patch file is missing.")
    return "\n".join(out) + "\n"


GRADE_STYLE = {
    "Toyota Standard": "passed",
    "Kaizen Required": "warning",
    "Andon Warning": "warning",
    "Stop the Line": "failed",
}


def report_page(book: Book) -> str:
    out = [target("falsification-report"), "# Falsification report", ""]
    rep = book.report
    if rep is None:
        out += [
            "No report yet: `albor book` runs the battery, the mutants and the report (or run `albor report`).",
            "",
            "## Battery runs",
            "",
            sources_note(book.results, counts=True),
        ]
        return "\n".join(out) + "\n"
    bat = rep["battery"]
    obligations = rep.get("obligations", [])
    mutants = rep.get("mutants", [])
    n_ok = sum(o["status"] == "passed" for o in obligations)
    killed = sum(bool(m.get("killed")) for m in mutants)
    runnable = sum(bool(m.get("runnable", True)) for m in mutants)
    grade = rep["grade"]
    gen = rep.get("generated_mutants") or {}
    out += [
        f"Generated {esc(when(rep['generated']))} from the battery run in "
        + ", ".join(code(p.rsplit("/", 1)[-1]) for p in bat["junit"])
        + ". See {ref}`reading-a-report` for what each number means.",
        "",
        *(["```{warning}", stale, "```", ""] if (stale := book.stale_note()) else []),
        f"```{{rubric}} Grade: {grade}",
        f":class: grade grade-{GRADE_STYLE.get(grade, 'warning')}",
        "```",
        "",
        table(
            ["measure", "value", "from"],
            [
                ["**score**", f"**{percent(rep['score'])}**", "the lowest of the rates below"],
                [
                    "battery pass rate",
                    percent(bat["pass_rate"]),
                    f"{bat['passed']} passed, {bat['failed']} failed, {bat['skipped']} skipped of {bat['tests']}",
                ],
                ["obligation coverage", percent(rep["coverage"]), f"{n_ok} of {len(obligations)} obligations passed"],
                ["registered faults killed", percent(rep["kill_rate"]), f"{killed} of {runnable} runnable faults"],
                [
                    "generated mutants killed",
                    "—" if gen.get("score") is None else percent(gen["score"]),
                    f"{gen.get('killed', 0)} of {gen.get('ran', 0)} that ran, over "
                    f"{len(gen.get('contracts', {}))} committed contract runs; "
                    f"{len(gen.get('missing') or [])} contracts not measured",
                ],
            ],
        ),
        "",
        "## Critical failures",
        "",
    ]
    crit = rep.get("critical_failures", [])
    out.append("\n".join(f"- {esc(c)}" for c in crit) if crit else "None.")
    out += ["", "## Battery runs", "", sources_note(book.results, counts=True)]
    out += ["", "## Obligation coverage", ""]
    rows = [
        [
            ref(obligation_label(o["id"]), o["id"]) if o.get("component") in book.contracts else esc(o["id"]),
            esc(o["component"]),
            esc(o["kind"]),
            esc(o["statement"]),
            badge(o["status"]),
        ]
        for o in obligations
    ]
    out.append(table(["obligation", "component", "kind", "statement", "status"], rows) if rows else "No obligations.")
    out += ["", "## Generated mutants", "", generated_table(gen, book)]
    out += [
        "",
        "## Registered faults",
        "",
        "Each gap's fault applied to a copy of the tree, against that gap's falsifiers.",
        "",
    ]
    rows = [
        [
            code(m["fault"]),
            ref(gap_label(m["gap"]), m["gap"]) if any(g.id == m["gap"] for g in book.gaps) else esc(m["gap"]),
            badge(m["severity"]),
            mutant_badge(m),
            esc(m.get("detail", "")),
        ]
        for m in mutants
    ]
    out.append(table(["fault", "gap", "severity", "result", "detail"], rows) if rows else "No mutants were run.")
    return "\n".join(out) + "\n"


def generated_table(gen: dict[str, Any], book: Book) -> str:
    """One row per contract: its committed generated-mutant run's counts, scope and score, or that it has none;
    and for the contracts the project makes a promise for, the score over the promised scope."""
    per = gen.get("contracts", {})
    required = gen.get("required") or {}
    floor = gen.get("floor")
    rows = []
    for name in sorted(set(per) | set(gen.get("missing") or [])):
        label = ref(contract_label(name), name) if name in book.contracts else esc(name)
        req = required.get(name)
        promise = "—"
        if req is not None:
            shown = "none" if req["score"] is None else percent(req["score"])
            verdict = "met" if req["met"] else "**not met** " + esc("(" + req["why"] + ")")
            promise = esc(f"{shown} over {req['scope']}:") + " " + verdict
        c = per.get(name)
        if c is None:
            rows.append([label, "—", "—", "—", "—", "not measured", "no committed run", promise])
            continue
        stale = " (sources changed since)" if c.get("stale") else ""
        population = c.get("population", c["total"])
        scope = c.get("scope", "all sources")
        measured = scope if population == c["total"] else f"{scope}: {c['total']} of {population} mutants"
        rows.append(
            [
                label,
                str(c["killed"]),
                str(c["survived"]),
                str(c["equivalent"]),
                str(c["not-runnable"]),
                "—" if c["score"] is None else percent(c["score"]),
                esc(f"{measured}; {c['date']}{stale}"),
                promise,
            ]
        )
    text = (
        "Mutants the engine made of each contract's sources, each run against that contract's falsifiers "
        "(`albor mutants --generated`); the survivors are on the contract pages, as diffs. A contract with no "
        "committed run has no score: it is shown here and counts neither way."
    )
    if floor is not None:
        text += f" The promise: at least {percent(floor)} over the scope named, for the contracts that have one."
    if not rows:
        return text + "\n\nNo generated-mutant run is committed yet."
    headers = ["contract", "killed", "survived", "equivalent", "not runnable", "score", "measured", "promise"]
    return text + "\n\n" + table(headers, rows)


def trace_page(book: Book) -> str:
    out = [
        target("traceability"),
        "# Traceability matrix",
        "",
        "Contract → obligation → falsifier → gap → fault. One row per falsifier of each obligation; a "
        "falsifier in the contract's own file `falsification/test_<contract>.py` is shown by its test name. "
        "A falsifier that guards no gap shows a dash.",
        "",
        "## Dangling references",
        "",
    ]
    if book.problems:
        out.append("\n".join(f"- {esc(p)}" for p in book.problems))
    else:
        out.append("None: every link above resolves. The build fails on any dangling reference.")
    out += ["", "## Matrix", ""]
    rows, last = [], ("", "")
    for r in book.rows:
        rows.append(
            [
                ref(contract_label(r.contract), r.contract) if r.contract != last[0] else "",
                ref(obligation_label(r.obligation), r.obligation) if (r.contract, r.obligation) != last else "",
                code(r.falsifier.removeprefix(f"falsification/test_{r.contract}.py::")),
                ", ".join(ref(gap_label(g), g) for g in r.gaps) or "—",
                ", ".join(code(f) for f in r.faults) or "—",
            ]
        )
        last = (r.contract, r.obligation)
    out.append(table(["contract", "obligation", "falsifier", "gaps", "faults"], rows) if rows else "Nothing yet.")
    return "\n".join(out) + "\n"
