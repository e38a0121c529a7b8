"""Falsifiers for the ``dispatch`` contract (contracts/dispatch.yaml): no kernel ever fails in silence.

A kernel is made unusable by asking for it on the ``meta`` device, where no Triton kernel can launch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import pytest
import torch

if not torch.cuda.is_available():  # before triton is first imported: kernels run in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from albor.ops import dispatch

KERNEL_OPS = ["rmsnorm", "apply_rope", "swiglu", "linear_cross_entropy"]


@pytest.fixture(autouse=True)
def _reference_after() -> Iterator[None]:
    yield
    for op in dispatch.OPS:
        dispatch.set_backend(op, "reference")


@pytest.mark.claim("DISPATCH-001")
@pytest.mark.parametrize("op", [*KERNEL_OPS, "attention"])
def test_unusable_kernel_stops_the_run(op: str) -> None:
    device = "meta" if op != "attention" else None  # attention has no Triton kernel at all
    with pytest.raises(dispatch.KernelUnavailable, match=op):
        dispatch.set_backend(op, "triton", device=device)
    assert dispatch.backend(op) == "reference", "a refused kernel must leave the op where it was"
    assert op not in dispatch.fallbacks()


@pytest.mark.claim("DISPATCH-002")
@pytest.mark.parametrize("op", KERNEL_OPS)
def test_allowed_fallback_is_recorded(op: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        used = dispatch.set_backend(op, "triton", allow_fallback=True, device="meta")
    assert used == "reference" and dispatch.backend(op) == "reference"
    assert dispatch.get(op) is dispatch._load(op, "reference")
    assert dispatch.fallbacks()[op].startswith("triton: "), "the fallback and its cause go in the run's metadata"
    assert any(op in str(w.message) for w in caught), "the fallback must be announced"


@pytest.mark.claim("DISPATCH-003")
@pytest.mark.parametrize("op", KERNEL_OPS)
def test_working_kernel_is_routed(device: torch.device, op: str) -> None:
    assert dispatch.set_backend(op, "triton", device=device) == "triton"
    assert dispatch.backends()[op] == "triton" and op not in dispatch.fallbacks()
    assert dispatch.get(op).__module__ == f"albor.kernels.{dispatch.OPS[op]}"
