"""Property and edge tests for the fused linear + cross-entropy kernel against the reference op.

Without CUDA the row kernel runs in Triton's interpreter on the CPU.
"""

from __future__ import annotations

import math
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
from albor.kernels.cross_entropy import chunk_rows, linear_cross_entropy, tile
from albor.ops.cross_entropy import linear_cross_entropy as reference
from albor.testing import rel_err

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
FEW = settings(max_examples=max(5, settings.default.max_examples // 5))  # the interpreter is slow


def _case(seed: int, n: int, d: int, v: int, n_ignored: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, d, generator=g, dtype=torch.float64) * 2
    weight = torch.randn(v, d, generator=g, dtype=torch.float64)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[torch.randperm(n, generator=g)[:n_ignored]] = -100
    return hidden.to(DEVICE, dtype), weight.to(DEVICE, dtype), targets.to(DEVICE)


def _run(fn, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, reduction: str):
    h, w = hidden.clone().requires_grad_(True), weight.clone().requires_grad_(True)
    loss = fn(h, w, targets, reduction=reduction)
    loss.backward()
    return loss.detach(), h.grad, w.grad


@given(st.integers(1, 10**5), st.integers(1, 4096), st.integers(2, 200_000))
def test_chunk_logits_stay_near_four_hidden_sizes(n: int, d: int, v: int) -> None:
    rows = chunk_rows(n, d, v)
    assert 1 <= rows <= n and rows * v <= 4 * n * d + v


@FEW
@given(
    st.integers(0, 2**31 - 1),
    st.integers(1, 20),
    st.integers(1, 6),
    st.integers(2, 70),
    st.integers(0, 20),
    st.sampled_from(["mean", "sum"]),
)
def test_matches_reference_in_float64(seed: int, n: int, d: int, v: int, n_ignored: int, reduction: str) -> None:
    case = _case(seed, n, d, v, n_ignored=min(n_ignored, n - 1))
    with buffers.poisoned():
        got = _run(linear_cross_entropy, *case, reduction)
    for a, b in zip(got, _run(reference, *case, reduction), strict=True):
        assert rel_err(a, b) <= 1e-12


def test_vocabulary_over_several_blocks() -> None:
    # The online softmax over column blocks: the largest logit sits in the last, partial block.
    _, block_v = tile(10**6)
    hidden, weight, targets = _case(0, 3, 2, block_v + 37)
    weight[-5:] *= 40
    with buffers.poisoned():
        got = _run(linear_cross_entropy, hidden, weight, targets, "mean")
    for a, b in zip(got, _run(reference, hidden, weight, targets, "mean"), strict=True):
        assert rel_err(a, b) <= 1e-12


def test_out_of_range_target_poisons_the_loss() -> None:
    hidden, weight, targets = _case(1, 5, 3, 11)
    targets[2] = 11
    assert math.isnan(linear_cross_entropy(hidden, weight, targets).item())


def test_all_ignored_matches_reference() -> None:
    hidden, weight, targets = _case(2, 4, 3, 7, n_ignored=4)
    got, want = (
        _run(linear_cross_entropy, hidden, weight, targets, "mean"),
        _run(reference, hidden, weight, targets, "mean"),
    )
    assert math.isnan(got[0].item()) and math.isnan(want[0].item())
    assert got[1].abs().max().item() == 0 and got[2].abs().max().item() == 0
    assert linear_cross_entropy(hidden, weight, targets, reduction="sum").item() == 0


def test_forward_without_gradients() -> None:
    hidden, weight, targets = _case(3, 6, 3, 9)
    with torch.no_grad():
        loss = linear_cross_entropy(hidden, weight, targets)
    assert rel_err(loss, reference(hidden, weight, targets)) <= 1e-12


def test_autocast_matches_reference_under_autocast() -> None:
    hidden, weight, targets = _case(4, 9, 5, 13, dtype=torch.float32)
    with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
        got = _run(linear_cross_entropy, hidden, weight, targets, "mean")
        want = _run(reference, hidden, weight, targets, "mean")
    assert got[1].dtype == got[2].dtype == torch.float32, "gradients reach float32 leaves in their dtype"
    for a, b in zip(got, want, strict=True):
        assert rel_err(a, b) <= 2e-2


@pytest.mark.parametrize(
    ("shapes", "reduction", "match"),
    [(((4, 3), (7, 3), (4,)), "none", "reduction"), (((4, 3), (7, 2), (4,)), "mean", "hidden"),
     (((4, 3), (7, 3), (5,)), "mean", "targets")],
)  # fmt: skip
def test_bad_arguments_are_refused(shapes, reduction: str, match: str) -> None:
    h, w, t = shapes
    with pytest.raises(ValueError, match=match):
        linear_cross_entropy(torch.ones(h), torch.ones(w), torch.zeros(t, dtype=torch.long), reduction=reduction)
