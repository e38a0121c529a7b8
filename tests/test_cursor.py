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


def test_state_is_plain_json_and_names_no_rank() -> None:
    cursor = DataCursor(30, 2, 7, rank=1, world_size=2, grad_accum=2)
    cursor.next_batch()
    with pytest.raises(ValueError, match="1 micro-batches into a step of 2; save between steps"):
        cursor.state_dict()
    cursor.next_batch()
    state = cursor.state_dict()
    assert json.loads(json.dumps(state)) == state
    assert state == {"version": 2, "steps": 1, "seed": 7, "n_windows": 30, "global_batch": 8}


@pytest.mark.parametrize("steps", [-1, "3", None, 2.0])
def test_invalid_steps_refused(steps: object) -> None:
    cursor = DataCursor(30, 4, 7)
    state = cursor.state_dict() | {"steps": steps}
    with pytest.raises(ValueError, match="invalid steps"):
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
