"""``albor plot RUN_DIR``: the training-log PNGs of a run, written next to it in ``RUN_DIR/plots/``.

``training-log.png`` holds every panel (loss, val_ppl, lr, grad norm, tok/s, and MFU when it was
recorded); each panel is also written on its own (``loss.png``, ``val_ppl.png``, …). The spec book
draws its training log with the same code. Needs matplotlib (``pip install 'albor[plot]'``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from albor.io import write_bytes_atomic

Records = list[dict[str, Any]]

PANELS = [
    ("loss", "loss"),
    ("val_ppl", "validation perplexity"),
    ("lr", "learning rate"),
    ("grad_norm", "gradient norm (before clipping)"),
    ("tok_s", "tokens / s"),
    ("mfu", "MFU"),
]


def read_metrics(path: Path) -> tuple[Records, Records]:
    """Train and eval records; a last line without its newline is a write in progress and is left out."""
    if not path.is_file():
        return [], []
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]
    train: Records = []
    evals: Records = []
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


def _series(records: Records, key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    return [p[0] for p in pts], [p[1] for p in pts]


def panels_of(train: Records) -> list[tuple[str, str]]:
    """The panels a run has: MFU only where it was recorded (on a GPU of the peak table)."""
    return [p for p in PANELS if p[0] != "mfu" or _series(train, "mfu")[0]]


def plot(train: Records, evals: Records, png: Path, panels: list[tuple[str, str]]) -> None:
    """One PNG of ``panels`` against step, two to a row."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(5 * cols, 2.6 * rows + 0.4), dpi=100, layout="constrained")
    for i, (key, title) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if key == "loss":
            ax.plot(*_series(train, "loss"), lw=1, label="train")
            if evals:
                ax.plot(*_series(evals, "val_loss"), "o-", ms=3, lw=1, label="validation")
            ax.legend(fontsize=8)
        else:
            ax.plot(*_series(evals if key == "val_ppl" else train, key), "o-" if key == "val_ppl" else "-", ms=3, lw=1)
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


def plot_run_dir(run_dir: Path) -> list[Path]:
    """Write ``run_dir/plots/training-log.png`` and one PNG per panel; returns the paths written."""
    metrics = run_dir / "metrics.jsonl"
    train, evals = read_metrics(metrics)
    if not train and not evals:
        raise ValueError(f"{metrics}: no metrics to plot (is {run_dir} a run directory?)")
    out = run_dir / "plots"
    panels = panels_of(train)
    written = [out / "training-log.png"]
    plot(train, evals, written[0], panels)
    for panel in panels:
        written.append(out / f"{panel[0]}.png")
        plot(train, evals, written[-1], [panel])
    return written


def main(argv: list[str] | None = None, prog: str = "python -m albor.plot") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="a run directory (runs/<name>) holding metrics.jsonl")
    args = p.parse_args(argv)
    if importlib.util.find_spec("matplotlib") is None:
        print(f"{prog}: needs matplotlib, which is not installed: pip install 'albor[plot]'", file=sys.stderr)
        return 2
    try:
        written = plot_run_dir(args.run_dir)
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print("\n".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
