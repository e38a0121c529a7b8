"""Falsifiers for the ``fsdp`` contract (contracts/fsdp.yaml): sharded training on FSDP2 equals unsharded
training, and its distributed checkpoints resume on any world size, never torn, also written in the
background. Multi-process cases run under torchrun with gloo on the CPU."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from albor import checkpoint as ckpt
from albor.dcp_checkpoint import full_state, is_sharded
from albor.eval import __main__ as eval_cli
from albor.train.trainer import Trainer
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err
from falsification.launch import train
from falsification.test_trainer import MAX_STEPS, _losses, small_config

pytestmark = pytest.mark.slow  # each case starts trainers in fresh processes


def _write(cfg_dir: Path, name: str, data: Path, runs: Path, **over: object) -> Path:
    path = cfg_dir / f"{name}.yaml"
    path.write_text(small_config(data, runs, **over).to_yaml())
    return path


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = (run_dir / "checkpoints" / "latest").resolve()
    if is_sharded(latest):
        return {k: v for k, v in full_state(latest)["model"].items()}
    from safetensors.torch import load_file

    return load_file(str(latest / "model.safetensors"))


def _assert_close_runs(reference: Path, other: Path, claim: str) -> None:
    a, b = _losses(reference), _losses(other)
    assert [s for s, _, _ in a] == [s for s, _, _ in b], "the same steps"
    for (step, la, lra), (_, lb, lrb) in zip(a, b, strict=True):
        assert lra == lrb, f"step {step}: lr {lra} vs {lrb}"
        assert abs(la - lb) <= tolerance(claim, "loss") * abs(la), f"step {step}: loss {la} vs {lb}"
    wa, wb = _final_weights(reference), _final_weights(other)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert rel_err(wb[name], wa[name]) <= tolerance(claim, "weights"), name


@pytest.mark.claim("FSDP-001")
def test_sharded_ranks_equal_one_process_accumulating(small_data: Path, tmp_path: Path) -> None:
    one = _write(tmp_path, "one", small_data, tmp_path / "one", micro_batch=2, grad_accum=2)
    two = _write(tmp_path, "two", small_data, tmp_path / "two", micro_batch=2, grad_accum=1, parallel="fsdp")
    train(one, tmp_path, None)
    train(two, tmp_path, 2)
    assert is_sharded((tmp_path / "two" / "default" / "checkpoints" / "latest").resolve())
    _assert_close_runs(tmp_path / "one" / "default", tmp_path / "two" / "default", "FSDP-001")


@pytest.mark.claim("FSDP-002")
@pytest.mark.parametrize("worlds", [(4, 2, 1), (1, 2)], ids=["4-2-1", "1-2"])
def test_a_resume_onto_another_world_size_continues_the_trajectory(
    small_data: Path, tmp_path: Path, worlds: tuple[int, ...]
) -> None:
    # One global batch of 4 windows a step throughout: 1 window × 4 ranks, × 2 micro-batches on 2, × 4 on 1.
    ref = _write(tmp_path, "ref", small_data, tmp_path / "ref", micro_batch=1, grad_accum=4, parallel="fsdp")
    train(ref, tmp_path, 1)
    accum = 4 // worlds[0]
    cut = _write(tmp_path, "cut", small_data, tmp_path / "cut", micro_batch=1, grad_accum=accum, parallel="fsdp")
    # Killed after steps 3 and 5: the resumes start from the checkpoints of steps 2 and 4.
    kills = ["step:3", "step:5"]
    assert train(cut, tmp_path, worlds[0], crash=kills[0]) != 0
    for i, world in enumerate(worlds[1:], start=1):
        crash = kills[i] if i < len(worlds) - 1 else None
        code = train(cut, tmp_path, world, "--resume", crash=crash)
        assert (code != 0) == (crash is not None)
    run = tmp_path / "cut" / "default"
    history = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()]
    moves = [e["changes"]["world_size"] for e in history if e["event"] == "resume"]
    assert moves == [list(p) for p in itertools.pairwise(worlds)]
    _assert_close_runs(tmp_path / "ref" / "default", run, "FSDP-002")


@pytest.mark.claim("FSDP-003")
@pytest.mark.parametrize("async_write", [False, True], ids=["sync", "async"])
def test_a_save_killed_on_every_rank_is_never_loaded(small_data: Path, tmp_path: Path, async_write: bool) -> None:
    over = {"parallel": "fsdp", "micro_batch": 2, "async_checkpoint": async_write}
    ref = _write(tmp_path, "ref", small_data, tmp_path / "ref", **over)
    train(ref, tmp_path, 2)
    cut = _write(tmp_path, "cut", small_data, tmp_path / "cut", **over)
    assert train(cut, tmp_path, 2, crash="checkpoint:4") != 0
    root = tmp_path / "cut" / "default" / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(root)] == [ckpt.step_dir_name(2)], "the torn save is not listed"
    train(cut, tmp_path, 2, "--resume")
    for path in ckpt.list_checkpoints(root):
        ckpt.verify(path)  # every checkpoint completed, also those written in the background, verifies
    _assert_close_runs(tmp_path / "ref" / "default", tmp_path / "cut" / "default", "FSDP-003")


@pytest.mark.claim("FSDP-004")
def test_a_sharded_checkpoint_serves_one_process(small_data: Path, tmp_path: Path, capsys) -> None:
    with Trainer(small_config(small_data, tmp_path, parallel="fsdp")) as trainer:
        trainer.fit()
    latest = (trainer.checkpoints.root / "latest").resolve()
    assert is_sharded(latest) and not (latest / "model.safetensors").exists()
    records = [json.loads(x) for x in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if r["kind"] == "eval"][-1]
    capsys.readouterr()
    assert eval_cli.main(["perplexity", "--checkpoint", str(trainer.run_dir), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert logged["step"] == MAX_STEPS, "consolidated on one process"
    gap = abs(out["val_loss"] - logged["val_loss"])
    assert gap <= tolerance("FSDP-004", "loss") * abs(logged["val_loss"]), (out, logged)
    # Resumed twice, compiled, on one process without sharding: both kinds of checkpoint load either way.
    for steps in (MAX_STEPS + 1, MAX_STEPS + 2):
        longer = small_config(small_data, tmp_path, **{"optim.max_steps": steps, "compile": True})
        with Trainer(longer, resume=True) as resumed:
            assert resumed.state.step == steps - 1
            resumed.fit()
    assert not is_sharded((trainer.checkpoints.root / "latest").resolve())


@pytest.mark.claim("FSDP-005")
def test_a_cpu_run_on_a_gpu_host_shards_on_the_cpu(small_data: Path, tmp_path: Path, monkeypatch) -> None:
    # fully_shard's default mesh is the host's accelerator: this host reports CUDA, as a GPU host does.
    monkeypatch.setattr(torch._C, "_get_accelerator", lambda: torch.device("cuda"))
    cfg = small_config(small_data, tmp_path, parallel="fsdp")
    with Trainer(cfg) as trainer:
        meshes = {p.device_mesh.device_type for p in trainer.state.model.parameters()}
        trainer.train_step()
    assert meshes == {"cpu"}, f"a run on the CPU sharded over a {meshes} mesh"
