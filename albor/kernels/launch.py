"""Small helpers the kernels share: compute dtype, row views and program counts."""

from __future__ import annotations

import torch
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction


def compute_dtype(dtype: torch.dtype) -> tl.dtype:
    """float64 for float64 inputs, else float32: the same promotion as the reference ops."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """The torch dtype of ``compute_dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a 2-D (rows, last dim) tensor with unit stride along the last dim, a view when possible."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x.reshape(-1, x.shape[-1])


def n_programs(device: torch.device, per_sm: int) -> int:
    """How many persistent programs to launch: ``per_sm`` per SM on CUDA, a few under the interpreter."""
    if device.type == "cuda":
        return per_sm * torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def kernel_device(kernel: object) -> str:
    """Where ``kernel`` runs: on CPU tensors in the interpreter (TRITON_INTERPRET=1), else on CUDA tensors.

    Each kernel module asks once, at import: torch.compile cannot trace ``isinstance`` on a compiled
    Triton kernel and would break the graph around every launch (ALB-204).
    """
    return "cpu" if isinstance(kernel, InterpretedFunction) else "cuda"


def check_device(name: str, want: str, *tensors: torch.Tensor) -> None:
    """Raise before any launch unless every tensor is on ``want``, the device type the kernel runs on.

    A launch on any other tensor (a meta tensor, say) would hand the GPU pointers it cannot read.
    """
    for t in tensors:
        if t.device.type != want:
            mode = "in the Triton interpreter" if want == "cpu" else "compiled"
            raise ValueError(f"the {name} kernel runs on {want} tensors {mode}; got a {t.device.type} tensor")
