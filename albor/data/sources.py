"""Where source files come from: the embedded default, a folder of ``.py`` files, or codeparrot-clean Parquet.

Each source yields files in a fixed order, applies the licence policy, and stops at the byte cap.
"""

from __future__ import annotations

import csv
import importlib.metadata as md
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from albor.data.config import DataConfig
from albor.data.licenses import LICENSE_FILES, UNKNOWN, distribution_license, is_permissive, license_from_text
from albor.data.schema import check_corpus_schema
from albor.data.split import STDLIB_REPO

STDLIB_LICENSE = "psf-2.0"
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True)
class SourceFile:
    """One file offered by a source: read from ``location``, or given as ``content`` (Parquet rows)."""

    repo_name: str
    path: str
    license: str
    size: int
    location: Path | None = None
    content: str | None = None
    copies: str = "1"


@dataclass
class LicenseTally:
    """The repositories and files seen under one licence, and whether the policy kept them."""

    kept: bool
    repos: set[str] = field(default_factory=set)
    files: int = 0


@dataclass
class Harvest:
    """The files a source offers after the licence policy and the byte cap, and what was left out."""

    description: str
    policy: str
    budget: int  # source bytes still admitted under max_source_bytes
    files: list[SourceFile] = field(default_factory=list)
    licenses: dict[str, LicenseTally] = field(default_factory=dict)
    capped_files: int = 0
    capped_bytes: int = 0

    def allows(self, license: str) -> bool:
        return self.policy == "any" or is_permissive(license)

    def count(self, f: SourceFile, n_files: int = 1) -> None:
        tally = self.licenses.setdefault(f.license, LicenseTally(self.allows(f.license)))
        tally.repos.add(f.repo_name)
        tally.files += n_files

    def admit(self, f: SourceFile) -> None:
        """Count ``f`` under its licence; keep it when the policy allows and the byte budget has room."""
        self.count(f)
        if not self.allows(f.license):
            return
        if self.budget < f.size:
            self.capped_files += 1
            self.capped_bytes += f.size
            return
        self.budget -= f.size
        self.files.append(f)


def _walk_py(root: Path) -> Iterator[Path]:
    """Every ``.py`` file under ``root`` in sorted order, skipping caches, installs and hidden folders."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath) / name


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def stdlib_files() -> list[SourceFile]:
    """The running interpreter's standard library (its ``site-packages`` left out)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for p in _walk_py(root):
        size = _size(p)
        if size is not None:
            files.append(SourceFile(STDLIB_REPO, p.relative_to(root).as_posix(), STDLIB_LICENSE, size, p))
    return files


def _record(dist: md.Distribution) -> list[tuple[str, int | None]]:
    """(path, size) of a distribution's files, from RECORD when it has one (parsing it is much faster
    than ``dist.files``), else from whatever file list the installer left."""
    text = dist.read_text("RECORD")
    if text is None:
        return [(f.as_posix(), f.size) for f in dist.files or []]
    return [(row[0], int(row[2]) if len(row) > 2 and row[2] else None) for row in csv.reader(text.splitlines()) if row]


def distribution_files() -> list[list[SourceFile]]:
    """The ``.py`` files of each installed distribution (first of each name on sys.path), smallest first."""
    seen: set[str] = set()
    dists = []
    for dist in md.distributions():
        name = dist.metadata["Name"] or ""
        key = re.sub(r"[-_.]+", "-", name).lower()
        if not key or key in seen:
            continue
        seen.add(key)
        lic = distribution_license(dist.metadata)
        base = Path(str(dist.locate_file("")))
        files = []
        for rel, size in _record(dist):
            if not rel.endswith(".py") or rel.startswith(".."):
                continue
            size = size if size is not None else _size(base / rel)
            if size is not None:
                files.append(SourceFile(name, rel, lic, size, base / rel))
        if files:
            dists.append(files)
    return sorted(dists, key=lambda fs: (sum(f.size for f in fs), fs[0].repo_name))


def _default(h: Harvest) -> Harvest:
    for f in stdlib_files():
        h.admit(f)
    for files in distribution_files():
        whole = sum(f.size for f in files)
        if h.allows(files[0].license) and whole > h.budget:  # whole distributions only, as the split keeps them
            h.count(files[0], len(files))
            h.capped_files += len(files)
            h.capped_bytes += whole
            continue
        for f in files:
            h.admit(f)
    return h


def _folder(root: Path, h: Harvest) -> Harvest:
    """Each top-level subfolder is a repository named ``<folder>/<subfolder>``; loose files belong to ``<folder>``.

    A repository's licence is read from its LICENSE/COPYING file, else from the folder's, else unknown.
    """
    licenses: dict[Path, str] = {}

    def license_of(d: Path) -> str:
        if d not in licenses:
            found = next((d / n for n in LICENSE_FILES if (d / n).is_file()), None)
            text = found.read_text(errors="replace") if found else ""
            licenses[d] = license_from_text(text) if text else UNKNOWN
            if licenses[d] == UNKNOWN and d != root:
                licenses[d] = license_of(root)
        return licenses[d]

    for p in _walk_py(root):
        rel = p.relative_to(root).parts
        nested = len(rel) > 1
        repo_dir, repo = (root / rel[0], f"{root.name}/{rel[0]}") if nested else (root, root.name)
        size = _size(p)
        if size is not None:
            h.admit(SourceFile(repo, "/".join(rel[1:] if nested else rel), license_of(repo_dir), size, p))
    return h


def _parquet(paths: list[Path], h: Harvest) -> Harvest:
    columns = ["repo_name", "path", "copies", "license", "content"]
    for path in paths:
        try:
            pf = pq.ParquetFile(path)
            check_corpus_schema(pf.schema_arrow, path)
            for batch in pf.iter_batches(columns=columns):
                sizes = pc.binary_length(batch.column("content").cast(pa.large_binary())).to_pylist()
                rows = batch.to_pydict()
                for i, size in enumerate(sizes):
                    lic = rows["license"][i] or UNKNOWN
                    f = SourceFile(
                        rows["repo_name"][i], rows["path"][i], lic, size or 0,
                        content=rows["content"][i] or "", copies=rows["copies"][i] or "1",
                    )  # fmt: skip
                    h.admit(f)
        except (OSError, pa.ArrowException) as e:
            raise ValueError(f"{path}: cannot read Parquet: {e}") from e
    return h


def harvest(cfg: DataConfig) -> Harvest:
    """The files ``cfg.source`` offers, in a fixed order, after the licence policy and ``max_source_bytes``."""
    budget = cfg.max_source_bytes if cfg.max_source_bytes is not None else sys.maxsize

    def start(description: str) -> Harvest:
        return Harvest(description, cfg.license_policy, budget)

    if cfg.source is None:
        v = sys.version_info
        return _default(start(f"the Python {v.major}.{v.minor} standard library and installed distributions"))
    src = Path(cfg.source).expanduser()
    if src.is_file() and src.suffix == ".parquet":
        return _parquet([src], start(f"codeparrot-clean Parquet at {src}"))
    if src.is_dir():
        parquet = sorted(src.glob("*.parquet"))
        if parquet:
            return _parquet(parquet, start(f"codeparrot-clean Parquet at {src}"))
        return _folder(src, start(f"the folder {src}"))
    raise ValueError(f"source: {cfg.source!r} is neither a folder nor a .parquet file")
