"""The two layers: the runtime (``albor`` outside ``albor/verify``) never imports the verification layer.

Read from the import graph of every module's source: ``albor/cli.py`` and ``albor/__main__.py``, the
console script above both layers, are the only runtime files allowed to name ``albor.verify``, and
nothing imports them. No runtime file mentions the fault registry or the battery either.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import albor

PACKAGE = Path(albor.__file__).parent
ABOVE_BOTH = {"albor/cli.py", "albor/__main__.py"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _runtime_files() -> dict[str, Path]:
    files = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = f"albor/{path.relative_to(PACKAGE).as_posix()}"
        if not rel.startswith("albor/verify/"):
            files[rel] = path
    return files


def test_the_runtime_never_imports_the_verification_layer() -> None:
    runtime = _runtime_files()
    assert len(runtime) > 40, "the walk must see the whole runtime"
    offenders = {
        rel: sorted(m for m in _imports(path) if m.startswith(("albor.verify", "falsification", "tests")))
        for rel, path in runtime.items()
        if rel not in ABOVE_BOTH
    }
    assert {rel: mods for rel, mods in offenders.items() if mods} == {}


def test_nothing_imports_the_console_script() -> None:
    everything = [*PACKAGE.rglob("*.py"), *(PACKAGE.parent / "falsification").glob("*.py")]
    importers = [p for p in everything if p.name != "__main__.py" and "albor.cli" in _imports(p)]
    assert importers == []


def test_no_fault_switch_is_left_in_the_runtime() -> None:
    for rel, path in _runtime_files().items():
        text = path.read_text()
        # The word, not the letters: "defaults" is not a fault switch.
        assert not re.search(r"\bfaults\b", text) and "ALBOR_FAULTS" not in text, f"{rel} still speaks of faults"
