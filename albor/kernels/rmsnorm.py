"""RMSNorm in Triton: tiles of whole rows forward; persistent programs backward with a gain-gradient scratch.

Same contract as ``albor.ops.rmsnorm.rmsnorm``: y = x / sqrt(mean(x²) + eps) · g, computed in at least
float32 and returned in the input's dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from albor.kernels import buffers
from albor.kernels.launch import accumulator_dtype, as_rows, check_device, compute_dtype, kernel_device, n_programs


@triton.jit
def _rmsnorm_fwd_kernel(
    x_ptr, w_ptr, y_ptr, rstd_ptr, x_stride, y_stride, n_rows, n_cols, eps,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, CD: tl.constexpr,
):  # fmt: skip
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
    x = tl.load(x_ptr + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(CD)
    w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(CD)[None, :]
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / n_cols + eps)
    y = x * rstd[:, None] * w
    tl.store(y_ptr + rows[:, None] * y_stride + cols[None, :], y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(rstd_ptr + rows, rstd, mask=rows < n_rows)


@triton.jit
def _rmsnorm_bwd_kernel(
    dy_ptr, x_ptr, w_ptr, rstd_ptr, dx_ptr, dw_part_ptr, dy_stride, x_stride, dx_stride,
    n_rows, n_cols, tiles_per_program,
    BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, CD: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_D)
    w = tl.load(w_ptr + cols, mask=cols < n_cols, other=0.0).to(CD)[None, :]
    dw = tl.zeros((BLOCK_M, BLOCK_D), dtype=CD)
    for i in range(0, tiles_per_program):
        rows = (pid * tiles_per_program + i) * BLOCK_M + tl.arange(0, BLOCK_M)
        mask = (rows < n_rows)[:, None] & (cols < n_cols)[None, :]
        x = tl.load(x_ptr + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(CD)
        dy = tl.load(dy_ptr + rows[:, None] * dy_stride + cols[None, :], mask=mask, other=0.0).to(CD)
        rstd = tl.load(rstd_ptr + rows, mask=rows < n_rows, other=0.0)[:, None]
        xhat = x * rstd
        dyw = dy * w
        dx = (dyw - xhat * (tl.sum(dyw * xhat, axis=1) / n_cols)[:, None]) * rstd
        tl.store(dx_ptr + rows[:, None] * dx_stride + cols[None, :], dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += dy * xhat
    tl.store(dw_part_ptr + pid * n_cols + cols, tl.sum(dw, axis=0), mask=cols < n_cols)


DEVICE = kernel_device(_rmsnorm_fwd_kernel)


def tile(n_cols: int) -> tuple[int, int]:
    """Rows and columns of one program's tile: the whole row, and up to 4096 elements in all."""
    block_d = triton.next_power_of_2(n_cols)
    return max(1, min(16, 4096 // block_d)), block_d


def _warps(block_m: int, block_d: int) -> int:
    return min(max(block_m * block_d // 512, 1), 16)


# Registered as custom ops so that torch.compile calls the kernels as opaque nodes of one graph
# instead of breaking the graph around every launch.
@torch.library.custom_op("albor::rmsnorm_forward", mutates_args=())
def _rmsnorm_forward(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x2 = as_rows(x)
    n_rows, n_cols = x2.shape
    block_m, block_d = tile(n_cols)
    y = buffers.empty((n_rows, n_cols), x.dtype, x.device)
    rstd = buffers.empty((n_rows,), accumulator_dtype(x.dtype), x.device)
    _rmsnorm_fwd_kernel[(triton.cdiv(n_rows, block_m),)](
        x2, weight, y, rstd, x2.stride(0), y.stride(0), n_rows, n_cols, eps,
        BLOCK_M=block_m, BLOCK_D=block_d, CD=compute_dtype(x.dtype), num_warps=_warps(block_m, block_d),
    )  # fmt: skip
    return y.view(x.shape), rstd


@_rmsnorm_forward.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape), x.new_empty((x.numel() // x.shape[-1],), dtype=accumulator_dtype(x.dtype))


@torch.library.custom_op("albor::rmsnorm_backward", mutates_args=())
def _rmsnorm_backward(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    x2, dy2 = as_rows(x), as_rows(dy)
    n_rows, n_cols = x2.shape
    block_m, block_d = tile(n_cols)
    tiles = triton.cdiv(n_rows, block_m)
    tiles_per_program = triton.cdiv(tiles, min(tiles, n_programs(x2.device, per_sm=8)))
    programs = triton.cdiv(tiles, tiles_per_program)
    dx = buffers.empty((n_rows, n_cols), x2.dtype, x2.device)
    dw_part = buffers.empty((programs, n_cols), accumulator_dtype(x2.dtype), x2.device)
    _rmsnorm_bwd_kernel[(programs,)](
        dy2, x2, weight, rstd, dx, dw_part, dy2.stride(0), x2.stride(0), dx.stride(0),
        n_rows, n_cols, tiles_per_program,
        BLOCK_M=block_m, BLOCK_D=block_d, CD=compute_dtype(x2.dtype),
        num_warps=_warps(block_m, block_d),
    )  # fmt: skip
    return dx.view(x.shape), dw_part.sum(0).to(weight.dtype)


@_rmsnorm_backward.register_fake
def _(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.new_empty(x.shape), torch.empty_like(weight)


def _setup(ctx, inputs: tuple, output: tuple) -> None:
    x, weight, _ = inputs
    ctx.save_for_backward(x, weight, output[1])


def _grads(ctx, dy: torch.Tensor, _drstd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, None]:
    x, weight, rstd = ctx.saved_tensors
    dx, dw = _rmsnorm_backward(dy, x, weight, rstd)
    return dx, dw, None


_rmsnorm_forward.register_autograd(_grads, setup_context=_setup)


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Normalise the last dimension of ``x`` to unit RMS and scale by the gain ``weight``."""
    if weight.shape != (x.shape[-1],):
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected ({x.shape[-1]},)")
    check_device("rmsnorm", DEVICE, x, weight)
    return _rmsnorm_forward(x, weight.contiguous(), eps)[0]
