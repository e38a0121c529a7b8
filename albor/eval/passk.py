"""The unbiased pass@k estimator of Chen et al. 2021 (arXiv:2107.03374, eq. 1)."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from math import comb


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn from n (c of them correct) is correct.

    ``1 - C(n - c, k) / C(n, k)``, computed exactly in integers and rounded once.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    return float(1 - Fraction(comb(n - c, k), comb(n, k)))


def mean_pass_at_k(samples: Sequence[int], correct: Sequence[int], k: int) -> float:
    """pass@k averaged over problems; problem i has ``samples[i]`` samples, ``correct[i]`` of them correct."""
    if len(samples) != len(correct) or not samples:
        raise ValueError(f"need one (samples, correct) pair per problem, got {len(samples)} and {len(correct)}")
    return sum(pass_at_k(n, c, k) for n, c in zip(samples, correct, strict=True)) / len(samples)
