"""RoPE in Triton, rotate-half convention: q and k rotated in one launch, a few tokens per program.

Same contract as ``albor.ops.rope.apply_rope``. The backward is the inverse rotation (sin negated).
Inputs may be strided views (the model passes slices of its fused q/k/v projection).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from albor.kernels import buffers
from albor.kernels.launch import check_device, compute_dtype, kernel_device


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, qo_ptr, ko_ptr, cos_ptr, sin_ptr,
    n_tokens, seq_len, n_q, n_k, half,
    q_sb, q_st, q_sh, k_sb, k_st, k_sh,
    qo_sb, qo_st, qo_sh, ko_sb, ko_st, ko_sh,
    cos_st, sin_st,
    BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, CD: tl.constexpr, INVERSE: tl.constexpr,
):  # fmt: skip
    """BLOCK_T tokens; each token's q heads and then its k heads are rows of one tile."""
    r = tl.arange(0, BLOCK_T * BLOCK_H)[:, None]
    token = tl.program_id(0).to(tl.int64) * BLOCK_T + r // BLOCK_H
    h = r % BLOCK_H
    b = token // seq_len
    t = token % seq_len
    d = tl.arange(0, BLOCK_D)[None, :]
    is_q = h < n_q
    mask = (token < n_tokens) & (h < n_q + n_k) & (d < half)
    c = tl.load(cos_ptr + t * cos_st + d, mask=mask, other=0.0).to(CD)
    s = tl.load(sin_ptr + t * sin_st + d, mask=mask, other=0.0).to(CD)
    if INVERSE:
        s = -s
    x_at = tl.where(is_q, q_ptr + b * q_sb + t * q_st + h * q_sh, k_ptr + b * k_sb + t * k_st + (h - n_q) * k_sh) + d
    o_at = tl.where(
        is_q, qo_ptr + b * qo_sb + t * qo_st + h * qo_sh, ko_ptr + b * ko_sb + t * ko_st + (h - n_q) * ko_sh
    )
    o_at += d
    x1 = tl.load(x_at, mask=mask, other=0.0).to(CD)
    x2 = tl.load(x_at + half, mask=mask, other=0.0).to(CD)
    tl.store(o_at, (x1 * c - x2 * s).to(qo_ptr.dtype.element_ty), mask=mask)
    tl.store(o_at + half, (x2 * c + x1 * s).to(qo_ptr.dtype.element_ty), mask=mask)


DEVICE = kernel_device(_rope_kernel)


def _unit_last(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


# A custom op, so that torch.compile calls the kernel as an opaque node instead of breaking the graph.
@torch.library.custom_op("albor::rope", mutates_args=())
def _rope_op(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k = _unit_last(q), _unit_last(k)
    b, t, n_q, hd = q.shape
    n_k = k.shape[2]
    qo = buffers.empty(tuple(q.shape), q.dtype, q.device)
    ko = buffers.empty(tuple(k.shape), k.dtype, k.device)
    block_h, block_d = triton.next_power_of_2(n_q + n_k), triton.next_power_of_2(hd // 2)
    block_t = max(1, min(16, 4096 // (block_h * block_d)))
    _rope_kernel[(triton.cdiv(b * t, block_t),)](
        q, k, qo, ko, cos, sin, b * t, t, n_q, n_k, hd // 2,
        *q.stride()[:3], *k.stride()[:3], *qo.stride()[:3], *ko.stride()[:3], cos.stride(0), sin.stride(0),
        BLOCK_T=block_t, BLOCK_H=block_h, BLOCK_D=block_d, CD=compute_dtype(q.dtype), INVERSE=inverse,
        num_warps=min(max(block_t * block_h * block_d // 512, 1), 8),
    )  # fmt: skip
    return qo, ko


@_rope_op.register_fake
def _(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    return q.new_empty(q.shape), k.new_empty(k.shape)


def _setup(ctx, inputs: tuple, output: tuple) -> None:
    _, _, cos, sin, ctx.inverse = inputs
    ctx.save_for_backward(cos, sin)


def _grads(ctx, dq: torch.Tensor, dk: torch.Tensor) -> tuple:
    cos, sin = ctx.saved_tensors
    return (*_rope_op(dq, dk, cos, sin, not ctx.inverse), None, None, None)


_rope_op.register_autograd(_grads, setup_context=_setup)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries (B, T, H, D) and keys (B, T, Hkv, D) by the tables from ``rope_tables``."""
    if q.ndim != 4 or k.ndim != 4 or q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} must be (B, T, H, D) with equal B, T and D")
    if q.shape[-1] % 2:
        raise ValueError(f"head_dim must be even for RoPE, got {q.shape[-1]}")
    table = (q.shape[1], q.shape[-1] // 2)
    if cos.shape != table or sin.shape != table:
        raise ValueError(f"cos {tuple(cos.shape)} and sin {tuple(sin.shape)} must be (T, D/2) = {table}")
    if q.dtype != k.dtype:
        raise ValueError(f"q ({q.dtype}) and k ({k.dtype}) must share a dtype")
    check_device("rope", DEVICE, q, k, cos, sin)
    return _rope_op(q, k, _unit_last(cos), _unit_last(sin), False)
