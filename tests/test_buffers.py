"""The kernel buffer allocator: plain outside ``poisoned()``, NaN-filled and guarded inside it."""

from __future__ import annotations

import pytest
import torch

from albor.kernels import buffers


def test_plain_outside_poisoned() -> None:
    b = buffers.empty((3, 4), torch.float32, torch.device("cpu"))
    assert b.shape == (3, 4) and b.untyped_storage().nbytes() == 3 * 4 * 4


def test_poisoned_buffers_are_nan_and_guarded() -> None:
    with buffers.poisoned():
        b = buffers.empty((3, 5), torch.bfloat16, torch.device("cpu"))
        assert b.isnan().all() and b.is_contiguous()
        b.fill_(1.0)  # writing every element inside is fine


@pytest.mark.parametrize("offset", [-1, 15])
def test_a_write_past_either_end_is_caught(offset: int) -> None:
    caught = pytest.raises(AssertionError, match=r"1 element\(s\) written outside .* shape \(3, 5\)")
    with caught, buffers.poisoned():
        b = buffers.empty((3, 5), torch.float32, torch.device("cpu"))
        torch.as_strided(b, (1,), (1,), b.storage_offset() + offset).fill_(0.0)


def test_nesting_restores_the_outer_state() -> None:
    with buffers.poisoned():
        with buffers.poisoned():
            pass
        assert buffers.empty((2,), torch.float32, torch.device("cpu")).isnan().all()
    assert buffers._guarded is None
