"""Unit tests of reading device scalars on the host."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor.kernels.host_copy import read_scalar


@given(st.floats(allow_nan=False, allow_infinity=True, width=64))
def test_reads_the_exact_value(v: float) -> None:
    assert read_scalar(torch.tensor(v, dtype=torch.float64)) == v


@pytest.mark.parametrize("shape", [(2,), (0,), (1, 2)])
def test_more_or_less_than_one_element_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="one-element"):
        read_scalar(torch.zeros(shape))
