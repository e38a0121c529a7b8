"""Reading a device scalar on the host (the trainer's grad norm, loss): after the kernels that write it."""

from __future__ import annotations

import torch


def read_scalar(t: torch.Tensor) -> float:
    """The value of the one-element tensor ``t`` as a Python float, once every queued write to it is done.

    ``Tensor.item()`` copies on the current stream and waits for it. A non-blocking copy into pinned
    memory read without a synchronise returns whatever the buffer held before (ALB-065).
    """
    if t.numel() != 1:
        raise ValueError(f"read_scalar needs a one-element tensor, got shape {tuple(t.shape)}")
    return float(t.item())
