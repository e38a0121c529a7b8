"""A split's windows, read from its token shards on demand, so that a rank holds only what it asks for.

Token shards are ``.npy`` files of shape (windows, seq_len + 1), uint16 or uint32, uncompressed, so
that window ``i`` of a shard sits at a fixed offset. ``Windows`` verifies each shard's sha256 once,
when it opens the split, and then reads the rows a batch needs with ``os.pread``: no shard is loaded
whole and nothing is memory-mapped, so a rank's resident memory does not grow with the corpus.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from albor.data.files import sha256_file


def write_npy(array: np.ndarray, path: Path) -> str:
    """Write ``array`` as an ``.npy`` file; returns its sha256."""
    with path.open("wb") as f:
        np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
    return sha256_file(path)


@dataclass(frozen=True)
class _Shard:
    fd: int
    rows: int
    offset: int  # where the first row starts


class Windows:
    """The windows of one split as one (n, seq_len + 1) array, read row by row from its shards.

    Index it with an int, a slice or an integer array; the result is a NumPy array in that order.
    """

    def __init__(self, paths: Sequence[Path], digests: Sequence[str], rows: Sequence[int], width: int, dtype: str):
        self.dtype = np.dtype(dtype)
        self.width = width
        self._shards: list[_Shard] = []
        for path, digest, n in zip(paths, digests, rows, strict=True):
            if not path.is_file():
                raise ValueError(f"{path}: token shard is missing")
            if sha256_file(path) != digest:
                raise ValueError(f"{path}: token shard is corrupt or truncated (sha256 differs from the manifest)")
            self._shards.append(self._open(path, n))
        self._starts = np.cumsum([0] + [s.rows for s in self._shards])

    def _open(self, path: Path, rows: int) -> _Shard:
        with path.open("rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
                shape, fortran, dtype = read_header[version](f)
            except (ValueError, KeyError) as e:
                raise ValueError(f"{path}: not a token shard: {e}") from e
            offset = f.tell()
        if shape != (rows, self.width) or fortran or dtype != self.dtype:
            raise ValueError(
                f"{path}: holds {shape} {dtype}{' (Fortran order)' if fortran else ''}, the manifest says "
                f"({rows}, {self.width}) {self.dtype}"
            )
        return _Shard(os.open(path, os.O_RDONLY), rows, offset)

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.width

    ndim = 2

    def __getitem__(self, index: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(index, slice):
            return self._rows(np.arange(len(self))[index])
        if np.isscalar(index):
            return self._rows(np.array([index]))[0]
        return self._rows(np.asarray(index))

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        if idx.ndim != 1 or (idx.size and (idx.min() < -len(self) or idx.max() >= len(self))):
            raise IndexError(f"window indices must be a 1-d array within [0, {len(self)})")
        idx = np.where(idx < 0, idx + len(self), idx)
        out = np.empty((len(idx), self.width), dtype=self.dtype)
        row_bytes = self.width * self.dtype.itemsize
        shard_of = np.searchsorted(self._starts, idx, side="right") - 1
        i = 0
        while i < len(idx):
            # One read for each run of consecutive windows in one shard (a slice, or a sorted batch).
            j, s = i + 1, shard_of[i]
            while j < len(idx) and shard_of[j] == s and idx[j] == idx[j - 1] + 1:
                j += 1
            shard, local = self._shards[s], int(idx[i] - self._starts[s])
            data = os.pread(shard.fd, (j - i) * row_bytes, shard.offset + local * row_bytes)
            out[i:j] = np.frombuffer(data, dtype=self.dtype).reshape(j - i, self.width)
            i = j
        return out

    def __del__(self) -> None:
        for shard in getattr(self, "_shards", []):
            os.close(shard.fd)
