"""Validation perplexity: the token-mean cross entropy over packed windows, and its exponential.

The trainer's periodic eval and ``python -m albor.eval perplexity`` both call ``evaluate_perplexity``,
so the two figures agree by construction: same windows in the same order, same targets, same loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from albor.data.packing import check_same_tokenizer, load_windows
from albor.data.windows import Windows
from albor.model import Decoder


@dataclass(frozen=True)
class PerplexityResult:
    """Token-mean CE in nats, ``exp`` of it, and the number of target tokens it averages."""

    loss: float
    ppl: float
    tokens: int


def evaluate_perplexity(
    model: Decoder,
    windows: np.ndarray | Windows,
    batch_size: int,
    device: torch.device | str,
    max_windows: int | None = None,
    bf16: bool = False,
) -> PerplexityResult:
    """CE of ``windows[:, 1:]`` given ``windows[:, :-1]``, averaged over every target token.

    ``windows`` is (n, seq_len + 1) token ids; the first ``max_windows`` are used, in order, in
    batches of ``batch_size``. Each batch's summed loss is accumulated in float64 and divided once
    by the token count, so the mean is exact across batches. The model runs in eval mode under
    ``torch.no_grad`` (in bfloat16 autocast when ``bf16``) and gets its train/eval mode back after.
    """
    if windows.ndim != 2 or windows.shape[1] < 2:
        raise ValueError(f"windows must be (n, seq_len + 1) with seq_len >= 1, got shape {windows.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be >= 1 or None, got {max_windows}")
    seq_len = windows.shape[1] - 1
    if seq_len > model.cfg.max_seq_len:
        raise ValueError(
            f"windows hold {seq_len} inputs each, more than the model's max_seq_len {model.cfg.max_seq_len}"
        )
    windows = windows[:max_windows]
    if len(windows) == 0:
        raise ValueError("no windows to evaluate")
    if windows.min() < 0 or windows.max() >= model.cfg.vocab_size:
        raise ValueError(f"token ids must lie in [0, {model.cfg.vocab_size}), got [{windows.min()}, {windows.max()}]")

    device = torch.device(device)
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(windows), batch_size):
                batch = torch.from_numpy(windows[start : start + batch_size].astype(np.int64)).to(device)
                x, y = batch[:, :-1], batch[:, 1:]
                total += model(x, y, reduction="sum").double().item()
                tokens += y.numel()
    finally:
        model.train(was_training)
    loss = total / tokens
    return PerplexityResult(loss=loss, ppl=math.exp(loss), tokens=tokens)


def val_windows(data_dir: Path, tokenizer: Path) -> Windows:
    """The val split of ``data_dir``, refused unless its shards were made with ``tokenizer`` (a checkpoint's).

    A data folder rebuilt from other sources with the same vocabulary size and context would give a
    different val_loss for the same model, silently; the tokenizer's hash tells.
    """
    check_same_tokenizer(data_dir, tokenizer)
    return load_windows(data_dir, "val")
