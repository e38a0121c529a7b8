"""Property tests for the Triton RoPE kernel against the reference op, over random shapes (float64).

Without CUDA the kernel runs in Triton's interpreter on the CPU.
"""

from __future__ import annotations

import os

import pytest
import torch

from falsification.settings import TRITON_MISSING

pytest.importorskip("triton", reason=TRITON_MISSING)
from hypothesis import given, settings
from hypothesis import strategies as st

if not torch.cuda.is_available():  # before triton is first imported: kernels run in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from albor.kernels import buffers
from albor.kernels.rope import apply_rope
from albor.ops.rope import apply_rope as reference
from albor.ops.rope import rope_tables
from albor.testing import rel_err

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FEW = settings(max_examples=max(5, settings.default.max_examples // 5))  # the interpreter is slow


def _run(fn, q: torch.Tensor, k: torch.Tensor, cos, sin, dq, dk):
    q, k = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    rq, rk = fn(q, k, cos, sin)
    torch.autograd.backward((rq, rk), (dq, dk))
    return rq.detach(), rk.detach(), q.grad, k.grad


@FEW
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 2),
    st.integers(1, 9),
    st.integers(1, 6),
    st.integers(1, 3),
    st.integers(1, 12).map(lambda h: 2 * h),
    st.integers(0, 5000),
)
def test_matches_reference_in_float64(seed: int, b: int, t: int, h: int, hkv: int, hd: int, start: int) -> None:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(DEVICE)

    cos, sin = rope_tables(torch.arange(start, start + t, device=DEVICE), hd, dtype=torch.float64)
    args = (r(b, t, h, hd), r(b, t, hkv, hd), cos, sin, r(b, t, h, hd), r(b, t, hkv, hd))
    with buffers.poisoned():
        got = _run(apply_rope, *args)
    for a, want in zip(got, _run(reference, *args), strict=True):
        assert rel_err(a, want) <= 1e-12


def test_float32_tables_with_bfloat16_heads() -> None:
    q, k = torch.randn(1, 3, 2, 8, device=DEVICE).bfloat16(), torch.randn(1, 3, 1, 8, device=DEVICE).bfloat16()
    cos, sin = rope_tables(torch.arange(3, device=DEVICE), 8)
    for a, b in zip(apply_rope(q, k, cos, sin), reference(q, k, cos, sin), strict=True):
        assert a.dtype == torch.bfloat16 and rel_err(a, b) <= 1e-2


@pytest.mark.parametrize(
    ("q", "k", "tables", "match"),
    [
        ((1, 3, 2, 8), (1, 3, 1, 8), (3, 3), "cos"),
        ((1, 3, 2, 7), (1, 3, 1, 7), (3, 3), "even"),
        ((1, 3, 2, 8), (1, 4, 1, 8), (3, 4), "equal B, T"),
    ],
)
def test_bad_shapes_are_refused(q, k, tables, match: str) -> None:
    cos = torch.ones(tables, device=DEVICE)
    with pytest.raises(ValueError, match=match):
        apply_rope(torch.ones(q, device=DEVICE), torch.ones(k, device=DEVICE), cos, cos)
