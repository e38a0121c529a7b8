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


# --- the pieces, on one process: the sharding plan, the save protocol, the round trip ------------------


@pytest.mark.claim("FSDP-006")
def test_shard_wraps_every_block_then_the_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.distributed.fsdp import MixedPrecisionPolicy

    from albor.train import fsdp

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = torch.nn.ModuleList(torch.nn.Linear(3, 3) for _ in range(3))

    meshes: list[tuple] = []
    wrapped: list[tuple] = []

    def mesh(*args: object, **kwargs: object) -> tuple:
        meshes.append((args, kwargs))
        return ("mesh", len(meshes))

    monkeypatch.setattr(fsdp, "init_device_mesh", mesh)
    monkeypatch.setattr(fsdp, "fully_shard", lambda module, **kwargs: wrapped.append((module, kwargs)))
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 3)
    bf16 = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    cases = [("cuda", True, bf16), ("cuda", False, None), ("cpu", True, None), ("cpu", False, None)]
    for kind, use_bf16, policy in cases:
        meshes.clear()
        wrapped.clear()
        model = Model()
        fsdp.shard(model, model.blocks, torch.device(kind), use_bf16)
        # One mesh of the device's own kind over every rank (ALB-280), and every block before the root.
        assert meshes == [((kind, (3,)), {})], (kind, meshes)
        expected = {"mesh": ("mesh", 1), **({"mp_policy": policy} if policy is not None else {})}
        assert [m for m, _ in wrapped] == [*model.blocks, model], kind
        assert all(kw == expected for _, kw in wrapped), (kind, use_bf16, wrapped[0][1])


@pytest.mark.claim("FSDP-006")
def test_no_gradient_sync_turns_the_reduction_off_for_its_body_only() -> None:
    from albor.train.fsdp import no_gradient_sync

    class Model:
        def __init__(self) -> None:
            self.calls: list[object] = []

        def set_requires_gradient_sync(self, value: object) -> None:
            self.calls.append(value)

    model = Model()
    with no_gradient_sync(model):  # type: ignore[arg-type]
        assert model.calls == [False]
    assert model.calls == [False, True]
    model.calls.clear()
    with pytest.raises(ZeroDivisionError), no_gradient_sync(model):  # type: ignore[arg-type]
        _ = 1 / 0
    assert model.calls == [False, True], "sync is on again after a body that raised"


