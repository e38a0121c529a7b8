"""Falsifiers for the ``cursor`` contract (contracts/cursor.yaml)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from albor.data.cursor import DataCursor
from albor.verify.contracts import declared, tolerance


def _reference_epoch(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order the contract states, computed here independently of the cursor."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def _take(cursor: DataCursor, k: int) -> list[list[int]]:
    return [cursor.next_batch().tolist() for _ in range(k)]


def _restored(cursor: DataCursor) -> DataCursor:
    state = json.loads(json.dumps(cursor.state_dict()))
    fresh = DataCursor(cursor.n_windows, cursor.batch_size, cursor.seed, cursor.rank, cursor.world_size)
    fresh.load_state_dict(state)
    return fresh


LAYOUTS = st.tuples(st.integers(1, 60), st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**31))


@pytest.mark.claim("CUR-001")
@given(layout=LAYOUTS, when=st.integers(0, 40), after=st.integers(1, 30), rank_pick=st.integers(0, 3))
def test_resume_equivalence(layout: tuple[int, int, int, int], when: int, after: int, rank_pick: int) -> None:
    extra, batch, world, seed = layout
    n = batch * world + extra
    rank = rank_pick % world
    uninterrupted = DataCursor(n, batch, seed, rank, world)
    interrupted = DataCursor(n, batch, seed, rank, world)
    expected = _take(uninterrupted, when + after)
    got = _take(interrupted, when)
    got += _take(_restored(interrupted), after)
    assert got == expected


@pytest.mark.claim("CUR-002")
@pytest.mark.parametrize("when", [0, 1, 5, 6, 7, 13])
def test_step_survives_resume(when: int) -> None:
    cursor = DataCursor(20, 3, seed=4)  # 6 batches per epoch
    _take(cursor, when)
    assert cursor.step == when
    restored = _restored(cursor)
    assert restored.step == when
    assert restored.epoch == when // cursor.batches_per_epoch
    restored.next_batch()
    assert restored.step == when + 1


@pytest.mark.claim("CUR-003")
@pytest.mark.parametrize(("n", "batch", "world"), [(37, 4, 2), (12, 3, 1), (30, 5, 3)])
def test_epoch_boundaries(n: int, batch: int, world: int) -> None:
    seed = 11
    cursors = [DataCursor(n, batch, seed, r, world) for r in range(world)]
    per_epoch = cursors[0].batches_per_epoch
    assert per_epoch == n // (batch * world)
    for epoch in range(3):
        seen = [np.concatenate([c.next_batch() for c in cursors]) for _ in range(per_epoch)]
        assert np.array_equal(np.concatenate(seen), _reference_epoch(n, seed, epoch)[: per_epoch * batch * world])
        assert all(c.epoch == epoch + 1 for c in cursors)
    # Restored exactly at a boundary: the next batch opens the next epoch (not nothing, not a later epoch).
    for stop_epoch in (1, 2):
        cursor = DataCursor(n, batch, seed, 0, world)
        _take(cursor, stop_epoch * per_epoch)
        restored = _restored(cursor)
        assert restored.epoch == stop_epoch
        first = restored.next_batch()
        assert len(first) == batch
        assert np.array_equal(first, _reference_epoch(n, seed, stop_epoch)[:batch])


@pytest.mark.claim("CUR-004")
@given(layout=LAYOUTS)
def test_rank_partition(layout: tuple[int, int, int, int]) -> None:
    extra, batch, world, seed = layout
    n = batch * world + extra
    cursors = [DataCursor(n, batch, seed, r, world) for r in range(world)]
    per_epoch = cursors[0].batches_per_epoch
    covered: list[int] = []
    for _ in range(per_epoch):
        merged = np.concatenate([c.next_batch() for c in cursors])
        assert len(set(merged.tolist())) == batch * world, "ranks share windows within a global batch"
        covered += merged.tolist()
    assert len(set(covered)) == len(covered) == per_epoch * batch * world == n - n % (batch * world)
    assert set(covered) <= set(range(n))


@pytest.mark.claim("CUR-005")
@pytest.mark.parametrize(("n", "batch"), [(40, 4), (23, 5)])
def test_no_duplicate_batches(n: int, batch: int) -> None:
    cursor = DataCursor(n, batch, seed=9)
    epoch = [w for b in _take(cursor, cursor.batches_per_epoch) for w in b]
    assert len(set(epoch)) == len(epoch), "a window repeats within an epoch"
    for when in range(1, 2 * cursor.batches_per_epoch):
        c = DataCursor(n, batch, seed=9)
        last = _take(c, when)[-1]
        assert _restored(c).next_batch().tolist() != last, f"the batch before the checkpoint at {when} came again"


@pytest.mark.claim("CUR-006")
def test_order_mixes_shards() -> None:
    n_shards, per_shard, batch = 8, 125, 10
    n = n_shards * per_shard  # windows are numbered shard by shard, as load_windows concatenates them
    cursor = DataCursor(n, batch, seed=5)
    order = np.concatenate([cursor.next_batch() for _ in range(cursor.batches_per_epoch)])
    rho = np.corrcoef(np.arange(len(order)), order)[0, 1]  # both are ranks already: Spearman = Pearson
    assert abs(rho) <= tolerance("CUR-006"), f"epoch order follows storage order (rank correlation {rho:.2f})"
    first_eighth = order[: n // 8]
    assert set((first_eighth // per_shard).tolist()) == set(range(n_shards)), "the epoch starts in few shards"


@pytest.mark.claim("CUR-007")
@pytest.mark.parametrize(
    ("field", "other"),
    [
        ("seed", dict(seed=2)),
        ("global_batch", dict(world=4)),
        ("n_windows", dict(n=99)),
        ("global_batch", dict(batch=5)),
        ("global_batch", dict(accum=2)),
    ],
)
def test_foreign_state_refused(field: str, other: dict[str, int]) -> None:
    args = dict(n=100, batch=4, seed=1, rank=0, world=2, accum=1) | other
    saved = DataCursor(100, 4, 1, 0, 2)
    saved.next_batch()
    cursor = DataCursor(args["n"], args["batch"], args["seed"], args["rank"], args["world"], args["accum"])
    mine, theirs = cursor.state_dict()[field], saved.state_dict()[field]
    message = (
        f"cursor state was saved with {field}={theirs!r}, this cursor has {field}={mine!r}; "
        "resuming would change which windows each step sees"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        cursor.load_state_dict(saved.state_dict())
    assert cursor.step == 0


def _step_windows(cursors: list[DataCursor], steps: int) -> list[set[int]]:
    """The windows each optimizer step consumes, over every rank and micro-batch."""
    out = []
    for _ in range(steps):
        seen: list[int] = []
        for _ in range(cursors[0].grad_accum):
            for c in cursors:
                seen += c.next_batch().tolist()
        assert len(seen) == len(set(seen)), "a window twice in one step"
        out.append(set(seen))
    return out


WORLDS = st.sampled_from([(1, 4), (2, 2), (4, 1), (1, 2), (2, 1)])  # (ranks, micro-batches), in pairs of equal W·A


@pytest.mark.claim("CUR-008")
@given(before=WORLDS, after=WORLDS, batch=st.integers(1, 3), when=st.integers(0, 12), seed=st.integers(0, 2**31))
def test_a_resume_on_another_world_sees_the_same_windows_per_step(
    before: tuple[int, int], after: tuple[int, int], batch: int, when: int, seed: int
) -> None:
    (w0, a0), (w1, a1) = before, after
    if w0 * a0 != w1 * a1:
        return  # only equal global batches resume onto each other (the refusal is CUR-007's)
    n = 13 * batch * w0 * a0 + 5  # several epochs' worth, with a dropped tail
    reference = _step_windows([DataCursor(n, batch, seed, r, w0, a0) for r in range(w0)], when + 8)
    first = [DataCursor(n, batch, seed, r, w0, a0) for r in range(w0)]
    got = _step_windows(first, when)
    state = json.loads(json.dumps(first[0].state_dict()))
    second = [DataCursor(n, batch, seed, r, w1, a1) for r in range(w1)]
    for c in second:
        c.load_state_dict(state)
    got += _step_windows(second, 8)
    assert got == reference, "a world change must neither skip nor repeat a window"


@pytest.mark.claim("CUR-007")
def test_state_format_is_the_declared_one() -> None:
    state = DataCursor(10, 2, 3).state_dict()
    assert state == {"version": declared("cursor", "state_version"), "steps": 0, "seed": 3, "n_windows": 10,
                     "global_batch": 2}  # fmt: skip
    for bad in ({**state, "version": state["version"] + 1}, {k: v for k, v in state.items() if k != "version"}):
        with pytest.raises(ValueError, match="saved with version="):
            DataCursor(10, 2, 3).load_state_dict(bad)
    for steps in (-1, "3", None, 2.0):
        with pytest.raises(ValueError, match=f"^cursor state has an invalid steps {re.escape(repr(steps))}$"):
            DataCursor(10, 2, 3).load_state_dict({**state, "steps": steps})
    edge = DataCursor(10, 2, 3)
    edge.load_state_dict({**state, "steps": 0})  # the first batch of the first epoch is a valid place to resume
    assert edge.next_batch().tolist() == _reference_epoch(10, 3, 0)[:2].tolist()


@pytest.mark.claim("CUR-009")
def test_layout_edges() -> None:
    one = DataCursor(6, 3, 0, 1, 2)  # exactly one global batch: accepted, and every epoch is that one batch
    assert one.batches_per_epoch == 1 and [one.next_batch().tolist() for _ in range(2)] == [
        _reference_epoch(6, 0, e)[3:6].tolist() for e in range(2)
    ]
    alone = DataCursor(6, 3, 0)
    assert (alone.world_size, alone.rank, alone.grad_accum) == (1, 0, 1), "alone, one micro-batch, unless told"
    refused = {
        (5, 3, 0, 1, 2, 1): "5 windows cannot fill one global batch of 3 × 2 ranks × 1 micro-batches; lower the "
        "batch size or add data",
        (11, 3, 0, 0, 2, 2): "11 windows cannot fill one global batch of 3 × 2 ranks × 2 micro-batches; lower the "
        "batch size or add data",
        (6, 0, 0, 0, 1, 1): "batch_size (0), world_size (1) and grad_accum (1) must be positive",
        (6, 3, 0, 0, 0, 1): "batch_size (3), world_size (0) and grad_accum (1) must be positive",
        (6, 3, 0, 0, 1, 0): "batch_size (3), world_size (1) and grad_accum (0) must be positive",
        (6, -1, 0, 0, 1, 1): "batch_size (-1), world_size (1) and grad_accum (1) must be positive",
        (6, 3, 0, 2, 2, 1): "rank 2 is outside world size 2",
        (6, 3, 0, -1, 2, 1): "rank -1 is outside world size 2",
    }
    for args, message in refused.items():
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            DataCursor(*args)


@pytest.mark.claim("CUR-010")
@pytest.mark.parametrize("accum", [1, 2, 3])
def test_state_refused_inside_a_step(accum: int) -> None:
    cursor = DataCursor(40, 2, 5, grad_accum=accum)
    for batch in range(2 * accum + 1):
        k = batch % accum
        if k:
            message = f"the cursor is {k} micro-batches into a step of {accum}; save between steps"
            with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
                cursor.state_dict()
        else:
            assert cursor.state_dict()["steps"] == batch // accum, "the steps taken, at a step's edge"
        cursor.next_batch()
