"""Perplexity of any model that maps a window of token ids to next-token logits: Albor's decoder in float32
or quantised, or a GGUF in llama.cpp, scored on the same windows in the same order with the same loss.

The loss is the token-mean cross entropy of ``window[1:]`` given ``window[:-1]``, summed per window in
float64 and divided once by the token count, as in ``albor.eval.perplexity``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from albor.eval.perplexity import PerplexityResult
from albor.model import Decoder

Logits = Callable[[list[int]], torch.Tensor]
"""Token ids (T,) to float32 logits (T, V) of the token after each."""


def window_perplexity(logits_of: Logits, windows: np.ndarray, max_windows: int | None = None) -> PerplexityResult:
    """Token-mean CE and perplexity of ``windows`` (n, seq_len + 1) under ``logits_of``."""
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be (n, seq_len + 1) with seq_len >= 1, got shape {windows.shape}")
    total, tokens = 0.0, 0
    for window in windows[:max_windows]:
        ids = window.astype(np.int64)
        logits = logits_of(ids[:-1].tolist()).to(torch.float64)
        targets = torch.from_numpy(ids[1:])
        total += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
        tokens += len(targets)
    loss = total / tokens
    return PerplexityResult(loss=loss, ppl=math.exp(loss), tokens=tokens)


def decoder_logits(model: Decoder) -> Logits:
    """``logits_of`` for an Albor decoder (float32 or quantised), on the CPU, without gradients."""

    def logits_of(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            return model(torch.tensor([ids]))[0]

    return logits_of
