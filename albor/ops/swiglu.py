"""SwiGLU activation reference: silu(gate) · up."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from albor.falsify import faults


class _GateGradMissingUp(torch.autograd.Function):
    """Re-creates ALB-043: the gate gradient is silu'(gate)·dy, missing its ×up factor."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (gate,) = ctx.saved_tensors
        sig = torch.sigmoid(gate)
        dsilu = sig * (1 + gate * (1 - sig))
        return dsilu * dy, F.silu(gate) * dy


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The gated FFN activation: silu(gate) · up, elementwise."""
    if faults.active("swiglu_gate_grad_missing_up"):
        return _GateGradMissingUp.apply(gate, up)
    return F.silu(gate) * up
