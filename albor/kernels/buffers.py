"""Where every kernel gets its output and scratch buffers, so that tests can poison and guard them.

In production ``empty`` is ``torch.empty``. Inside ``poisoned()`` each buffer is filled with NaN and
sits between two NaN guard regions of the same allocation: an element a kernel fails to write stays
NaN, and a write past either end of the buffer lands in a guard, which the context checks on exit.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

GUARD = 16384  # elements on each side; more than any kernel tile overshoots

_guarded: list[tuple[tuple[int, ...], torch.Tensor]] | None = None


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """An uninitialised buffer (NaN-poisoned and guarded inside ``poisoned()``)."""
    if _guarded is None:
        return torch.empty(shape, dtype=dtype, device=device)
    n = math.prod(shape)
    storage = torch.full((n + 2 * GUARD,), float("nan"), dtype=dtype, device=device)
    _guarded.append((tuple(shape), storage))
    return storage[GUARD : GUARD + n].view(shape)


@contextmanager
def poisoned() -> Iterator[None]:
    """Poison and guard every kernel buffer allocated in the body; raise if a guard was written."""
    global _guarded
    outer, _guarded = _guarded, []
    try:
        yield
        broken = []
        for shape, storage in _guarded:
            hits = (~storage[:GUARD].isnan()).sum().item() + (~storage[-GUARD:].isnan()).sum().item()
            if hits:
                broken.append(f"{hits} element(s) written outside a {storage.dtype} buffer of shape {shape}")
        if broken:
            raise AssertionError("kernel wrote outside its buffers: " + "; ".join(broken))
    finally:
        _guarded = outer
