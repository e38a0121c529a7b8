"""Fused linear + cross entropy: the [tokens × vocab] logits are never materialised in full.

The tokens go through in chunks. For each chunk the logits come from one matmul into a reused buffer,
a Triton kernel turns each row into its loss and overwrites the row with d(loss)/d(logits), and two
more matmuls add that chunk's share to the hidden and head gradients. The loss is last in the graph,
so its gradients are computed in the forward and only scaled by the incoming gradient in the
backward. Same contract as ``albor.ops.cross_entropy.linear_cross_entropy``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from albor.kernels import buffers
from albor.kernels.launch import accumulator_dtype, check_device, compute_dtype, kernel_device
from albor.ops.cross_entropy import IGNORE_INDEX, Reduction


@triton.jit
def _ce_rows_kernel(
    z_ptr, targets_ptr, loss_ptr, scale_ptr, z_stride, n_rows, n_cols, ignore_index,
    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, CD: tl.constexpr, WRITE_GRAD: tl.constexpr,
):  # fmt: skip
    """Loss of BLOCK_M rows of logits; with WRITE_GRAD, each row becomes (softmax - onehot) · scale."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    live = rows < n_rows
    z_rows = z_ptr + rows[:, None] * z_stride
    target = tl.load(targets_ptr + rows, mask=live, other=ignore_index)
    ignored = target == ignore_index
    in_range = (target >= 0) & (target < n_cols)
    z_target = tl.load(z_ptr + rows * z_stride + target, mask=live & in_range, other=0.0).to(CD)
    cols = tl.arange(0, BLOCK_V)[None, :]
    z = tl.load(z_rows + cols, mask=live[:, None] & (cols < n_cols), other=float("-inf")).to(CD)
    z = tl.where(live[:, None], z, 0.0)  # rows past the end stay finite: no NaN from -inf - -inf
    m = tl.max(z, axis=1)
    s = tl.sum(tl.exp(z - m[:, None]), axis=1)
    for start in range(BLOCK_V, n_cols, BLOCK_V):
        at = start + cols
        z = tl.load(z_rows + at, mask=live[:, None] & (at < n_cols), other=float("-inf")).to(CD)
        m_new = tl.maximum(m, tl.max(z, axis=1))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new[:, None]), axis=1)
        m = m_new
    lse = m + tl.log(s)
    # A target that is neither ignored nor a vocabulary id poisons its row instead of passing unseen.
    loss = tl.where(ignored, 0.0, tl.where(in_range, lse - z_target, float("nan")))
    tl.store(loss_ptr + rows, loss, mask=live)
    if WRITE_GRAD:
        scale = tl.where(ignored, 0.0, tl.load(scale_ptr).to(CD))[:, None]
        for start in range(0, n_cols, BLOCK_V):
            at = start + cols
            mask = live[:, None] & (at < n_cols)
            p = tl.exp(tl.load(z_rows + at, mask=mask, other=0.0).to(CD) - lse[:, None])
            grad = tl.where(at == target[:, None], p - 1.0, p) * scale
            tl.store(z_rows + at, grad.to(z_ptr.dtype.element_ty), mask=mask)


DEVICE = kernel_device(_ce_rows_kernel)


def tile(v: int) -> tuple[int, int]:
    """Rows and vocabulary columns of one program's tile: up to 4096 elements."""
    block_v = min(4096, triton.next_power_of_2(v))
    return max(1, min(16, 4096 // block_v)), block_v


def chunk_rows(n: int, d: int, v: int) -> int:
    """Tokens per chunk: the chunk's logits hold about four times as many elements as the hidden states."""
    return max(1, triton.cdiv(n, triton.cdiv(v, 4 * d)))


# A custom op, so that torch.compile calls it as an opaque node instead of breaking the graph.
# The outputs are the loss and, where asked for, its gradients (empty otherwise).
@torch.library.custom_op("albor::linear_cross_entropy", mutates_args=())
def _lce(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int, mean: bool,
    grad_h: bool, grad_w: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    n, d = hidden.shape
    v = weight.shape[0]
    acc = accumulator_dtype(hidden.dtype)
    valid = (targets != ignore_index).sum().to(acc)
    # The per-row gradient scale lives on the device, so "mean" needs no host sync.
    scale = 1.0 / valid if mean else torch.ones((), dtype=acc, device=hidden.device)
    rows = chunk_rows(n, d, v)
    block_m, block_v = tile(v)
    logits = buffers.empty((min(rows, n), v), hidden.dtype, hidden.device)
    losses = buffers.empty((n,), acc, hidden.device)
    dh = buffers.empty((n, d), hidden.dtype, hidden.device) if grad_h else hidden.new_empty(0)
    dw = torch.zeros_like(weight) if grad_w else weight.new_empty(0)
    for start in range(0, n, rows):
        h = hidden[start : start + rows]
        z = logits[: h.shape[0]]
        torch.mm(h, weight.t(), out=z)
        _ce_rows_kernel[(triton.cdiv(h.shape[0], block_m),)](
            z, targets[start:], losses[start:], scale, z.stride(0), h.shape[0], v, ignore_index,
            BLOCK_M=block_m, BLOCK_V=block_v, CD=compute_dtype(hidden.dtype),
            WRITE_GRAD=grad_h or grad_w, num_warps=8,
        )  # fmt: skip
        if grad_h:
            torch.mm(z, weight, out=dh[start : start + rows])
        if grad_w:
            dw.addmm_(z.t(), h)
    total = losses.sum()
    return (total / valid if mean else total), dh, dw


@_lce.register_fake
def _(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int, mean: bool,
    grad_h: bool, grad_w: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    loss = hidden.new_empty((), dtype=accumulator_dtype(hidden.dtype))
    return (
        loss,
        torch.empty_like(hidden) if grad_h else hidden.new_empty(0),
        torch.empty_like(weight) if grad_w else weight.new_empty(0),
    )


def _setup(ctx, inputs: tuple, output: tuple) -> None:
    ctx.grad_h, ctx.grad_w = inputs[5:]
    ctx.save_for_backward(*output[1:])


def _grads(ctx, grad: torch.Tensor, _dh: torch.Tensor, _dw: torch.Tensor) -> tuple:
    dh, dw = ctx.saved_tensors
    return (
        dh * grad.to(dh.dtype) if ctx.grad_h else None,
        dw * grad.to(dw.dtype) if ctx.grad_w else None,
        None, None, None, None, None,
    )  # fmt: skip


_lce.register_autograd(_grads, setup_context=_setup)


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """CE of the logits hidden (N, d) @ weight (V, d)ᵀ, without building them whole."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden {tuple(hidden.shape)} must be (N, d) and weight {tuple(weight.shape)} (V, d)")
    if targets.shape != (hidden.shape[0],):
        raise ValueError(f"targets {tuple(targets.shape)} must be ({hidden.shape[0]},)")
    check_device("linear_cross_entropy", DEVICE, hidden, weight, targets)
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        # The reference's matmul runs in the autocast dtype; match it, then leave autocast off inside.
        dtype = torch.get_autocast_dtype(device_type)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    hidden, weight, targets = hidden.contiguous(), weight.contiguous(), targets.contiguous()
    grad = torch.is_grad_enabled()
    with torch.autocast(device_type, enabled=False):
        return _lce(
            hidden, weight, targets, ignore_index, reduction == "mean",
            grad and hidden.requires_grad, grad and weight.requires_grad,
        )[0]  # fmt: skip
