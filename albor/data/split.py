"""The deterministic train/val split: whole groups of files go to one side, never both."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

STDLIB_REPO = "cpython-stdlib"


def split_group(repo_name: str, path: str) -> str:
    """The unit the split keeps whole: the repository (a distribution), except in the standard library.

    The standard library is one repository holding ~200 independent top-level modules and packages;
    each of those is a group of its own, so that it can be split at all.
    """
    if repo_name == STDLIB_REPO:
        return f"{repo_name}/{path.split('/', 1)[0].removesuffix('.py')}"
    return repo_name


def _rank(group: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{group}".encode()).digest()


def val_groups(group_bytes: Mapping[str, int], val_fraction: float, seed: int) -> set[str]:
    """The groups held out for validation, about ``val_fraction`` of all bytes.

    Groups are visited in an order fixed by a hash of (seed, group); each joins val while val stays
    within its share. When none fits but there are two groups or more, the smallest joins, so val is
    never empty unless ``val_fraction`` is 0.
    """
    if val_fraction <= 0 or len(group_bytes) < 2:
        return set()
    budget = val_fraction * sum(group_bytes.values())
    chosen: set[str] = set()
    used = 0
    for group in sorted(group_bytes, key=lambda g: _rank(g, seed)):
        if used + group_bytes[group] <= budget:
            chosen.add(group)
            used += group_bytes[group]
    return chosen or {min(group_bytes, key=lambda g: (group_bytes[g], g))}
