"""Unit tests of the dispatch table: routing, bad names, one table per model, and the kernel launch check."""

from __future__ import annotations

import pytest
import torch

from albor.ops import dispatch
from albor.ops.dispatch import OPS, Kernels
from albor.ops.rmsnorm import rmsnorm
from albor.ops.swiglu import swiglu

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_every_op_starts_on_the_reference() -> None:
    kernels = Kernels()
    assert kernels.backends == dict.fromkeys(OPS, "reference") and kernels.fallbacks == {}
    assert all(kernels.get(op) is dispatch.load(op, "reference") for op in OPS)


def test_unknown_op_and_backend_are_refused() -> None:
    with pytest.raises(KeyError, match="unknown op"):
        Kernels({"layernorm": "reference"})
    with pytest.raises(ValueError, match="unknown backend 'cuda' for op 'rmsnorm'"):
        Kernels({"rmsnorm": "cuda"})  # type: ignore[dict-item]


def test_two_tables_share_nothing() -> None:
    with pytest.warns(UserWarning, match="rmsnorm"):
        fell_back = Kernels({"rmsnorm": "triton"}, allow_fallback=True, device="meta")
    assert "rmsnorm" in fell_back.fallbacks
    assert Kernels().fallbacks == {} and Kernels().backends["rmsnorm"] == "reference"


def test_launch_check_names_a_wrong_output() -> None:
    with pytest.raises(RuntimeError, match="swiglu kernel output 0 differs"):
        dispatch.check("swiglu", lambda g, u: swiglu(g, u) * 1.01, swiglu, DEVICE)


def test_launch_check_names_a_missing_gradient() -> None:
    with pytest.raises(RuntimeError, match="gradient of argument 1"):
        dispatch.check("rmsnorm", lambda x, w, eps: rmsnorm(x, w.detach(), eps), rmsnorm, DEVICE)


@pytest.mark.triton
@pytest.mark.parametrize("op", ["rmsnorm", "apply_rope", "swiglu", "linear_cross_entropy"])
def test_kernels_refuse_tensors_they_cannot_launch_on(op: str) -> None:
    kernel = dispatch.load(op, "triton")
    args, _ = dispatch._case(op)
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    with pytest.raises(ValueError, match="kernel runs on"):
        kernel(*meta)
