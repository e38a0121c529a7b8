"""The fault registry and the switches that turn faults on.

A fault re-creates one gap's bug inside the real code path. Faults are off unless a test (or the
mutant runner, through the ``ALBOR_FAULTS`` environment variable) turns them on. Code checks a fault
with ``active(name)``, which is a set lookup on a set that is empty in production.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

ENV_VAR = "ALBOR_FAULTS"


@dataclass(frozen=True)
class Fault:
    """A named bug that can be switched on: ``gap`` is the register entry it re-creates."""

    name: str
    gap: str
    summary: str


# One entry per fault. Components add theirs here; the gap register names them.
FAULTS: dict[str, Fault] = {
    f.name: f
    for f in [
        Fault("rmsnorm_no_backward", "ALB-038", "RMSNorm output computed from a detached input"),
        Fault("rmsnorm_no_gain_grad", "ALB-092", "RMSNorm gain detached, so its gradient is never written"),
        Fault("swiglu_gate_grad_missing_up", "ALB-043", "SwiGLU gate gradient lacks its ×up factor"),
        Fault("rope_disabled", "ALB-106", "RoPE returns q and k unrotated"),
        Fault("rope_no_backward", "ALB-119", "RoPE rotation applied outside autograd; backward is identity"),
        Fault("rmsnorm_kernel_no_gain_grad", "ALB-092", "the RMSNorm kernel's backward returns no gain gradient"),
        Fault("rmsnorm_kernel_scratch_short", "ALB-041", "the RMSNorm kernel's gain scratch is one row short"),
        Fault("rmsnorm_kernel_half_grad", "ALB-201", "the RMSNorm kernel's backward rounds dy·g through float16"),
        Fault("rope_kernel_no_backward", "ALB-119", "the RoPE kernel's backward is the identity"),
        Fault("swiglu_kernel_gate_grad_missing_up", "ALB-043", "the SwiGLU kernel's gate gradient lacks ×up"),
        Fault("swiglu_kernel_unmasked_store", "ALB-059", "the SwiGLU kernel stores its tail block unmasked"),
        Fault("read_scalar_no_sync", "ALB-065", "a scalar read through a non-blocking copy, unsynchronised"),
        Fault("kernel_fallback_silent", "ALB-073", "a kernel that fails its check is replaced silently"),
        Fault("kernel_fallback_unrecorded", "ALB-122", "an allowed kernel fallback is not recorded"),
        Fault("cosine_ignored", "ALB-079", "the LR stays at its peak after warmup"),
        Fault("grad_accum_not_written", "ALB-092", "each micro-batch overwrites the previous gradients"),
        Fault("optimizer_ignores_hparams", "ALB-044", "AdamW built with library defaults, not the config"),
        Fault("clip_norm_fourth_power", "ALB-124", "clipping compares the 4th power of the norm"),
        Fault("clip_per_block", "ALB-125", "each parameter clipped on its own norm"),
        Fault("ffn_residual_no_grad", "ALB-126", "the FFN residual branch passes no gradient"),
        Fault("attn_residual_through_norm", "ALB-127", "the first residual's gradient goes through RMSNorm"),
        Fault("optimizer_state_not_saved", "ALB-118", "checkpoints hold an empty optimizer state"),
        Fault("tied_head_not_saved", "ALB-097", "the tied head/embedding is saved at its initial values"),
        Fault("checkpoint_drops_cursor", "ALB-120", "the checkpoint stores a fresh data cursor"),
        Fault("resume_resets_step", "ALB-092", "resume restarts the step counter at 0"),
        Fault("resume_resaves", "ALB-132", "resume writes the resume step's checkpoint again"),
        Fault("schedule_data_unchecked", "ALB-129", "a schedule longer than the data is accepted"),
        Fault("resume_trusts_metrics_lines", "ALB-202", "resume parses every metrics line, a partial one too"),
        Fault("rope_tables_per_forward", "ALB-203", "the decoder rebuilds its RoPE tables in float64 in every forward"),
        Fault("kernel_breaks_graph", "ALB-204", "the RMSNorm kernel's launch breaks the compiled graph"),
        Fault("compiled_step_reused", "ALB-205", "a compiled run reuses a step compiled earlier in the process"),
        Fault("tokenizer_collapses_whitespace", "ALB-036", "the tokenizer normalizes runs of spaces and tabs to one"),
        Fault("cursor_position_not_restored", "ALB-120", "a restored data cursor starts again from step 0"),
        Fault("cursor_skips_epoch_at_boundary", "ALB-120", "the cursor jumps an epoch at each epoch boundary"),
        Fault("cursor_resume_repeats_batch", "ALB-100", "a restored data cursor yields its last batch again"),
        Fault("cursor_ranks_share_batches", "ALB-100", "every rank takes rank 0's slice of the global batch"),
        Fault("cursor_sequential_order", "ALB-121", "windows are visited in storage order, shard after shard"),
        Fault("humaneval_structural_fallback", "ALB-130", "failed inference is scored by parsing the prompt"),
        Fault("eval_tokenizer_from_data_dir", "ALB-131", "eval loads the data dir's tokenizer, not the checkpoint's"),
        Fault("generate_prompt_not_truncated", "ALB-074", "a prompt longer than the context reaches the model"),
    ]
}

_active: frozenset[str] = frozenset(n for n in os.environ.get(ENV_VAR, "").split(",") if n)


def _check(names: frozenset[str]) -> None:
    unknown = sorted(names - FAULTS.keys())
    if unknown:
        raise KeyError(f"unknown fault(s) {unknown}; registered: {sorted(FAULTS)}")


_check(_active)


def active(name: str) -> bool:
    """True when fault ``name`` is switched on."""
    return name in _active


def active_faults() -> frozenset[str]:
    """The faults switched on now."""
    return _active


@contextmanager
def injected(*names: str) -> Iterator[None]:
    """Switch faults on for the body of a ``with`` block (tests only)."""
    global _active
    new = frozenset(names)
    _check(new)
    before = _active
    _active = before | new
    try:
        yield
    finally:
        _active = before