@pytest.fixture
def one_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A process group of this one process (gloo), as a sharded run on one rank has; the test works in its own
    folder, so that a path gone astray (a relative one) lands there and not where another test reads."""
    import torch.distributed as dist

    monkeypatch.chdir(tmp_path)
    made = not dist.is_initialized()
    if made:
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if made:
        dist.destroy_process_group()


def _model_and_optimizer(seed: int, sharded: bool = False) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A small model (each layer and the root wrapped by fully_shard on this one rank when ``sharded``) and its
    AdamW after one step (so the optimizer has state), from ``seed``."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 3))
    if sharded:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (1,))
        for layer in model:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2 * (seed + 1))
    model(torch.randn(4, 5)).square().sum().backward()
    opt.step()
    opt.zero_grad()
    return model, opt


def _by_name(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """The model's weights and the optimizer's state and groups, keyed by parameter name (the reference)."""
    from torch.distributed.tensor import DTensor

    def full(t: object) -> object:
        return (t.full_tensor() if isinstance(t, DTensor) else t.detach()).clone() if torch.is_tensor(t) else t

    names = {id(p): n for n, p in model.named_parameters()}
    sd = opt.state_dict()
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    state = {names[ids[i]]: {k: full(v) for k, v in s.items()} for i, s in sd["state"].items()}
    groups = json.loads(json.dumps([{k: v for k, v in g.items() if k != "params"} for g in sd["param_groups"]]))
    return {"model": {k: full(v) for k, v in model.state_dict().items()}, "state": state, "groups": groups}


def _assert_same(a: dict, b: dict) -> None:
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        assert a["state"][k].keys() == b["state"][k].keys(), k
        for s in a["state"][k]:
            assert torch.equal(torch.as_tensor(a["state"][k][s]), torch.as_tensor(b["state"][k][s])), (k, s)
    assert a["groups"] == b["groups"]


def _save(tmp: Path, model, opt, main: bool, async_group, events: list, monkeypatch) -> object:
    """begin_save with its collaborators recording, in order, what happens (barriers, the crash point, write_rest)."""
    from albor import dcp_checkpoint as dcpc

    def barrier() -> None:
        events.append(("barrier", sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else None))

    def crash(point: str, step: int) -> None:
        events.append(("crash", point, step, (tmp / "dcp" / ".metadata").is_file()))

    monkeypatch.setattr(dcpc, "crash_point", crash)
    return dcpc.begin_save(tmp, 3, model, opt, lambda t: events.append(("rest", t)), main, barrier, async_group)


@pytest.mark.claim("FSDP-007")
@pytest.mark.parametrize("async_write", [False, True], ids=["sync", "async"])
def test_a_sharded_save_is_completed_only_after_every_ranks_shards(
    tmp_path: Path, one_rank: None, monkeypatch: pytest.MonkeyPatch, async_write: bool
) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    from albor import dcp_checkpoint as dcpc

    group = dist.new_group(backend="gloo") if async_write else None
    writes: list[object] = []
    real_async = dcp.async_save

    class Watched:  # the background write's future, noting when it is waited on
        def __init__(self, future) -> None:
            self.future = future

        def result(self):
            events.append(("waited",))
            return self.future.result()

    def async_save(*args, **kwargs):
        writes.append(kwargs.get("process_group"))
        return Watched(real_async(*args, **kwargs))

    monkeypatch.setattr(dcp, "async_save", async_save)
    model, opt = _model_and_optimizer(0)
    # Rank 0 starts from an empty .tmp- folder, parents made: a stale one (a save killed before) is cleared.
    tmp = tmp_path / "run" / "checkpoints" / ".tmp-step-00000003"
    events: list = []
    pending = _save(tmp, model, opt, True, group, events, monkeypatch)
    assert events[0] == ("barrier", []), "rank 0 makes the folder before every rank writes into it"
    assert events[1] == ("crash", "checkpoint", 3, not async_write or events[1][3]), events
    if not async_write:
        assert events[1][3], "the crash point comes after this rank's shards are on disk"
    assert writes == ([group] if async_write else []), "a background write carries its collectives on its own group"
    assert (pending.future is not None) == async_write
    assert pending.finish() == tmp.with_name("step-00000003")
    tail = events[2:]
    assert tail == [*([("waited",)] if async_write else []), ("barrier", ["dcp"]), ("rest", tmp), ("barrier", ["dcp"])]
    assert dcpc.is_sharded(tmp) and (tmp / "dcp" / ".metadata").is_file(), "the shards are in dcp/"
    assert not dcpc.is_sharded(tmp_path) and not dcpc.is_sharded(tmp / "dcp")
    # A stale folder is emptied; another rank leaves rank 0's folder alone, writes no rest, returns no path.
    (tmp / "stale").write_text("a save killed before")
    events.clear()
    _save(tmp, model, opt, True, group, events, monkeypatch).finish()
    assert events[0] == ("barrier", []), events
    other = tmp_path / "other" / ".tmp-step-00000003"
    other.mkdir(parents=True)
    (other / "rank0").write_text("rank 0's")
    events.clear()
    assert _save(other, model, opt, False, group, events, monkeypatch).finish() is None
    assert events[0] == ("barrier", ["rank0"]) and not [e for e in events if e[0] == "rest"], events


@pytest.mark.claim("FSDP-008")
def test_what_a_sharded_save_wrote_reads_back(tmp_path: Path, one_rank: None, monkeypatch) -> None:
    from albor import dcp_checkpoint as dcpc

    model, opt = _model_and_optimizer(0)
    saved = _by_name(model, opt)
    tmp = tmp_path / ".tmp-step-00000003"
    _save(tmp, model, opt, True, None, [], monkeypatch).finish()
    full = dcpc.full_state(tmp)
    assert full.keys() == {"model", "optimizer"}
    assert full["model"].keys() == saved["model"].keys()
    for k, v in saved["model"].items():
        assert torch.equal(full["model"][k], v), k
    assert full["optimizer"]["state"].keys() == saved["state"].keys(), "keyed by parameter name"
    # Into a plain model and into one sharded on this rank, as a run of either kind resumes or evaluates.
    for load, sharded in itertools.product(("sharded", "full", "full-weights"), (False, True)):
        fresh, fresh_opt = _model_and_optimizer(1, sharded)
        if load == "sharded":
            dcpc.load_sharded(tmp, fresh, fresh_opt)
        else:
            dcpc.load_full(dcpc.full_state(tmp), fresh, fresh_opt if load == "full" else None)
        got = _by_name(fresh, fresh_opt)
        if load == "full-weights":  # the optimizer is left as it was
            untouched = _by_name(*_model_and_optimizer(1, sharded))
            _assert_same({**got, "model": untouched["model"]}, untouched)
            got = {**saved, "model": got["model"]}
        _assert_same(got, saved)


@pytest.mark.claim("FSDP-009")
def test_a_full_state_that_does_not_fit_is_refused(tmp_path: Path, one_rank: None, monkeypatch) -> None:
    from albor import dcp_checkpoint as dcpc

    model, opt = _model_and_optimizer(0)
    tmp = tmp_path / ".tmp-step-00000003"
    _save(tmp, model, opt, True, None, [], monkeypatch).finish()
    for change, with_optimizer, sharded in itertools.product(("missing", "extra"), (True, False), (False, True)):
        full = dcpc.full_state(tmp)
        if change == "missing":  # a checkpoint of a smaller model: the fresh one's last bias would stay as built
            del full["model"]["1.bias"]
        else:
            full["model"]["2.weight"] = torch.ones(3, 3)
        fresh, fresh_opt = _model_and_optimizer(1, sharded)
        before = _by_name(fresh, fresh_opt)["model"]["1.bias"]
        with pytest.raises((KeyError, RuntimeError), match=r"1\.bias" if change == "missing" else r"2\.weight"):
            dcpc.load_full(full, fresh, fresh_opt if with_optimizer else None)
        assert torch.equal(_by_name(fresh, fresh_opt)["model"]["1.bias"], before) or change == "extra"
