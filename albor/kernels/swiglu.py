"""SwiGLU in Triton: silu(gate) · up forward and both input gradients backward, computed in at least float32.

Same contract as ``albor.ops.swiglu.swiglu``. Gate and up may be strided row views (the model passes
the two halves of its fused gate/up projection).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from albor.kernels import buffers
from albor.kernels.launch import as_rows, check_device, compute_dtype, kernel_device

BLOCK = 1024  # columns of one tile at most


@triton.jit
def _swiglu_fwd_kernel(
    g_ptr, u_ptr, y_ptr, g_stride, u_stride, y_stride, n_rows, n_cols,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CD: tl.constexpr,
):  # fmt: skip
    rows = (tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M))[:, None]
    cols = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N))[None, :]
    mask = (rows < n_rows) & (cols < n_cols)
    g = tl.load(g_ptr + rows * g_stride + cols, mask=mask, other=0.0).to(CD)
    u = tl.load(u_ptr + rows * u_stride + cols, mask=mask, other=0.0).to(CD)
    y = (g / (1.0 + tl.exp(-g)) * u).to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + rows * y_stride + cols, y, mask=mask)


@triton.jit
def _swiglu_bwd_kernel(
    dy_ptr, g_ptr, u_ptr, dg_ptr, du_ptr, dy_stride, g_stride, u_stride, d_stride, n_rows, n_cols,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CD: tl.constexpr,
):  # fmt: skip
    rows = (tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M))[:, None]
    cols = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N))[None, :]
    mask = (rows < n_rows) & (cols < n_cols)
    dy = tl.load(dy_ptr + rows * dy_stride + cols, mask=mask, other=0.0).to(CD)
    g = tl.load(g_ptr + rows * g_stride + cols, mask=mask, other=0.0).to(CD)
    u = tl.load(u_ptr + rows * u_stride + cols, mask=mask, other=0.0).to(CD)
    sig = 1.0 / (1.0 + tl.exp(-g))
    dsilu = sig * (1.0 + g * (1.0 - sig))
    dg = dy * dsilu * u
    tl.store(dg_ptr + rows * d_stride + cols, dg.to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(du_ptr + rows * d_stride + cols, (dy * g * sig).to(du_ptr.dtype.element_ty), mask=mask)


DEVICE = kernel_device(_swiglu_fwd_kernel)


def tile(n_cols: int) -> tuple[int, int]:
    """Rows and columns of one program's tile: up to BLOCK columns and 4096 elements."""
    block_n = min(BLOCK, triton.next_power_of_2(n_cols))
    return max(1, min(16, 4096 // block_n)), block_n


def _grid(n_rows: int, n_cols: int) -> tuple[int, int]:
    block_m, block_n = tile(n_cols)
    return triton.cdiv(n_rows, block_m), triton.cdiv(n_cols, block_n)


# Registered as custom ops so that torch.compile calls the kernels as opaque nodes of one graph
# instead of breaking the graph around every launch.
@torch.library.custom_op("albor::swiglu_forward", mutates_args=())
def _swiglu_forward(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    g2, u2 = as_rows(gate), as_rows(up)
    n_rows, n_cols = g2.shape
    y = buffers.empty((n_rows, n_cols), gate.dtype, gate.device)
    block_m, block_n = tile(n_cols)
    _swiglu_fwd_kernel[_grid(n_rows, n_cols)](
        g2, u2, y, g2.stride(0), u2.stride(0), y.stride(0), n_rows, n_cols,
        BLOCK_M=block_m, BLOCK_N=block_n, CD=compute_dtype(gate.dtype),
        num_warps=4,
    )  # fmt: skip
    return y.view(gate.shape)


@_swiglu_forward.register_fake
def _(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return gate.new_empty(gate.shape)


@torch.library.custom_op("albor::swiglu_backward", mutates_args=())
def _swiglu_backward(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    g2, u2, dy2 = as_rows(gate), as_rows(up), as_rows(dy)
    n_rows, n_cols = g2.shape
    dg = buffers.empty((n_rows, n_cols), g2.dtype, g2.device)
    du = buffers.empty((n_rows, n_cols), u2.dtype, u2.device)
    block_m, block_n = tile(n_cols)
    _swiglu_bwd_kernel[_grid(n_rows, n_cols)](
        dy2, g2, u2, dg, du, dy2.stride(0), g2.stride(0), u2.stride(0), dg.stride(0), n_rows, n_cols,
        BLOCK_M=block_m, BLOCK_N=block_n, CD=compute_dtype(g2.dtype),
        num_warps=8,
    )  # fmt: skip
    return dg.view(gate.shape), du.view(gate.shape)


@_swiglu_backward.register_fake
def _(dy: torch.Tensor, gate: torch.Tensor, up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return gate.new_empty(gate.shape), up.new_empty(up.shape)


def _setup(ctx, inputs: tuple, output: torch.Tensor) -> None:
    ctx.save_for_backward(*inputs)


def _grads(ctx, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return _swiglu_backward(dy, *ctx.saved_tensors)


_swiglu_forward.register_autograd(_grads, setup_context=_setup)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """The gated FFN activation: silu(gate) · up, elementwise."""
    if gate.shape != up.shape or gate.dtype != up.dtype:
        raise ValueError(f"gate {tuple(gate.shape)} {gate.dtype} and up {tuple(up.shape)} {up.dtype} must match")
    check_device("swiglu", DEVICE, gate, up)
    return _swiglu_forward(gate, up)
