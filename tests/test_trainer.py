"""Unit tests of the trainer: bad config values are refused with the field named (a ValueError), the
optional TensorBoard logger writes what metrics.jsonl holds, the run lock, the resume rules and the
supervisor's restart policy."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

import falsification
from albor.train.config import build_config, load_config
from albor.train.run import RESUMABLE, RunLock, RunLocked, flatten, resume_changes
from albor.train.supervisor import BACKOFF_S, MAX_RESTARTS, Attempt, decide, wait_before_restart
from albor.train.trainer import Trainer


@pytest.mark.parametrize("budget", ["0", "-0.5", "1.5"])
def test_activation_memory_budget_out_of_range_is_refused(budget: str) -> None:
    with pytest.raises(ValueError, match="activation_memory_budget"):
        load_config("pretrain-350m", [f"activation_memory_budget={budget}"])


def test_activation_memory_budget_needs_compile() -> None:
    with pytest.raises(ValueError, match=re.escape("activation_memory_budget=0.5 needs compile: true")):
        load_config("pretrain-350m", ["compile=false", "activation_memory_budget=0.5"])


def test_block_compile_scope_needs_compile_and_no_fsdp() -> None:
    assert load_config("pretrain-125m", ["compile_scope=block"]).compile_scope == "block"
    with pytest.raises(ValueError, match=re.escape("compile_scope: block needs compile: true")):
        load_config("pretrain-125m", ["compile=false", "compile_scope=block"])
    with pytest.raises(ValueError, match=re.escape("compile_scope: block is not built for parallel: fsdp")):
        load_config("pretrain-125m", ["compile_scope=block", "parallel=fsdp"])


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


attempts = st.lists(
    st.builds(Attempt, st.sampled_from([-9, 1, 137]), st.one_of(st.none(), st.integers(0, 30))), min_size=1, max_size=12
)


@given(attempts)
def test_the_supervisor_restarts_a_crash_until_a_stop_rule_holds(history: list[Attempt]) -> None:
    reason = decide(history)
    repeated = (
        len(history) >= 2 and history[-1].last_step is not None and history[-1].last_step == history[-2].last_step
    )
    assert (reason is None) == (not repeated and len(history) <= MAX_RESTARTS)
    assert decide([*history[:-1], Attempt(0, 5)]) == "the run finished"
    assert decide([*history[:-1], Attempt(2, 5)]).startswith("the trainer refused")
    assert decide([*history[:-1], Attempt(3, 5)]).startswith("a training alert")


@given(attempts)
def test_the_back_off_grows_only_while_the_run_makes_no_progress(history: list[Attempt]) -> None:
    wait = wait_before_restart(history)
    assert wait in BACKOFF_S
    progressed = history[-1].last_step is not None and all(
        a.last_step is None or a.last_step < history[-1].last_step for a in history[:-1]
    )
    if progressed:
        assert wait == BACKOFF_S[0]
    assert wait_before_restart([*history, Attempt(-9, None)]) >= wait


def test_a_held_run_lock_names_its_holder(tmp_path: Path) -> None:
    first = RunLock(tmp_path / "run")
    first.acquire()
    with pytest.raises(RunLocked, match=rf"pid {os.getpid()}\)"):
        RunLock(tmp_path / "run").acquire()
    first.release()
    again = RunLock(tmp_path / "run")
    again.acquire()
    again.release()


@given(st.sampled_from(RESUMABLE), st.integers(1, 10**6))
def test_resume_allows_the_listed_fields_and_records_them(field: str, value: int) -> None:
    saved = load_config("default").model_dump(mode="json")
    requested = yaml.safe_load(yaml.safe_dump(saved))
    *parents, leaf = field.split(".")
    node = requested
    for part in parents:
        node = node[part]
    node[leaf] = value
    changes = resume_changes(saved, requested, Path("ckpt"))
    assert changes == ({field: [flatten(saved)[field], value]} if flatten(saved)[field] != value else {})


@given(st.sampled_from(["optim.lr", "optim.warmup_steps", "optim.weight_decay", "seed", "model.d_ff", "data.fim_rate"]))
def test_resume_refuses_every_other_change_naming_it(field: str) -> None:
    saved = load_config("default").model_dump(mode="json")
    requested = yaml.safe_load(yaml.safe_dump(saved))
    *parents, leaf = field.split(".")
    node = requested
    for part in parents:
        node = node[part]
    node[leaf] = node[leaf] * 2 if isinstance(node[leaf], float) else node[leaf] + 1
    with pytest.raises(ValueError, match=rf"`{re.escape(field)}`: .* in the checkpoint, .* asked for"):
        resume_changes(saved, requested, Path("ckpt"))
