"""Docstring-conditioned completion pairs (signature + docstring → body) for instruct fine-tuning (contract ``lora``).

Pairs are mined from the train split of a prepared data folder only: the val split and HumanEval
never reach the fine-tune. Every function or method with a docstring and a body after it gives one
pair; its text is the function itself, dedented, so the prompt (the ``def`` line and docstring)
comes first and the body is what the model learns to complete. A pair whose ``def`` line or
docstring appears in a HumanEval prompt is dropped. The pairs are written as codeparrot-clean
Parquet, each row keeping its source's repository and licence, so ``albor data`` packs them like
any other source (and its split keeps each repository on one side).
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from albor.data.corpus import read_corpus_rows
from albor.data.dedup import content_hash
from albor.data.filters import file_stats
from albor.data.schema import CORPUS_SCHEMA
from albor.eval.humaneval import load_problems
from albor.io import write_bytes_atomic

PAIRS_FILE = "pairs.parquet"


@dataclass(frozen=True)
class Pair:
    """One function split at the end of its docstring: ``prompt + body`` is the function's dedented source."""

    repo_name: str
    path: str
    license: str
    prompt: str
    body: str

    @property
    def text(self) -> str:
        return self.prompt + self.body


def _squash(text: str) -> str:
    return " ".join(text.split())


def humaneval_fingerprints() -> set[str]:
    """Whitespace-collapsed ``def`` lines and docstrings of every HumanEval prompt: a pair with one is dropped."""
    marks: set[str] = set()
    for problem in load_problems():
        for node in ast.walk(ast.parse(problem.prompt)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                marks.add(_squash(ast.get_source_segment(problem.prompt, node).splitlines()[0]))
                doc = ast.get_docstring(node)
                if doc:
                    marks.add(_squash(doc))
    return marks


def function_pairs(source: str) -> list[tuple[str, str]]:
    """(prompt, body) of every function in ``source`` that has a docstring and statements after it."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    lines = source.splitlines(keepends=True)
    pairs = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) or len(node.body) < 2:
            continue
        if ast.get_docstring(node) is None:
            continue
        start = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
        split, end = node.body[0].end_lineno, node.end_lineno
        # Dedenting keeps the line count, so the prompt is the first split - start lines of the dedented text.
        whole = textwrap.dedent("".join(lines[start:end])).splitlines(keepends=True)
        prompt, body = "".join(whole[: split - start]), "".join(whole[split - start :])
        if body.strip():
            pairs.append((prompt, body if body.endswith("\n") else body + "\n"))
    return pairs


def mine_pairs(data_dir: Path) -> list[Pair]:
    """Every pair of the train split of ``data_dir``, HumanEval's dropped, in corpus order."""
    rows = read_corpus_rows(data_dir, "train", ["repo_name", "path", "license", "content"])
    banned = humaneval_fingerprints()
    pairs = []
    for repo, path, lic, content in zip(rows["repo_name"], rows["path"], rows["license"], rows["content"], strict=True):
        for prompt, body in function_pairs(content):
            doc_and_def = {
                _squash(prompt.splitlines()[0]),
                _squash(ast.get_docstring(ast.parse(prompt + body).body[0])),
            }
            if doc_and_def & banned:
                continue
            pairs.append(Pair(repo, path, lic, prompt, body))
    return pairs


def write_pairs(pairs: list[Pair], out: Path) -> Path:
    """The pairs as codeparrot-clean Parquet at ``out`` (atomically); the k-th pair of a file is ``path#k``."""
    if not pairs:
        raise ValueError(f"{out}: no docstring-conditioned pairs to write: the train split has no documented function")
    cols: dict[str, list] = {name: [] for name in CORPUS_SCHEMA.names}
    seen: dict[str, int] = {}
    for p in pairs:
        k = seen[p.path] = seen.get(p.path, -1) + 1
        stats = file_stats(p.text)
        cols["repo_name"].append(p.repo_name)
        cols["path"].append(f"{p.path}#{k}")
        cols["copies"].append("1")
        cols["size"].append(str(len(p.text.encode())))
        cols["content"].append(p.text)
        cols["license"].append(p.license)
        cols["hash"].append(content_hash(p.text))
        cols["line_mean"].append(stats.line_mean)
        cols["line_max"].append(stats.line_max)
        cols["alpha_frac"].append(stats.alpha_frac)
        cols["autogenerated"].append(stats.autogenerated)
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(cols, schema=CORPUS_SCHEMA), sink, compression="zstd")
    write_bytes_atomic(out, sink.getvalue().to_pybytes())
    return out
