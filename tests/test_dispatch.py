"""Unit tests of the dispatch point: routing, bad names, and the kernel launch check."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

if not torch.cuda.is_available():  # before triton is first imported: kernels run in the interpreter
    os.environ.setdefault("TRITON_INTERPRET", "1")

from albor.kernels import selfcheck
from albor.ops import dispatch
from albor.ops.rmsnorm import rmsnorm
from albor.ops.swiglu import swiglu

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(autouse=True)
def _reference_after() -> Iterator[None]:
    yield
    for op in dispatch.OPS:
        dispatch.set_backend(op, "reference")


def test_every_op_starts_on_the_reference() -> None:
    assert dispatch.backends() == dict.fromkeys(dispatch.OPS, "reference")
    assert dispatch.fallbacks() == {}


def test_unknown_op_and_backend_are_refused() -> None:
    with pytest.raises(KeyError, match="unknown op"):
        dispatch.set_backend("layernorm", "reference")
    with pytest.raises(ValueError, match="unknown backend 'cuda' for op 'rmsnorm'"):
        dispatch.set_backend("rmsnorm", "cuda")  # type: ignore[arg-type]


def test_routing_back_clears_a_recorded_fallback() -> None:
    with pytest.warns(UserWarning, match="rmsnorm"):
        dispatch.set_backend("rmsnorm", "triton", allow_fallback=True, device="meta")
    assert "rmsnorm" in dispatch.fallbacks()
    dispatch.set_backend("rmsnorm", "reference")
    assert dispatch.fallbacks() == {}


def test_launch_check_names_a_wrong_output() -> None:
    with pytest.raises(RuntimeError, match="swiglu kernel output 0 differs"):
        selfcheck.check("swiglu", lambda g, u: swiglu(g, u) * 1.01, swiglu, DEVICE)


def test_launch_check_names_a_missing_gradient() -> None:
    with pytest.raises(RuntimeError, match="gradient of argument 1"):
        selfcheck.check("rmsnorm", lambda x, w, eps: rmsnorm(x, w.detach(), eps), rmsnorm, DEVICE)


@pytest.mark.triton
@pytest.mark.parametrize("op", ["rmsnorm", "apply_rope", "swiglu", "linear_cross_entropy"])
def test_kernels_refuse_tensors_they_cannot_launch_on(op: str) -> None:
    kernel = dispatch._load(op, "triton")
    args, _ = selfcheck._case(op)
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises(ValueError, match="kernel runs on"):
        kernel(*meta)
