"""The training log pages: an index of runs and one page per run with its plots."""

from __future__ import annotations

from albor.verify.book.myst import badge, code, esc, facts, ref, table, target
from albor.verify.book.runs import Run

NO_RUNS = (
    "No training runs yet. Runs appear here from `runs/<name>/` on this machine and from `spec/runs/<name>/`, "
    "the committed records of GPU runs (config, preflight and metrics, without checkpoints)."
)


def run_label(run: Run) -> str:
    return f"run-{run.slug.lower()}"


def _fmt(x: float | None, spec: str = ".4g") -> str:
    return "—" if x is None else format(x, spec)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _preflight_badge(run: Run) -> str:
    status = (run.preflight or {}).get("status", "missing")
    return badge({"passed": "passed", "failed": "failed", "skipped": "warning"}.get(status, "not-run"), status)


def _best_ppl(run: Run) -> str:
    evals = [e for e in run.evals if isinstance(e.get("val_ppl"), int | float)]
    if not evals:
        return "—"
    best = min(evals, key=lambda e: e["val_ppl"])
    return f"{best['val_ppl']:.4g} (step {best['step']})"


def _facts(run: Run) -> list[tuple[str, str]]:
    last = run.train[-1] if run.train else {}
    return [
        ("source", "recorded (`spec/runs/`)" if run.recorded else "local (`runs/`)"),
        ("preflight", _preflight_badge(run)),
        ("steps", _fmt(run.last_step, "d")),
        ("tokens seen", _fmt(run.tokens_seen, ",d")),
        ("last train loss", _fmt(last.get("loss"))),
        ("best validation perplexity", _best_ppl(run)),
        ("checkpoints kept", str(len(run.checkpoints)) if not run.recorded else "not recorded"),
    ]


def runs_index(runs: list[Run]) -> str:
    out = [target("training-log"), "# Training log", ""]
    if not runs:
        return "\n".join([*out, NO_RUNS]) + "\n"
    out += [
        "One page per run: its config, the preflight battery result, the metrics against step, and the "
        "checkpoints kept.",
        "",
    ]
    rows = [[ref(run_label(r), r.name), *(f[1] for f in _facts(r))] for r in runs]
    headers = ["run", "source", "preflight", "steps", "tokens seen", "last loss", "best val ppl", "checkpoints"]
    out += [table(headers, rows), "", "```{toctree}", ":hidden:", "", *(r.slug for r in runs), "```"]
    return "\n".join(out) + "\n"


def run_page(run: Run, png: str | None) -> str:
    out = [target(run_label(run)), f"# Run {esc(run.name)}", "", facts(_facts(run)), "", "## Metrics", ""]
    if png:
        out.append(f"![Loss, validation perplexity, learning rate, gradient norm and throughput of {run.name}]({png})")
    else:
        out.append("No metrics recorded yet (`metrics.jsonl` is missing or empty).")
    out += ["", "## Preflight", ""]
    pf = run.preflight
    if pf is None:
        out.append("No `preflight.json`: the run did not record a preflight battery.")
    else:
        claims = ", ".join(code(c) for c in pf.get("failed_claims") or []) or "none"
        tests = ", ".join(code(t) for t in pf.get("failed_tests") or []) or "none"
        rows = [
            ("status", _preflight_badge(run)),
            ("device", esc(f"{pf.get('device', '—')} ({pf['card']})" if pf.get("card") else pf.get("device", "—"))),
            ("failed claims", claims),
            ("failed tests", tests),
            ("JUnit", code(str(pf["junit"])) if pf.get("junit") else "—"),
            ("warning", esc(pf["warning"]) if pf.get("warning") else "none"),
        ]
        out.append(facts(rows))
    out += ["", "## Config", ""]
    out.append(f"```yaml\n{run.config.rstrip()}\n```" if run.config.strip() else "No `config.yaml` recorded.")
    if not run.recorded:
        out += ["", "## Checkpoints", ""]
        if run.checkpoints:
            rows = [[code(c.name), str(c.step), _size(c.size), ", ".join(c.tags) or "—"] for c in run.checkpoints]
            out.append(table(["checkpoint", "step", "size", "link"], rows))
        else:
            out.append("No checkpoints kept.")
    return "\n".join(out) + "\n"
