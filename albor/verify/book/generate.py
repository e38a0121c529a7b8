"""Write the generated pages into ``docs/generated/`` from the book's sources."""

from __future__ import annotations

from pathlib import Path

from albor.io import write_text_atomic
from albor.ladder.model_card import CARD, ladder_table, read_card
from albor.verify.book import pages, snippets, training_log
from albor.verify.book.book import Book, load_book
from albor.verify.book.layout import Layout
from albor.verify.book.runs import plot_run


class DanglingError(ValueError):
    """A contract, gap or fault names something that does not exist."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("dangling references:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


class _Writer:
    """Writes files that changed (so Sphinx rebuilds only those) and remembers what it wrote."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.kept: set[Path] = set()

    def text(self, rel: str, text: str) -> None:
        path = self.out / rel
        self.kept.add(path)
        if not path.is_file() or path.read_text() != text:
            write_text_atomic(path, text)

    def remove_stale(self) -> None:
        for p in sorted(self.out.rglob("*"), reverse=True):
            if p.is_file() and p not in self.kept:
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()


def _plot(w: _Writer, run, rel: str) -> bool:
    """Render the run's metrics PNG unless it is newer than ``metrics.jsonl``; False when there is nothing to plot."""
    if not (run.train or run.evals):
        return False
    png = w.out / rel
    w.kept.add(png)
    metrics = run.path / "metrics.jsonl"
    if not png.is_file() or png.stat().st_mtime < metrics.stat().st_mtime:
        plot_run(run, png)
    return True


def ladder_cards(layout: Layout) -> list[tuple[Path, dict]]:
    """Every model card, recorded (``spec/ladder``) then local (``runs``), in path order."""
    found = []
    for base in (layout.recorded_ladder, layout.local_runs):
        if base.is_dir():
            found += sorted([*base.glob(f"*/{CARD}"), *base.glob(f"*.{CARD}"), *base.glob(f"*/*.{CARD}")])
    return [(p, read_card(p)) for p in found]


def ladder_page(layout: Layout) -> str:
    """The ladder table, one row per model card, generated from the cards alone."""
    cards = ladder_cards(layout)
    intro = (
        "(ladder)=\n# The ladder\n\nOne row per variant, generated from each variant's `MODEL_CARD.md` "
        "(`albor card`): base, distilled, instruct, merged, pruned, quantised. Recorded cards live in "
        "`spec/ladder/`, this machine's in `runs/`.\n\n"
    )
    if not cards:
        return intro + "No model card has been written yet.\n"
    sources = "\n".join(f"- `{p.relative_to(layout.root)}`" for p, _ in cards)
    return intro + ladder_table([meta for _, meta in cards]) + f"\nCards:\n\n{sources}\n"


def write_pages(book: Book, layout: Layout) -> None:
    """Every generated page and figure, plus the hand-written chapters copied beside them."""
    w = _Writer(layout.generated)
    for chapter in sorted(layout.chapters.glob("*.md")):
        w.text(f"spec/{chapter.name}", chapter.read_text())
    w.text("snippets/presets.md", snippets.presets())
    w.text("snippets/status.md", snippets.status(book))
    w.text("contracts/index.md", pages.contracts_index(book))
    for c in book.contracts.values():
        w.text(f"contracts/{c.component}.md", pages.contract_page(c, book))
    w.text("gaps/index.md", pages.gap_register(book))
    for g in book.gaps:
        w.text(f"gaps/{g.id}.md", pages.gap_page(g, book))
    w.text("report.md", pages.report_page(book))
    w.text("traceability.md", pages.trace_page(book))
    w.text("runs/index.md", training_log.runs_index(book.runs))
    w.text("ladder.md", ladder_page(layout))
    for run in book.runs:
        png = f"{run.slug}.png"
        w.text(f"runs/{run.slug}.md", training_log.run_page(run, png if _plot(w, run, f"runs/{png}") else None))
    w.remove_stale()


def generate(layout: Layout | None = None) -> Book:
    """Load the sources, write the pages, and raise DanglingError if any link dangles (after writing,
    so the traceability page shows them)."""
    layout = layout or Layout()
    book = load_book(layout)
    write_pages(book, layout)
    if book.problems:
        raise DanglingError(book.problems)
    return book
