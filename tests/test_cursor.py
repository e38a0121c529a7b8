"""Unit and property tests of albor.data.cursor."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from albor.data.cursor import DataCursor


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 0, 0), "must be positive"),
        ((10, 2, 0, 2, 2), "outside world size"),
        ((5, 3, 0, 0, 2), "cannot fill one global batch"),
    ],
)
def test_bad_arguments_refused(args: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DataCursor(*args)


def test_state_is_plain_json() -> None:
    cursor = DataCursor(30, 4, 7, rank=1, world_size=2)
    cursor.next_batch()
    state = cursor.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state["step"] == 1 and state["world_size"] == 2 and state["seed"] == 7


@pytest.mark.parametrize("step", [-1, "3", None, 2.0])
def test_invalid_step_refused(step: object) -> None:
    cursor = DataCursor(30, 4, 7)
    state = cursor.state_dict() | {"step": step}
    with pytest.raises(ValueError, match="invalid step"):
        cursor.load_state_dict(state)


@given(n=st.integers(1, 50), batch=st.integers(1, 5), steps=st.integers(0, 60))
def test_epoch_follows_step(n: int, batch: int, steps: int) -> None:
    cursor = DataCursor(n + batch, batch, 0)
    for _ in range(steps):
        assert cursor.next_batch().shape == (batch,)
    assert cursor.step == steps and cursor.epoch == steps // cursor.batches_per_epoch


def test_orders_differ_by_seed_and_epoch() -> None:
    a, b = DataCursor(200, 200, 1), DataCursor(200, 200, 2)
    first, second = a.next_batch(), a.next_batch()
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, b.next_batch())
    assert sorted(first.tolist()) == sorted(second.tolist()) == list(range(200))
