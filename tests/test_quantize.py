"""Unit and property tests of ``albor.export.quantize``: the int8 and int4 codes, scales and packing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from albor.export.quantize import (
    Int4Linear,
    dequantize_int4,
    dequantize_int8,
    quantize_int4,
    quantize_int8,
    quantized_linear,
)

shapes = st.tuples(st.integers(1, 24), st.integers(1, 300), st.integers(0, 2**31 - 1))


def _matrix(n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, generator=g) * torch.rand(n, 1, generator=g) * 10


@given(shapes)
def test_int8_round_trip_within_half_a_step(shape: tuple[int, int, int]) -> None:
    w = _matrix(*shape)
    q, scale = quantize_int8(w)
    err = (dequantize_int8(q, scale) - w.double()).abs()
    assert (err <= scale.double()[:, None] / 2 * (1 + 1e-6) + 1e-12).all()


@given(shapes, st.sampled_from([32, 64, 128, 256]))
def test_int4_round_trip_within_half_a_step(shape: tuple[int, int, int], group: int) -> None:
    w = _matrix(*shape)
    q, scale, zero = quantize_int4(w, group)
    dq = dequantize_int4(q, scale, zero)[:, : w.shape[1]]
    step = scale.double().repeat_interleave(group, dim=1)[:, : w.shape[1]]
    assert ((dq - w.double()).abs() <= step / 2 * (1 + 1e-5) + 1e-9).all()


def test_constant_rows_and_groups_are_exact() -> None:
    w = torch.full((3, 64), 0.25)
    w[1] = 0.0
    assert torch.equal(dequantize_int8(*quantize_int8(w)).float(), w)
    assert torch.allclose(dequantize_int4(*quantize_int4(w, 32)).float(), w, atol=1e-7)


def test_int4_linear_pads_rows_and_inputs() -> None:
    w = _matrix(21, 50, 0)  # 21 rows: not whole tiles of 16; 50 inputs: not a whole group of 32
    layer = Int4Linear(w, 32)
    x = torch.randn(4, 50)
    ref = x.double() @ dequantize_int4(*quantize_int4(w, 32))[:, :50].t()
    assert layer(x).shape == (4, 21)
    assert torch.allclose(layer(x).double(), ref, rtol=1e-4, atol=1e-4)


def test_refusals() -> None:
    with pytest.raises(ValueError, match="group_size"):
        quantize_int4(torch.randn(16, 32), 16)
    with pytest.raises(ValueError, match="bias"):
        quantized_linear(nn.Linear(4, 4), 8, 32)
    with pytest.raises(ValueError, match="bits"):
        quantized_linear(nn.Linear(4, 4, bias=False), 2, 32)  # type: ignore[arg-type]
