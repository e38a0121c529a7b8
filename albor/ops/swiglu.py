"""SwiGLU activation reference: silu(gate) · up."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The gated FFN activation: silu(gate) · up, elementwise."""
    return F.silu(gate) * up
