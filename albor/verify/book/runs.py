"""Training runs for the training log: config, preflight, metrics, checkpoints, and their plots."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from albor.plot import panels_of, plot, read_metrics
from albor.verify.book.layout import Layout
from albor.verify.book.results import load_json

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


def plot_run(run: Run, png: Path) -> None:
    """One PNG: loss, val_ppl, lr, grad norm and tok/s (and MFU when recorded) against step."""
    plot(run.train, run.evals, png, panels_of(run.train))
