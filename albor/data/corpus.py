"""The corpus stage: harvest, quality filters, exact and near dedup, the train/val split, Parquet shards.

Output: ``<out>/corpus/{train,val}-NNNNN.parquet`` in the codeparrot-clean schema (zstd), and
``<out>/corpus/corpus.json`` with each shard's sha256 and the report.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from albor.data import dedup
from albor.data.config import DataConfig
from albor.data.files import byte_chunks, parallel_map, sha256_file, sha256_json, staged_dir, write_parquet
from albor.data.filters import FileStats, drop_reason, file_stats
from albor.data.schema import CORPUS_SCHEMA
from albor.data.sources import Harvest, SourceFile, harvest
from albor.data.split import split_group, val_groups

Split = Literal["train", "val"]
SPLITS: tuple[Split, ...] = ("train", "val")
CORPUS_JSON = "corpus.json"
SHARD_BYTES = 64 << 20


def corpus_dir(out: Path) -> Path:
    """Where the corpus stage writes, inside a data directory."""
    return out / "corpus"


@dataclass
class Analysed:
    """One source file read, measured and fingerprinted, or the reason it could not be."""

    nbytes: int
    reason: str | None = None
    content: str | None = None
    stats: FileStats | None = None
    hash: int = 0
    signature: np.ndarray | None = None


def analyse(f: SourceFile, cfg: DataConfig) -> Analysed:
    """Read ``f`` (strict UTF-8), compute its codeparrot statistics, and fingerprint the ones kept."""
    if f.content is not None:
        content, nbytes = f.content, f.size
    else:
        try:
            data = f.location.read_bytes() if f.location else b""
        except OSError:
            return Analysed(f.size, "unreadable")
        nbytes = len(data)
        try:
            content = data.decode("utf-8")
        except UnicodeDecodeError:
            return Analysed(nbytes, "not-utf8")
    if not content.strip():
        return Analysed(nbytes, "empty")
    stats = file_stats(content)
    reason = drop_reason(stats, cfg)
    if reason:
        return Analysed(nbytes, reason)
    return Analysed(nbytes, None, content, stats, dedup.content_hash(content), dedup.signature(content))


@dataclass
class CorpusReport:
    """What the corpus stage saw, dropped and kept, as printed and stored in corpus.json."""

    source: str
    stages: list[tuple[str, int, int]] = field(default_factory=list)  # (stage, files, bytes) after each step
    drops: dict[str, tuple[int, int]] = field(default_factory=dict)  # reason -> (files, bytes)
    licenses: dict[str, dict[str, Any]] = field(default_factory=dict)
    capped: tuple[int, int] = (0, 0)
    splits: dict[str, dict[str, int]] = field(default_factory=dict)

    def drop(self, reason: str, nbytes: int) -> None:
        files, total = self.drops.get(reason, (0, 0))
        self.drops[reason] = (files + 1, total + nbytes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """The report as text: stages, drops with reasons, licences, split sizes."""
        mb = 1e6
        seen_files = sum(t["files"] for t in self.licenses.values())
        lines = [f"corpus from {self.source}", f"  files seen: {seen_files:,}"]
        kept = {k: v for k, v in self.licenses.items() if v["kept"]}
        dropped = {k: v for k, v in self.licenses.items() if not v["kept"]}
        lines.append("  licences kept: " + ", ".join(f"{k} ({v['files']:,} files)" for k, v in sorted(kept.items())))
        if dropped:
            lines.append("  licences dropped: " + "; ".join(_dropped(k, v) for k, v in sorted(dropped.items())))
        if self.capped[0]:
            lines.append(f"  left out by max_source_bytes: {self.capped[0]:,} files, {self.capped[1] / mb:.1f} MB")
        lines.append("  stage                 files         MB")
        lines += [f"  {name:<18} {files:>9,} {nbytes / mb:>10.2f}" for name, files, nbytes in self.stages]
        lines.append("  dropped: " + ", ".join(f"{r} {n:,} ({b / mb:.2f} MB)" for r, (n, b) in self.drops.items()))
        for split, s in self.splits.items():
            lines.append(f"  {split}: {s['files']:,} files, {s['bytes'] / mb:.2f} MB, {s['groups']:,} groups")
        return "\n".join(lines)


def _dropped(lic: str, t: dict[str, Any]) -> str:
    names = t["examples"]
    more = f", +{t['repos'] - len(names)} more" if t["repos"] > len(names) else ""
    return f"{lic} ({t['files']:,} files: {', '.join(names)}{more})"


def _licenses(h: Harvest) -> dict[str, dict[str, Any]]:
    return {
        lic: {"kept": t.kept, "repos": len(t.repos), "files": t.files, "examples": sorted(t.repos)[:5]}
        for lic, t in h.licenses.items()
    }


def _table(rows: list[tuple[SourceFile, Analysed]]) -> pa.Table:
    cols: dict[str, list[Any]] = {name: [] for name in CORPUS_SCHEMA.names}
    for f, a in rows:
        assert a.stats is not None
        cols["repo_name"].append(f.repo_name)
        cols["path"].append(f.path)
        cols["copies"].append(f.copies)
        cols["size"].append(str(a.nbytes))
        cols["content"].append(a.content)
        cols["license"].append(f.license)
        cols["hash"].append(a.hash)
        cols["line_mean"].append(a.stats.line_mean)
        cols["line_max"].append(a.stats.line_max)
        cols["alpha_frac"].append(a.stats.alpha_frac)
        cols["autogenerated"].append(a.stats.autogenerated)
    return pa.table(cols, schema=CORPUS_SCHEMA)


def _write_split(rows: list[tuple[SourceFile, Analysed]], split: Split, directory: Path) -> list[dict[str, Any]]:
    shards: list[dict[str, Any]] = []
    for k, chunk in enumerate(byte_chunks([a.nbytes for _, a in rows], SHARD_BYTES)):
        part = rows[chunk.start : chunk.stop]
        name = f"{split}-{k:05d}.parquet"
        digest = write_parquet(_table(part), directory / name)
        shards.append({"file": name, "sha256": digest, "rows": len(part), "bytes": sum(a.nbytes for _, a in part)})
    return shards


def build_corpus(cfg: DataConfig, out: Path) -> CorpusReport:
    """Run the corpus stage for ``cfg`` into ``out/corpus`` (replaced only when the stage succeeds)."""
    h = harvest(cfg)
    report = CorpusReport(h.description, licenses=_licenses(h), capped=(h.capped_files, h.capped_bytes))
    if not h.files:
        fix = (
            "; for your own code, which carries no licence file, pass license_policy=any "
            "(`albor data prepare source=... license_policy=any`, or data.license_policy=any to albor train)"
            if cfg.license_policy == "permissive"
            else ""
        )
        raise ValueError(f"empty corpus: {h.description} offers no .py file the licence policy and cap admit{fix}")
    report.stages.append(("offered", len(h.files), sum(f.size for f in h.files)))
    analysed = parallel_map(partial(analyse, cfg=cfg), h.files, [f.size for f in h.files], "corpus")

    readable = [(f, a) for f, a in zip(h.files, analysed, strict=True) if a.reason not in ("unreadable", "not-utf8")]
    report.stages.append(("utf-8 text", len(readable), sum(a.nbytes for _, a in readable)))
    for _, a in zip(h.files, analysed, strict=True):
        if a.reason:
            report.drop(a.reason, a.nbytes)
    docs = [(f, a) for f, a in readable if a.reason is None]
    report.stages.append(("quality filters", len(docs), sum(a.nbytes for _, a in docs)))

    seen: set[int] = set()
    unique = []
    for f, a in docs:
        if a.hash in seen:
            report.drop("duplicate", a.nbytes)
        else:
            seen.add(a.hash)
            unique.append((f, a))
    report.stages.append(("exact dedup", len(unique), sum(a.nbytes for _, a in unique)))

    near = dedup.near_duplicates([a.signature for _, a in unique], cfg.near_dup_threshold)
    for i in near:
        report.drop("near-duplicate", unique[i][1].nbytes)
    kept = [row for i, row in enumerate(unique) if i not in near]
    report.stages.append(("near dedup", len(kept), sum(a.nbytes for _, a in kept)))
    if not kept:
        raise ValueError(f"empty corpus: {h.description}: no file survived the filters\n{report.format()}")

    groups: dict[str, int] = {}
    for f, a in kept:
        g = split_group(f.repo_name, f.path)
        groups[g] = groups.get(g, 0) + a.nbytes
    val = val_groups(groups, cfg.val_fraction, cfg.seed)
    by_split = {
        "train": [(f, a) for f, a in kept if split_group(f.repo_name, f.path) not in val],
        "val": [(f, a) for f, a in kept if split_group(f.repo_name, f.path) in val],
    }
    for split, rows in by_split.items():
        n_groups = len(val) if split == "val" else len(groups) - len(val)
        report.splits[split] = {"files": len(rows), "bytes": sum(a.nbytes for _, a in rows), "groups": n_groups}
    if not by_split["train"]:
        raise ValueError(f"empty corpus: the train split is empty\n{report.format()}")

    with staged_dir(corpus_dir(out)) as tmp:
        shards = {split: _write_split(rows, split, tmp) for split, rows in by_split.items()}
        meta = {"format": 1, "config": cfg.fingerprint_fields(), "shards": shards, "report": report.to_json()}
        (tmp / CORPUS_JSON).write_text(json.dumps(meta, indent=2) + "\n")
    return report


def _meta(out: Path) -> dict[str, Any]:
    path = corpus_dir(out) / CORPUS_JSON
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the corpus index (run `python -m albor.data corpus`): {e}") from e


def corpus_sha256(out: Path) -> str:
    """One hash for the whole corpus: sha256 of its shard list with each shard's sha256."""
    return sha256_json(_meta(out)["shards"])


def read_corpus(out: Path, split: Split) -> list[str]:
    """The documents of ``split``, each shard checked against its sha256 first (errors name the file)."""
    return read_corpus_rows(out, split, ["content"])["content"]


def read_corpus_rows(out: Path, split: Split, columns: list[str]) -> dict[str, list[Any]]:
    """``columns`` of every row of ``split``, each shard checked against its sha256 first (errors name the file)."""
    rows: dict[str, list[Any]] = {c: [] for c in columns}
    for shard in _meta(out)["shards"][split]:
        path = corpus_dir(out) / shard["file"]
        if not path.is_file():
            raise ValueError(f"{path}: corpus shard is missing")
        if sha256_file(path) != shard["sha256"]:
            raise ValueError(f"{path}: corpus shard is corrupt (sha256 differs from {CORPUS_JSON})")
        try:
            table = pq.read_table(path, columns=columns)
        except (OSError, pa.ArrowException) as e:
            raise ValueError(f"{path}: cannot read corpus shard: {e}") from e
        for c in columns:
            rows[c] += table.column(c).to_pylist()
    return rows
