"""Where the book's inputs and outputs live, relative to one repository root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from albor.verify.contracts import ROOT


@dataclass(frozen=True)
class Layout:
    """The paths the book reads and writes; tests point ``root`` at a temporary tree."""

    root: Path = ROOT

    @property
    def contracts(self) -> Path:
        return self.root / "contracts"

    @property
    def gaps(self) -> Path:
        return self.root / "gaps"

    @property
    def committed_results(self) -> Path:
        """JUnit XML of GPU battery runs, each with a ``.json`` sidecar (card, date, device)."""
        return self.root / "falsification" / "results"

    @property
    def local_results(self) -> Path:
        """The last battery, mutant and report run on this machine (git-ignored)."""
        return self.committed_results / "local"

    @property
    def chapters(self) -> Path:
        """Hand-written MyST chapters."""
        return self.root / "spec"

    @property
    def recorded_runs(self) -> Path:
        """Committed records of training runs (no checkpoints)."""
        return self.root / "spec" / "runs"

    @property
    def recorded_ladder(self) -> Path:
        """Committed model cards of ladder variants, one folder (or ``<file>.MODEL_CARD.md``) each."""
        return self.root / "spec" / "ladder"

    @property
    def local_runs(self) -> Path:
        """Training runs on this machine (git-ignored)."""
        return self.root / "runs"

    @property
    def docs(self) -> Path:
        """The Sphinx project."""
        return self.root / "docs"

    @property
    def generated(self) -> Path:
        return self.docs / "generated"

    @property
    def html(self) -> Path:
        return self.docs / "_build" / "html"

    @property
    def doctrees(self) -> Path:
        return self.docs / "_build" / "doctrees"
