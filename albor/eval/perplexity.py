"""Validation perplexity: the token-mean cross entropy over packed windows, its exponential, and bits per byte.

The trainer's periodic eval and ``python -m albor.eval perplexity`` both call ``evaluate_perplexity``,
so the two figures agree by construction: same windows in the same order, same targets, same loss.

Bits per byte, the tokenizer-independent figure, divides the summed loss in bits by the UTF-8 bytes
of source text that the scored tokens (the targets, ``windows[:, 1:]``) stand for: special tokens (the
EOS between documents, FIM sentinels) are scored but stand for no bytes
(``token_byte_lengths``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from albor.data.packing import check_same_tokenizer, load_windows
from albor.data.tokenizer import N_SPECIAL
from albor.data.windows import Windows
from albor.model import Decoder


@dataclass(frozen=True)
class PerplexityResult:
    """Token-mean CE in nats, ``exp`` of it, the number of target tokens it averages, and, when the
    tokens' byte lengths were given, the targets' source bytes and the summed loss in bits per byte."""

    loss: float
    ppl: float
    tokens: int
    bytes: int | None = None
    bits_per_byte: float | None = None


def evaluate_perplexity(
    model: Decoder,
    windows: np.ndarray | Windows,
    batch_size: int,
    device: torch.device | str,
    max_windows: int | None = None,
    bf16: bool = False,
    token_bytes: np.ndarray | None = None,
) -> PerplexityResult:
    """CE of ``windows[:, 1:]`` given ``windows[:, :-1]``, averaged over every target token.

    ``windows`` is (n, seq_len + 1) token ids; the first ``max_windows`` are used, in order, in
    batches of ``batch_size``. Each batch's summed loss is accumulated in float64 and divided once
    by the token count, so the mean is exact across batches. The model runs in eval mode under
    ``torch.no_grad`` (in bfloat16 autocast when ``bf16``) and gets its train/eval mode back after.
    ``token_bytes`` (the source bytes of each id, ``token_byte_lengths``) adds bits per byte: the
    summed loss / ln 2 / the targets' bytes.
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
    if token_bytes is not None and token_bytes.shape != (model.cfg.vocab_size,):
        raise ValueError(
            f"token_bytes must give one length per id of the model's vocabulary ({model.cfg.vocab_size},), "
            f"got shape {token_bytes.shape}"
        )

    device = torch.device(device)
    was_training = model.training
    model.eval()
    total, tokens, n_bytes = 0.0, 0, 0
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(windows), batch_size):
                rows = windows[start : start + batch_size].astype(np.int64)
                if token_bytes is not None:
                    n_bytes += int(token_bytes[rows[:, 1:]].sum())
                batch = torch.from_numpy(rows).to(device)
                x, y = batch[:, :-1], batch[:, 1:]
                total += model(x, y, reduction="sum").double().item()
                tokens += y.numel()
    finally:
        model.train(was_training)
    loss = total / tokens
    if token_bytes is None:
        return PerplexityResult(loss=loss, ppl=math.exp(loss), tokens=tokens)
    if n_bytes == 0:
        raise ValueError("the scored tokens stand for no source bytes (only special ids): no bits per byte")
    bpb = total / math.log(2) / n_bytes
    return PerplexityResult(loss=loss, ppl=math.exp(loss), tokens=tokens, bytes=n_bytes, bits_per_byte=bpb)


def token_byte_lengths(tok: Tokenizer, size: int) -> np.ndarray:
    """The UTF-8 bytes of source text each id of ``[0, size)`` stands for: 0 for a special id or an id past
    the tokenizer's vocabulary, else its token's length, since the ByteLevel alphabet writes each byte as
    one character. Summed over scored tokens, it gives the bytes a loss in bits per byte divides by."""
    if size < tok.get_vocab_size():
        raise ValueError(f"size {size} is below the tokenizer's vocabulary of {tok.get_vocab_size()} ids")
    lengths = np.zeros(size, dtype=np.int64)
    for i in range(N_SPECIAL, tok.get_vocab_size()):
        lengths[i] = len(tok.id_to_token(i))
    return lengths


def val_windows(data_dir: Path, tokenizer: Path) -> Windows:
    """The val split of ``data_dir``, refused unless its shards were made with ``tokenizer`` (a checkpoint's).

    A data folder rebuilt from other sources with the same vocabulary size and context would give a
    different val_loss for the same model, silently; the tokenizer's hash tells.
    """
    check_same_tokenizer(data_dir, tokenizer)
    return load_windows(data_dir, "val")
