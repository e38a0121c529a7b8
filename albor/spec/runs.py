"""Training runs for the training log: config, preflight, metrics, checkpoints, and their plots."""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from albor.io import write_bytes_atomic
from albor.spec.layout import Layout
from albor.spec.results import load_json

STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class Checkpoint:
    """A kept checkpoint directory."""

    name: str
    step: int
    size: int
    tags: tuple[str, ...]


@dataclass
class Run:
    """One run directory: ``runs/<name>/`` (local) or ``spec/runs/<name>/`` (recorded)."""

    name: str
    slug: str
    path: Path
    recorded: bool
    config: str
    preflight: dict[str, Any] | None
    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @property
    def tokens_seen(self) -> int | None:
        """The running token count of the last train record."""
        return int(self.train[-1]["tokens"]) if self.train and "tokens" in self.train[-1] else None

    @property
    def last_step(self) -> int | None:
        steps = [r["step"] for r in self.train + self.evals]
        return max(steps) if steps else None


def read_metrics(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train and eval records; a last line without its newline is a write in progress and is left out."""
    if not path.is_file():
        return [], []
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]
    train, evals = [], []
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{no}: not a JSON object: {e}") from e
        if not isinstance(rec, dict) or "step" not in rec:
            raise ValueError(f"{path}:{no}: a metrics record needs a 'step' field")
        {"train": train, "eval": evals}.get(rec.get("kind"), []).append(rec)
    return train, evals


def _checkpoints(directory: Path) -> list[Checkpoint]:
    if not directory.is_dir():
        return []
    tags: dict[str, list[str]] = {}
    for link in ("latest", "best"):
        p = directory / link
        if p.is_symlink():
            tags.setdefault(Path(p.readlink()).name, []).append(link)
    kept = []
    for d in sorted(directory.iterdir()):
        m = STEP_DIR.match(d.name)
        if m and d.is_dir() and not d.is_symlink():
            size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            kept.append(Checkpoint(d.name, int(m.group(1)), size, tuple(tags.get(d.name, ()))))
    return kept


def load_run(path: Path, recorded: bool, slug: str) -> Run:
    """One run directory; a missing config, preflight or metrics file is shown as missing, not an error."""
    config = path / "config.yaml"
    train, evals = read_metrics(path / "metrics.jsonl")
    return Run(
        name=path.name,
        slug=slug,
        path=path,
        recorded=recorded,
        config=config.read_text() if config.is_file() else "",
        preflight=load_json(path / "preflight.json"),
        train=train,
        evals=evals,
        checkpoints=_checkpoints(path / "checkpoints"),
    )


def load_runs(layout: Layout) -> list[Run]:
    """Recorded runs, then local ones; a local run named like a recorded one gets a ``-local`` slug."""
    runs: list[Run] = []
    for base, recorded in ((layout.recorded_runs, True), (layout.local_runs, False)):
        if not base.is_dir():
            continue
        for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
            slug = re.sub(r"[^A-Za-z0-9_.-]", "-", d.name)
            if any(r.slug == slug for r in runs):
                slug += "-local"
            runs.append(load_run(d, recorded, slug))
    return runs


PANELS = [
    ("loss", "loss"),
    ("val_ppl", "validation perplexity"),
    ("lr", "learning rate"),
    ("grad_norm", "gradient norm (before clipping)"),
    ("tok_s", "tokens / s"),
    ("mfu", "MFU"),
]


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_run(run: Run, png: Path) -> None:
    """One PNG: loss, val_ppl, lr, grad norm and tok/s (and MFU when recorded) against step."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = [p for p in PANELS if p[0] != "mfu" or _series(run.train, "mfu")[0]]
    rows = math.ceil(len(panels) / 2)
    fig = Figure(figsize=(10, 2.6 * rows), dpi=100, layout="constrained")
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(rows, 2, i + 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key == "loss":
            ax.plot(*_series(run.train, "loss"), lw=1, label="train")
            if run.evals:
                ax.plot(*_series(run.evals, "val_loss"), "o-", ms=3, lw=1, label="validation")
            ax.legend(fontsize=8)
        else:
            ax.plot(
                *_series(run.evals if key == "val_ppl" else run.train, key),
                "o-" if key == "val_ppl" else "-",
                ms=3,
                lw=1,
            )
        ys = ax.get_lines()[0].get_ydata()
        if key in ("val_ppl", "grad_norm") and len(ys) and min(ys) > 0 and max(ys) / min(ys) > 20:
            ax.set_yscale("log")
        elif key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if not len(ys):
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_bytes_atomic(png, buf.getvalue())
