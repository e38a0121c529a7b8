"""Where the verification layer's inputs live: in a checkout, or shipped inside an installed albor.

A checkout (an editable install, or a clone on ``sys.path``) has ``contracts/``, ``gaps/`` and
``falsification/`` at its root. A wheel ships the battery as the ``falsification`` package and the
contracts and gaps as package data under ``albor/verify/registry/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
IS_CHECKOUT = (CHECKOUT / "contracts").is_dir() and (CHECKOUT / "pyproject.toml").is_file()
REGISTRY = CHECKOUT if IS_CHECKOUT else Path(str(resources.files("albor.verify") / "registry"))

ROOT = CHECKOUT
"""The repository root in a checkout; where an installed albor lives (site-packages) otherwise."""
CONTRACTS_DIR = REGISTRY / "contracts"
GAPS_DIR = REGISTRY / "gaps"
COMMITTED_RESULTS = CHECKOUT / "falsification" / "results"
"""Battery and mutant runs of other devices (GPU), committed with card and date."""
LOCAL_RESULTS = COMMITTED_RESULTS / "local"
"""This machine's last battery, mutant and report run (git-ignored)."""
