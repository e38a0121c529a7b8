"""Faults: each a unified diff kept beside its gap that re-creates the gap's bug literally.

``gaps/ALB-NNN/<component>_<bug>.patch`` changes the runtime's source the way the bug did. It is
never a switch inside the runtime: the mutant runner copies the tree, applies the patch to the copy
(``git apply``) and runs the gap's falsifiers there. ``problems`` says when a patch no longer
applies, or applies but no longer changes the code, so that a fault cannot rot silently.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from albor.verify.gaps import Gap
from albor.verify.layout import GAPS_DIR

# What a copy of the tree holds: the runtime, the battery, the tests and what they read.
TREE = ("albor", "falsification", "tests", "contracts", "gaps", "conftest.py", "pyproject.toml")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "results", "_build", "generated", "*.egg-info")


class FaultError(RuntimeError):
    """A patch that does not apply to the tree it was meant for."""


@dataclass(frozen=True)
class Fault:
    """One fault: its name, the gap it re-creates, and the patch that does it."""

    name: str
    gap: str
    path: Path

    @property
    def diff(self) -> str:
        return self.path.read_text()

    def files(self) -> list[str]:
        """Repository-relative paths the patch changes."""
        return files_of(self.diff)


def files_of(diff: str) -> list[str]:
    """Repository-relative paths the unified diff ``diff`` changes."""
    return re.findall(r"^\+\+\+ b/(\S+)", diff, re.M)


def patch_path(gap: Gap, name: str, gaps_dir: Path = GAPS_DIR) -> Path:
    return gaps_dir / gap.id / f"{name}.patch"


def faults_of(gaps: list[Gap], gaps_dir: Path = GAPS_DIR) -> list[Fault]:
    """Every fault the gaps name, in gap order."""
    return [Fault(name, g.id, patch_path(g, name, gaps_dir)) for g in gaps for name in g.faults]


def stray_patches(gaps: list[Gap], gaps_dir: Path = GAPS_DIR) -> list[Path]:
    """Patch files under ``gaps_dir`` that no gap names."""
    named = {f.path for f in faults_of(gaps, gaps_dir)}
    return sorted(p for p in gaps_dir.glob("ALB-*/*.patch") if p not in named)


def copy_tree(root: Path, dest: Path, parts: tuple[str, ...] = TREE) -> Path:
    """Copy ``parts`` of the checkout at ``root`` into ``dest`` (links kept as links) and return ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in parts:
        src = root / part
        if src.is_dir():
            shutil.copytree(src, dest / part, symlinks=True, ignore=IGNORE)
        elif src.is_file():
            shutil.copy2(src, dest / part)
    return dest


def apply(diff: str, tree: Path) -> None:
    """Apply the unified diff ``diff`` to the copy ``tree``; FaultError says why when it does not apply."""
    proc = subprocess.run(
        ["git", "apply", "--whitespace=nowarn", "-"], input=diff, cwd=tree, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise FaultError(proc.stderr.strip() or f"git apply exited {proc.returncode}")


def _code(text: str) -> str | None:
    """The syntax tree of ``text`` as a string (comments and layout do not count), None if it does not parse."""
    try:
        return ast.dump(ast.parse(text))
    except SyntaxError:
        return None


def patched_sources(diff: str, files: list[str], root: Path) -> dict[str, str]:
    """The sources of ``files`` (repository-relative) once ``diff`` is applied to them as they are under ``root``;
    FaultError says why when it does not apply."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        for f in files:
            (tree / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, tree / f)
        apply(diff, tree)
        return {f: (tree / f).read_text() for f in files}


def problems(fault: Fault, root: Path) -> list[str]:
    """Why ``fault`` cannot be used on the checkout at ``root``: it is missing, does not apply, or changes no code."""
    if not fault.path.is_file():
        return [f"no patch file {fault.path.name}"]
    files = fault.files()
    if not files:
        return ["the patch changes no file"]
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        return [f"the patch changes {missing}, which do not exist"]
    try:
        patched = patched_sources(fault.diff, files, root)
    except FaultError as e:
        return [f"the patch no longer applies: {e}"]
    py = [f for f in files if f.endswith(".py")]
    broken = [f for f in py if _code(patched[f]) is None]
    if broken:
        return [f"the patched {broken} no longer parse: a fault must be the bug, not a syntax error"]
    unchanged = [f for f in py if _code((root / f).read_text()) == _code(patched[f])]
    return [f"the patch no longer changes the code of {unchanged}"] if unchanged else []
