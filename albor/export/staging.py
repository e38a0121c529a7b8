"""Exports appear whole or not at all: each is written beside its destination, then renamed onto it."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from albor.io import fsync_dir


class ExportError(Exception):
    """An export that cannot be written; the message names the file."""


def _fresh(out: Path) -> None:
    if out.exists() or out.is_symlink():
        raise ExportError(f"{out}: exists already; an export never overwrites (remove it or choose another path)")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent}: no such directory")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` that becomes ``out`` when the block completes, and vanishes otherwise."""
    _fresh(out)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".tmp-{out.name}."))
    try:
        yield tmp
        mask = _umask()
        for f in tmp.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
            f.chmod(0o666 & ~mask)
        # mkdtemp and mkstemp make private entries; an export is read by other users and tools (ALB-211).
        tmp.chmod(0o777 & ~mask)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(out.parent)


@contextmanager
def staged_file(out: Path) -> Iterator[Path]:
    """A temporary path beside ``out`` that is renamed onto ``out`` when the block completes."""
    _fresh(out)
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".tmp-{out.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        tmp.chmod(0o666 & ~_umask())
        os.rename(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(out.parent)
