"""Property tests of the checkpoint manager (contracts/checkpoint.yaml): any model shape round-trips, any
damage to any file is named, pruning keeps what it promises for any history, and a TrainState round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from albor import checkpoint as ckpt
from albor.config import ModelConfig, OptimConfig
from albor.data.cursor import DataCursor
from albor.data.synthetic import tiny_tokenizer
from albor.model import Decoder
from albor.optim.adamw import build_optimizer
from albor.train.state import TrainState

FEW = settings(max_examples=max(4, settings.default.max_examples // 4))  # each example writes checkpoints


def _manager(root: Path) -> ckpt.CheckpointManager:
    tok = root.parent / "tokenizer.json"
    if not tok.exists():
        tiny_tokenizer().save(str(tok))
    return ckpt.CheckpointManager(root, keep_last=2, config_yaml="model: t\n", tokenizer_path=tok)


def _model(seed: int, tied: bool, d: int = 16) -> tuple[Decoder, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    cfg = ModelConfig(name="t", n_layers=1, d_model=d, n_heads=2, n_kv_heads=1, d_ff=24, vocab_size=37, max_seq_len=8)
    model = Decoder(cfg.model_copy(update={"tie_embeddings": tied}))
    opt = build_optimizer(model, OptimConfig(warmup_steps=1, max_steps=4))
    x = torch.randint(0, 37, (2, 7))
    model(x, x).backward()
    opt.step()
    return model, opt


@FEW
@given(st.integers(0, 2**16), st.booleans(), st.sampled_from([8, 16, 24]))
def test_any_model_round_trips_bitwise(tmp_path_factory: pytest.TempPathFactory, seed: int, tied: bool, d: int) -> None:
    root = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    model, opt = _model(seed, tied, d)
    path = _manager(root).save(3, model, opt, {"step": 3})
    fresh, fresh_opt = _model(seed + 1, tied, d)
    assert _manager(root).load(path, fresh, fresh_opt) == {"step": 3}
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert json.dumps(opt.state_dict(), default=str) == json.dumps(fresh_opt.state_dict(), default=str)


@FEW
@given(st.sampled_from((*ckpt.WEIGHT_FILES, *ckpt.COMMON_FILES)), st.integers(0, 10**6))
def test_any_flipped_byte_is_named(tmp_path_factory: pytest.TempPathFactory, name: str, where: int) -> None:
    root = tmp_path_factory.mktemp("ckpt") / "checkpoints"
    model, opt = _model(0, False)
    path = _manager(root).save(1, model, opt, {"step": 1})
    data = bytearray((path / name).read_bytes())
    data[where % len(data)] ^= 0x20
    (path / name).write_bytes(bytes(data))
    with pytest.raises(ckpt.CheckpointError, match=name.replace(".", r"\.")):
        ckpt.verify(path)
    with pytest.warns(UserWarning, match=path.name):
        assert _manager(root).latest() is None


@given(st.lists(st.integers(1, 60), min_size=1, max_size=8, unique=True), st.data())
@settings(max_examples=15, deadline=None)
def test_prune_keeps_the_newest_and_the_best(tmp_path_factory, steps: list[int], data: st.DataObject) -> None:
    root = tmp_path_factory.mktemp("prune")
    for s in steps:
        (root / ckpt.step_dir_name(s)).mkdir()
    best = data.draw(st.sampled_from(steps))
    ckpt.set_link(root / "best", ckpt.step_dir_name(best))
    keep = data.draw(st.integers(1, 4))
    ckpt.prune(root, keep)
    expected = sorted(set(sorted(steps)[-keep:]) | {best})
    assert [p.name for p in ckpt.list_checkpoints(root)] == [ckpt.step_dir_name(s) for s in expected]


def test_train_state_round_trips(tmp_path: Path) -> None:
    model, opt = _model(3, True)
    cursor = DataCursor(40, 4, seed=7)
    for _ in range(5):
        cursor.next_batch()
    state = TrainState(model, opt, cursor, step=5, tokens_seen=160, best_val_loss=2.5)
    torch.manual_seed(99)
    saved = state.state_dict()
    expected = torch.rand(3)
    other_model, other_opt = _model(4, True)
    other = TrainState(other_model, other_opt, DataCursor(40, 4, seed=7))
    torch.manual_seed(0)
    other.load_state_dict(saved)
    assert (other.step, other.tokens_seen, other.best_val_loss, other.cursor.step) == (5, 160, 2.5, 5)
    assert torch.equal(torch.rand(3), expected), "the RNG state comes back with the rest"
    pairs = zip(model.state_dict().values(), other_model.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
