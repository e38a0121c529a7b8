"""Fill-in-the-middle (Bavarian et al. 2022): a document cut at two character positions and reordered.

A transformed document is a list of parts, each a text or a sentinel id:

- PSM: ``[PRE, prefix, SUF, suffix, MID, middle]``
- SPM: ``[PRE, SUF, suffix, MID, prefix + middle]`` (the variant whose prefix and middle tokenize together)
- untouched: ``[document]``

Texts are tokenized separately and the sentinels go in as ids, so no text can forge one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from albor.data.tokenizer import FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX

Part = str | int
SENTINELS = (FIM_PREFIX, FIM_SUFFIX, FIM_MIDDLE)


def _rng(doc: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(doc.encode("utf-8", "surrogatepass")).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


def fim_transform(doc: str, seed: int, rate: float, spm_rate: float) -> list[Part]:
    """The parts of ``doc`` after FIM, decided by (seed, document) alone.

    With probability ``rate`` the document is cut at two points drawn uniformly from 0..len(doc)
    (characters, not bytes or tokens); then SPM with probability ``spm_rate``, else PSM.
    """
    rng = _rng(doc, seed)
    if not doc or rng.random() >= rate:
        return [doc]
    i, j = sorted(int(x) for x in rng.integers(0, len(doc) + 1, size=2))
    prefix, middle, suffix = doc[:i], doc[i:j], doc[j:]
    if rng.random() < spm_rate:
        return [FIM_PREFIX, FIM_SUFFIX, suffix, FIM_MIDDLE, prefix + middle]
    return [FIM_PREFIX, prefix, FIM_SUFFIX, suffix, FIM_MIDDLE, middle]


def fim_invert(parts: Sequence[Part]) -> str:
    """The original document, read from where the sentinels stand: text after PRE, after MID, after SUF.

    Works for PSM and SPM alike (in SPM nothing follows PRE), and for parts whose empty texts were
    dropped, as they are when parts are rebuilt from token ids.
    """
    texts: dict[int | None, str] = {None: ""}
    current: int | None = None
    for p in parts:
        if isinstance(p, str):
            texts[current] += p
        elif p in SENTINELS and p not in texts:
            current = p
            texts[p] = ""
        else:
            raise ValueError(f"not a FIM transform: unexpected or repeated sentinel {p} in {list(parts)!r}")
    if current is None:
        return texts[None]
    if list(texts)[1:] != list(SENTINELS) or texts[None]:
        raise ValueError("not a FIM transform: sentinels must open the document in the order PRE, SUF, MID")
    return texts[FIM_PREFIX] + texts[FIM_MIDDLE] + texts[FIM_SUFFIX]


def parts_from_ids(ids: Sequence[int], decode: Callable[[Sequence[int]], str]) -> list[Part]:
    """One document's token ids as parts: sentinels kept as ids, each run between them decoded to text."""
    parts: list[Part] = []
    run: list[int] = []
    for t in ids:
        if t in SENTINELS:
            if run:
                parts.append(decode(run))
            parts.append(t)
            run = []
        else:
            run.append(t)
    if run:
        parts.append(decode(run))
    return parts
