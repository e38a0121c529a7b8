"""Albor's own quantised CPU path: weight-only int8 and int4 linears on ATen's packed CPU kernels.

- int8: one symmetric scale per output row, s = max|w| / 127, q = round(w / s) in [-127, 127]; the
  product is ``torch.ops.aten._weight_int8pack_mm``.
- int4: groups of ``group_size`` inputs per output row, asymmetric: s = (max - min) / 15,
  q = round((w - min) / s) in [0, 15], and the kernel's dequantisation (q - 8)·s + z with
  z = min + 8·s; the weight is packed by ``_convert_weight_to_int4pack_for_cpu`` and multiplied by
  ``_weight_int4pack_mm_for_cpu``. A row length that is not a multiple of the group is padded with
  zero weights (and the input with zeros), which adds nothing to the product; the rows are padded to a
  multiple of 16 with zero rows whose outputs are dropped.

Either way every weight is within half a step of its float value (the ``quantize`` contract checks
it against a float64 dequantisation). ``quantize_decoder`` swaps every linear of a decoder, the LM
head included, for its quantised twin; the token embedding stays float32 (decode reads one row of
it per token). A quantised decoder gives logits; its loss and perplexity are computed from them
(``albor.export.compare``), since the fused loss path multiplies by the head's float weight.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from albor.model import Decoder

Bits = Literal[4, 8]
GROUP_SIZES = (32, 64, 128, 256)
INT4_ROWS = 16  # the int4 packing takes whole tiles of 16 output rows
INNER_K_TILES = 2


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (N, K) int8 and one float32 scale per row (N,) of the float matrix ``w``."""
    w = w.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The float64 matrix the int8 codes stand for."""
    return q.to(torch.float64) * scale.to(torch.float64)[:, None]


def padded_k(k: int, group_size: int) -> int:
    return -(-k // group_size) * group_size


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes (N, K') int32 in [0, 15], and per-group scales and zeros (N, K'/group_size) in float32.

    K' is K padded up to a multiple of ``group_size`` with zero weights.
    """
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size must be one of {GROUP_SIZES}, got {group_size}")
    w = w.detach().to(torch.float32)
    n, k = w.shape
    w = F.pad(w, (0, padded_k(k, group_size) - k))
    groups = w.reshape(n, -1, group_size)
    lo, hi = groups.amin(dim=2), groups.amax(dim=2)
    scale = ((hi - lo) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round((groups - lo[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
    return q.reshape(n, -1), scale, lo + 8 * scale


def dequantize_int4(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    """The float64 matrix (N, K') the int4 codes stand for: (q - 8)·s + z per group."""
    n, k = q.shape
    groups = q.to(torch.float64).reshape(n, scale.shape[1], -1)
    dq = (groups - 8) * scale.to(torch.float64)[..., None] + zero.to(torch.float64)[..., None]
    return dq.reshape(n, k)


class Int8Linear(nn.Module):
    """``y = x Wᵀ`` with W held as int8 codes and one scale per output row."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        q, scale = quantize_int8(weight)
        self.out_features, self.in_features = weight.shape
        self.register_buffer("codes", q)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, self.in_features), self.codes, self.scale)
        return y.reshape(*x.shape[:-1], self.out_features)


class Int4Linear(nn.Module):
    """``y = x Wᵀ`` with W held as packed int4 codes and a scale and zero per group of inputs."""

    def __init__(self, weight: torch.Tensor, group_size: int) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        # The packing takes whole tiles of 16 rows: extra zero rows, whose outputs are dropped.
        rows = -(-self.out_features // INT4_ROWS) * INT4_ROWS
        q, scale, zero = quantize_int4(F.pad(weight.detach(), (0, 0, 0, rows - self.out_features)), group_size)
        self.group_size = group_size
        self.padded_in = q.shape[1]
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, INNER_K_TILES))
        # The kernel reads (K'/group, N, 2): scale and zero of each group, group-major.
        self.register_buffer("scale_and_zero", torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features)
        if self.padded_in != self.in_features:
            x2 = F.pad(x2, (0, self.padded_in - self.in_features))
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed, self.group_size, self.scale_and_zero)
        return y[:, : self.out_features].reshape(*x.shape[:-1], self.out_features)


def quantized_linear(linear: nn.Linear, bits: Bits, group_size: int) -> nn.Module:
    """The int8 or int4 twin of a bias-free linear."""
    if linear.bias is not None:
        raise ValueError("only bias-free linears are quantised")
    if bits == 8:
        return Int8Linear(linear.weight)
    if bits == 4:
        return Int4Linear(linear.weight, group_size)
    raise ValueError(f"bits must be 4 or 8, got {bits}")


def quantize_decoder(model: Decoder, bits: Bits, group_size: int = 32) -> Decoder:
    """Replace, in place, every linear of a float32 CPU decoder (blocks and untied head) by its quantised twin."""
    if next(model.parameters()).device.type != "cpu":
        raise ValueError("the quantised kernels run on the CPU only")
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, quantized_linear(linear, bits, group_size))
    return model.eval()
