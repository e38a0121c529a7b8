"""Recomputation of a block's elementwise results in the backward, instead of keeping them for it.

A region run through ``recomputed`` keeps, for the backward, its inputs and the outputs of its
matrix products, and recomputes every other result (RMSNorm, SwiGLU, residual adds, the weights'
bf16 casts) from them when the backward needs it: selective activation checkpointing
(``torch.utils.checkpoint``) with a policy that saves the matmuls, as torchtitan's op-level policy
does. Recomputing a matmul would cost a GEMM; recomputing the elementwise ops costs memory traffic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

Recompute = Literal["rmsnorm", "swiglu"]

_aten = torch.ops.aten
MATMULS = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default})


def _keep_matmuls(_ctx: object, op: object, *_args: object, **_kwargs: object) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in MATMULS else CheckpointPolicy.PREFER_RECOMPUTE


_contexts = functools.partial(create_selective_checkpoint_contexts, _keep_matmuls)


def recomputed(
    fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], *args: torch.Tensor
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """``fn(*args)``, whose results other than matmuls the backward recomputes rather than keeps."""
    # Non-reentrant: the only kind that takes a policy, and the one that works under torch.compile. The
    # RNG state is kept (the default) so that a LoRA adapter's dropout draws the same mask when recomputed.
    return checkpoint(fn, *args, use_reentrant=False, context_fn=_contexts)
