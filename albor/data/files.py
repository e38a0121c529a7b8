"""File plumbing of the pipeline: hashes, Parquet writes, staged output folders, a parallel map."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from albor.io import fsync_dir

T = TypeVar("T")
R = TypeVar("R")
_INLINE_BELOW_BYTES = 4 << 20  # less input than this is not worth starting processes for


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of ``obj`` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_parquet(table: pa.Table, path: Path) -> str:
    """Write ``table`` as zstd Parquet into a ``staged_dir`` (which makes it durable); returns its sha256."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    data = sink.getvalue().to_pybytes()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``final`` that replaces ``final`` only if the block succeeds.

    On an exception the temporary folder is removed and ``final`` is left as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}."))
    try:
        yield tmp
        for p in tmp.iterdir():
            with p.open("rb") as f:
                os.fsync(f.fileno())
        fsync_dir(tmp)
        old = final.with_name(f".old-{final.name}.{os.getpid()}")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def byte_chunks(sizes: Sequence[int], limit: int) -> list[range]:
    """Consecutive index ranges whose sizes add up to about ``limit`` (each holds one item at least)."""
    chunks: list[range] = []
    start, total = 0, 0
    for i, n in enumerate(sizes):
        if i > start and total + n > limit:
            chunks.append(range(start, i))
            start, total = i, 0
        total += n
    if start < len(sizes):
        chunks.append(range(start, len(sizes)))
    return chunks


def n_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    # One process per core already: the tokenizers library must not start its own threads in them.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if initializer is not None:
        initializer(*initargs)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    sizes: Sequence[int],
    desc: str,
    initializer: Callable[..., None] | None = None,
    initargs: tuple[Any, ...] = (),
) -> list[R]:
    """``[fn(x) for x in items]`` on every core, in order, with a progress bar in bytes (on a terminal only).

    ``sizes`` are the items' bytes. ``initializer(*initargs)`` sets up each worker (or this process,
    when the input is too small to be worth starting workers for). Workers start from a fork server,
    so they inherit no threads.
    """
    bar = tqdm(total=sum(sizes), desc=desc, unit="B", unit_scale=True, disable=None)
    workers = n_workers()
    out: list[R] = []
    with bar:
        if workers == 1 or sum(sizes) < _INLINE_BELOW_BYTES:
            if initializer is not None:
                initializer(*initargs)
            results: Iterable[R] = map(fn, items)
            for r, w in zip(results, sizes, strict=True):
                out.append(r)
                bar.update(w)
            return out
        ctx = get_context("forkserver")
        with ProcessPoolExecutor(workers, ctx, _start_worker, (initializer, initargs)) as pool:
            for r, w in zip(pool.map(fn, items, chunksize=4), sizes, strict=True):
                out.append(r)
                bar.update(w)
    return out
