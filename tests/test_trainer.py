"""Unit tests of the trainer: bad config values are refused with the field named (a ValueError), and the
optional TensorBoard logger writes what metrics.jsonl holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import falsification
from albor.train.config import build_config, load_config
from albor.train.trainer import Trainer


@pytest.mark.parametrize("budget", ["0", "-0.5", "1.5"])
def test_activation_memory_budget_out_of_range_is_refused(budget: str) -> None:
    with pytest.raises(ValueError, match="activation_memory_budget"):
        load_config("pretrain-350m", [f"activation_memory_budget={budget}"])


def test_activation_memory_budget_needs_compile() -> None:
    with pytest.raises(ValueError, match=re.escape("activation_memory_budget=0.5 needs compile: true")):
        load_config("pretrain-350m", ["compile=false", "activation_memory_budget=0.5"])


def test_activation_memory_budget_is_kept() -> None:
    assert load_config("pretrain-350m", ["activation_memory_budget=0.5"]).activation_memory_budget == 0.5
    assert load_config("default", []).activation_memory_budget == 1.0


def test_vocab_and_context_are_said_once_in_data() -> None:
    cfg = load_config("pretrain-350m", ["data.vocab_size=8192", "data.seq_len=512"])
    assert (cfg.model.vocab_size, cfg.model.max_seq_len) == (8192, 512)
    with pytest.raises(ValueError, match=r"model.vocab_size \(100\) is derived from data.vocab_size \(32768\)"):
        load_config("pretrain-350m", ["model.vocab_size=100"])
    with pytest.raises(ValueError, match=r"model.max_seq_len \(64\) is derived from data.seq_len \(1024\)"):
        load_config("pretrain-350m", ["model.max_seq_len=64"])
    saved = load_config("default")
    assert build_config(yaml.safe_load(saved.to_yaml()), []) == saved, "a run's saved config loads back equal"


def test_tensorboard_logger_writes_every_metric_beside_the_jsonl(small_data: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    base = yaml.safe_load((Path(falsification.__file__).parent / "trainer-test.yaml").read_text())
    base["data"] |= {"out": str(small_data)}
    cfg = build_config(base, [f"runs_dir={tmp_path}", "logger=tensorboard", "optim.max_steps=4"])
    trainer = Trainer(cfg)
    trainer.fit()
    trainer.close()
    events = EventAccumulator(str(trainer.run_dir / "tensorboard"))
    events.Reload()
    logged = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logged if r["kind"] == "train"]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([r["loss"] for r in train])
    assert [e.step for e in events.Scalars("eval/val_ppl")] == [r["step"] for r in logged if r["kind"] == "eval"]
