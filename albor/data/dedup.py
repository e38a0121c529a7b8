"""Exact dedup by content hash, and near dedup by MinHash over word shingles (datasketch LSH)."""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasketch import LeanMinHash

# datasketch is imported where it is used: it imports scipy (about 0.8 s), and every process that reads a
# prepared corpus imports this module, though only preparation deduplicates.

NUM_PERM = 128
SHINGLE = 5
MINHASH_SEED = 1
SCHEME = "affine32"
_WORD = re.compile(rb"[\w\x80-\xff]+")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BATCH = 1 << 14


def content_hash(content: str) -> int:
    """The ``hash`` column: sha256 of the UTF-8 content, first 8 bytes as a signed int64."""
    return int.from_bytes(hashlib.sha256(content.encode()).digest()[:8], "little", signed=True)


def shingle_hashes(content: str, n: int = SHINGLE) -> np.ndarray:
    """32-bit hashes of the distinct n-word shingles of ``content``.

    Words are runs of ASCII word characters and non-ASCII bytes of the UTF-8 text. A text with fewer
    than n words is one shingle; a text with none has no shingles.
    """
    tokens = _WORD.findall(content.encode())
    crc = {t: zlib.crc32(t) for t in set(tokens)}
    words = np.fromiter(map(crc.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
    if len(words) == 0:
        return words
    k = min(n, len(words))
    mixed = np.zeros(len(words) - k + 1, dtype=np.uint64)
    for i in range(k):
        mixed = mixed * _MIX + words[i : len(words) - k + 1 + i]
    return np.unique(mixed >> np.uint64(32))


def _identity(x: np.uint64) -> np.uint64:
    return x


@cache
def _permutations() -> np.ndarray:
    from datasketch import MinHash

    return MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED, scheme=SCHEME).permutations


def signature(content: str) -> np.ndarray:
    """The MinHash signature (``NUM_PERM`` values) of ``content``'s shingles."""
    from datasketch import MinHash

    m = MinHash(NUM_PERM, MINHASH_SEED, hashfunc=_identity, permutations=_permutations(), scheme=SCHEME)
    hashes = shingle_hashes(content)
    for i in range(0, len(hashes), _BATCH):
        m.update_batch(hashes[i : i + _BATCH].tolist())
    return m.hashvalues


def near_duplicates(signatures: Sequence[np.ndarray], threshold: float) -> dict[int, int]:
    """Map each near-duplicate's index to the index of the earlier document it duplicates.

    Documents are visited in order; one whose estimated Jaccard similarity with an earlier kept
    document reaches ``threshold`` is a duplicate of it, else it is kept and indexed.
    """
    from datasketch import LeanMinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=NUM_PERM)
    kept: dict[int, LeanMinHash] = {}
    dupes: dict[int, int] = {}
    for i, sig in enumerate(signatures):
        m = LeanMinHash(seed=MINHASH_SEED, hashvalues=sig, scheme=SCHEME)
        match = next((j for j in sorted(lsh.query(m)) if kept[j].jaccard(m) >= threshold), None)
        if match is None:
            lsh.insert(i, m)
            kept[i] = m
        else:
            dupes[i] = match
    return dupes
