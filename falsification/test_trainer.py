"""Falsifiers for the ``trainer`` contract (contracts/trainer.yaml): exact resume, alerts, the
schedule/data check, checkpoint hygiene and the preflight gate, on the real training loop."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch._dynamo.eval_frame import _debug_get_cache_entry_list

from albor import checkpoint as ckpt
from albor.data import load_windows
from albor.data.cursor import DataCursor
from albor.data.fim import SENTINELS
from albor.model import Block, Decoder
from albor.ops import IGNORE_INDEX, rope_tables
from albor.ops.dispatch import Kernels, KernelUnavailable
from albor.optim.lr_schedule import lr_at
from albor.train import preflight
from albor.train.config import TrainConfig, build_config
from albor.train.trainer import Trainer, TrainingAlert, check_schedule_fits, steps_available
from albor.verify.contracts import tolerance
from albor.verify.faults import apply, copy_tree
from albor.verify.layout import GAPS_DIR, ROOT
from albor.verify.numerics import rel_err
from albor.verify.references import training_reference
from falsification.launch import run_on_ranks, train

MAX_STEPS = 8


def small_config(data: Path, runs: Path, **over: object) -> TrainConfig:
    """A seconds-long run of a tiny decoder on the small prepared corpus."""
    base = yaml.safe_load((Path(__file__).parent / "trainer-test.yaml").read_text())
    base["data"] |= {"out": str(data), "source": str(data.parent / "src")}
    base["runs_dir"] = str(runs)
    return build_config(base, [f"{k}={json.dumps(v)}" for k, v in over.items()])


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir: Path) -> list[tuple[int, float, float]]:
    return [(m["step"], m["loss"], m["lr"]) for m in _metrics(run_dir) if m["kind"] == "train"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "checkpoints" / "latest" / "model.safetensors"))


def _uninterrupted(cfg: TrainConfig) -> Path:
    with Trainer(cfg) as trainer:
        trainer.fit()
    return trainer.run_dir


def _samples(run_dir: Path) -> list[tuple[int, str]]:
    return [(m["step"], m["text"]) for m in _metrics(run_dir) if m["kind"] == "sample"]


def _assert_same_run(a: Path, b: Path) -> None:
    assert _losses(a) == _losses(b), "per-step loss or lr trajectory differs"
    assert _samples(a) == _samples(b), "the completions sampled at evaluation differ"
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"final weight {name} differs"


@pytest.mark.claim("TRAIN-001")
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_resume_equals_uninterrupted(small_data: Path, tmp_path: Path, tied: bool) -> None:
    over = {"model.tie_embeddings": tied}
    ref = _uninterrupted(small_config(small_data, tmp_path / "ref", **over))

    cfg = small_config(small_data, tmp_path / "cut", **over)
    with Trainer(cfg) as first:
        first.fit_steps(3)
        first.save()
    with Trainer(cfg, resume=True) as resumed:
        assert resumed.state.step == 3, "resume must restore the step counter"
        assert resumed.state.cursor.step == first.state.cursor.step
        resumed.fit()
    _assert_same_run(ref, resumed.run_dir)
    assert [s for s, _, lr in _losses(resumed.run_dir)] == list(range(1, MAX_STEPS + 1))
    assert all(lr == lr_at(s - 1, cfg.optim) for s, _, lr in _losses(resumed.run_dir))


@pytest.mark.claim("TRAIN-002")
@pytest.mark.slow
@pytest.mark.parametrize("point", ["step", "checkpoint"])
def test_sigkill_then_resume_is_bitwise_identical(small_data: Path, tmp_path: Path, point: str) -> None:
    rng = random.Random(int(os.environ.get("ALBOR_KILL_SEED", "0")))
    # checkpoint_every=2 in the test preset: a kill mid-write must hit a step that saves.
    kill_at = rng.randrange(2, MAX_STEPS, 2) if point == "checkpoint" else rng.randrange(1, MAX_STEPS)
    ref = _uninterrupted(small_config(small_data, tmp_path / "ref"))
    cfg_path = tmp_path / "cut.yaml"
    cfg_path.write_text(small_config(small_data, tmp_path / "cut").to_yaml())
    cmd = [sys.executable, "-m", "albor.train", "--config", str(cfg_path), "--preflight", "off"]
    env = {**os.environ, "ALBOR_CRASH_AT": f"{point}:{kill_at}"}
    killed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert killed.returncode == -9, f"expected SIGKILL at {point}:{kill_at}: {killed.stderr[-2000:]}"
    resumed = subprocess.run([*cmd, "--resume"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(ref, tmp_path / "cut" / "default")


@pytest.mark.claim("TRAIN-003")
def test_schedule_longer_than_data_refused(small_data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"optim\.max_steps=100000 .*ALB-129"):
        Trainer(small_config(small_data, tmp_path, **{"optim.max_steps": 100_000}))
    # At the edge. The cursor runs on across epochs, so the data holds epochs × (whole batches of an epoch) batches,
    # grad_accum to a step; 3 does not divide the 10 batches of an epoch here, so steps straddle epochs.
    over = {"micro_batch": 128, "grad_accum": 3, "epochs": 3}
    per_epoch = len(load_windows(small_data, "train")) // 128
    assert per_epoch % 3, "3 must not divide the batches of an epoch, so that steps straddle epochs"
    batches = per_epoch * 3
    fit = batches // 3
    with pytest.raises(ValueError, match=rf"optim\.max_steps={fit + 1} "):
        Trainer(small_config(small_data, tmp_path / "over", **over, **{"optim.max_steps": fit + 1}))
    trainer = Trainer(small_config(small_data, tmp_path / "edge", **over, **{"optim.max_steps": fit}))
    trainer.fit()
    assert trainer.state.step == fit and trainer.state.cursor.step == batches, (
        "trained to the last batch of the last epoch"
    )


# (windows, micro-batch, world, accumulation, epochs): every epoch's partial global batch is dropped, even where
# the partial batches of many epochs would add up to whole steps, and steps straddle epochs.
SCHEDULES = [(1300, 128, 1, 3, 20), (1300, 64, 2, 1, 7), (999, 10, 3, 4, 11), (120, 40, 1, 1, 1), (79, 40, 1, 1, 5)]


@pytest.mark.claim("TRAIN-003")
@pytest.mark.parametrize(("n", "micro", "world", "accum", "epochs"), SCHEDULES)
def test_steps_available_drop_each_epochs_partial_batch(
    small_data: Path, tmp_path: Path, n: int, micro: int, world: int, accum: int, epochs: int
) -> None:
    over = {"micro_batch": micro, "grad_accum": accum, "epochs": epochs}
    whole = n // (micro * world)  # whole global micro-batches of one epoch, written out
    fit = whole * epochs // accum
    assert type(steps_available(n, small_config(small_data, tmp_path, **over), world)) is int
    assert steps_available(n, small_config(small_data, tmp_path, **over), world) == fit
    check_schedule_fits(n, small_config(small_data, tmp_path, **over, **{"optim.max_steps": fit}), world)
    over_by_one = small_config(small_data, tmp_path, **over, **{"optim.max_steps": fit + 1})
    with pytest.raises(ValueError, match=rf"windows × epochs={epochs}, enough for {fit} steps; "):
        check_schedule_fits(n, over_by_one, world)


@pytest.mark.claim("TRAIN-004")
def test_resume_never_resaves_the_resume_step(small_data: Path, tmp_path: Path) -> None:
    cfg = small_config(small_data, tmp_path)
    with Trainer(cfg) as first:
        first.fit_steps(3)
        saved = first.save()
    before = (saved.stat().st_ino, (saved / "MANIFEST.json").read_text())
    # A file the checkpoint never lists: it survives only if the directory is never removed and written again
    # (an inode number can be reused, and a re-save can write an identical manifest).
    (saved / "witness").write_text("kept")
    with Trainer(cfg, resume=True) as resumed:
        resumed.fit()
    assert saved.is_dir(), "the resume step's checkpoint was removed"
    assert (saved / "witness").is_file(), "the resume step's checkpoint was written again"
    assert (saved.stat().st_ino, (saved / "MANIFEST.json").read_text()) == before


@pytest.mark.claim("TRAIN-008")
def test_resume_after_a_partial_metrics_line(small_data: Path, tmp_path: Path) -> None:
    ref = _uninterrupted(small_config(small_data, tmp_path / "ref"))
    cfg = small_config(small_data, tmp_path / "cut")
    with Trainer(cfg) as first:
        first.fit_steps(3)
        first.save()
        first.fit_steps(1)
    with (first.run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"kind": "train", "step": 5, "lo')  # killed in the middle of an append
    with Trainer(cfg, resume=True) as resumed:
        resumed.fit()
    _assert_same_run(ref, first.run_dir)


@pytest.mark.claim("TRAIN-005")
@pytest.mark.parametrize("cause", ["nan", "grad_norm"])
def test_alert_stops_with_final_checkpoint(small_data: Path, tmp_path: Path, cause: str) -> None:
    over = {"alert_after": 0, "alert_grad_norm": 1e-6} if cause == "grad_norm" else {}
    trainer = Trainer(small_config(small_data, tmp_path, **over))
    if cause == "nan":
        with torch.no_grad():
            trainer.model.norm.fill_(float("nan"))
    with pytest.raises(TrainingAlert, match="non-finite" if cause == "nan" else "grad norm"):
        trainer.fit()
    assert ckpt.list_checkpoints(trainer.checkpoints.root)[-1].name == ckpt.step_dir_name(1)


# Run inside a copy of the tree with a RoPE bug applied: the preflight, narrowed to the RoPE falsifiers (the
# whole battery would include this module and start itself again), must refuse and name the claims.
PREFLIGHT_ON_A_BROKEN_TREE = """
import sys
from pathlib import Path
from albor.train import preflight
real, where = preflight.battery_command, str(preflight.battery_dir())
narrow = lambda xml, fast=True: [f"{where}/test_rope.py" if a == where else a for a in real(xml, fast)]  # noqa: E731
preflight.battery_command = narrow
try:
    preflight.run_preflight(Path(sys.argv[1]), enabled=True)
except preflight.PreflightFailed as e:
    print(e)
    sys.exit(7)
"""


@pytest.mark.claim("TRAIN-006")
@pytest.mark.slow  # a trainer process whose preflight runs the battery in a subprocess
def test_preflight_failure_refuses_and_names_claims(tmp_path: Path) -> None:
    tree = copy_tree(ROOT, tmp_path / "tree")
    apply((GAPS_DIR / "ALB-106" / "rope_disabled.patch").read_text(), tree)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", PREFLIGHT_ON_A_BROKEN_TREE, str(run)]
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 7 and "ROPE-00" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = json.loads((run / "preflight.json").read_text())
    assert record["status"] == "failed" and "ROPE-004" in record["failed_claims"]
    assert all(t.startswith("falsification/test_rope.py::") for t in record["failed_tests"])
    with pytest.warns(UserWarning, match="NOT checked"):
        preflight.run_preflight(tmp_path, enabled=False)
    assert json.loads((tmp_path / "preflight.json").read_text())["status"] == "skipped"


LAUNCHED = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
SEES_NO_JOB = f"""
import os


def test_the_battery_sees_no_distributed_job():
    seen = {{k: os.environ[k] for k in {sorted(LAUNCHED)!r} if k in os.environ}}
    assert not seen and not any(k.startswith("TORCHELASTIC_") for k in os.environ), seen
"""


@pytest.mark.claim("TRAIN-024")
@pytest.mark.slow  # the preflight runs pytest in a subprocess
def test_a_ranks_preflight_battery_is_not_part_of_its_job(tmp_path: Path, monkeypatch) -> None:
    # Rank 0 of a torchrun job runs the preflight; its trainers must not join (or wait for) that job's group.
    for key, value in LAUNCHED.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    check = tmp_path / "test_sees_no_job.py"
    check.write_text(SEES_NO_JOB)
    real = preflight.battery_command
    monkeypatch.setattr(preflight, "battery_command", lambda xml: [*real(xml)[:3], str(check), *real(xml)[4:]])
    record = preflight.run_preflight(tmp_path / "run", enabled=True)
    assert record["status"] == "passed" and record["failed_tests"] == [], record


# A pytest run that sees only albor's core dependencies: a module that only a distribution outside them
# provides cannot be found (the finders answer as if it were not installed), as on `pip install albor`.
ONLY_THE_CORE = """
import json, sys
blocked = frozenset(json.loads(sys.argv.pop(1)))


class CoreOnly:
    def __init__(self, finder):
        self.finder = finder

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            return None
        return self.finder.find_spec(name, path, target)

    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()


sys.meta_path[:] = [CoreOnly(f) for f in sys.meta_path]
import pytest

sys.exit(pytest.main(sys.argv[1:]))
"""


def _core_distributions() -> set[str]:
    """albor and every distribution its core dependencies reach, extras left out, markers evaluated here."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    core: set[str] = set()
    todo: list[tuple[str, frozenset[str]]] = [("albor", frozenset())]
    while todo:
        name, extras = todo.pop()
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            continue  # a dependency this platform does not install
        key = canonicalize_name(name)
        if key in core and not extras:
            continue
        core.add(key)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append((req.name, frozenset(req.extras)))
    return core


@pytest.mark.claim("TRAIN-031")
@pytest.mark.slow  # the preflight runs pytest in a subprocess
def test_the_preflight_battery_collects_on_the_core_dependencies_alone(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from importlib.metadata import PackageNotFoundError, distribution, entry_points, packages_distributions

    from packaging.utils import canonicalize_name

    try:
        distribution("albor")
    except PackageNotFoundError:
        pytest.skip("albor runs from a source tree here, not an install: no install's dependencies to collect on")
    core = _core_distributions()
    assert {"torch", "pytest", "hypothesis"} <= core, core
    blocked = {
        module
        for module, dists in packages_distributions().items()
        if module not in sys.stdlib_module_names and not any(canonicalize_name(d) in core for d in dists)
    }
    # pytest loads the plugins of the core's distributions only, as it would where nothing else is installed.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    plugins = [a for ep in entry_points(group="pytest11") if canonicalize_name(ep.dist.name) in core
               for a in ("-p", ep.value)]  # fmt: skip
    real = preflight.battery_command
    launcher = [sys.executable, "-c", ONLY_THE_CORE, json.dumps(sorted(blocked)), *plugins]
    monkeypatch.setattr(preflight, "battery_command", lambda xml: [*launcher, *real(xml)[3:], "--collect-only"])
    record = preflight.run_preflight(tmp_path / "run", enabled=True)
    assert record["status"] == "passed", record
    # What pytest printed last: "<n>/<m> tests collected (<k> deselected) ...": the fast tier was collected.
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    collected = int(summary.split()[1].split("/")[0])
    assert collected >= 100, summary


@pytest.mark.claim("TRAIN-007")
@pytest.mark.slow
def test_two_ranks_equal_one_rank_accumulating(small_data: Path, tmp_path: Path) -> None:
    one = tmp_path / "one.yaml"
    one.write_text(small_config(small_data, tmp_path / "one", micro_batch=2, grad_accum=2).to_yaml())
    two = tmp_path / "two.yaml"
    two.write_text(small_config(small_data, tmp_path / "two", micro_batch=2, grad_accum=1).to_yaml())
    # Under the launcher's time limit: a rank left waiting on a collective fails the test, not hangs it.
    for nproc, cfg in ((1, one), (2, two)):
        train(cfg, tmp_path, nproc)
    a, b = _losses(tmp_path / "one" / "default"), _losses(tmp_path / "two" / "default")
    assert [s for s, _, _ in a] == [s for s, _, _ in b]
    for (_, la, _), (_, lb, _) in zip(a, b, strict=True):
        assert abs(la - lb) <= 1e-5 * abs(la)
    wa, wb = _weights(tmp_path / "one" / "default"), _weights(tmp_path / "two" / "default")
    for name in wa:
        assert torch.allclose(wa[name], wb[name], rtol=1e-4, atol=1e-6), name


@pytest.mark.claim("TRAIN-009")
@pytest.mark.cuda
def test_memory_budget_recomputes_the_same_steps(small_data: Path, tmp_path: Path) -> None:
    runs = []
    for budget in (1.0, 0.2):
        torch._dynamo.reset()
        over = {"device": "cuda", "compile": True, "activation_memory_budget": budget}
        trainer = Trainer(small_config(small_data, tmp_path / f"budget-{budget}", **over))
        steps = [trainer.train_step() for _ in range(3)]
        weights = {k: v.float().cpu() for k, v in trainer.model.state_dict().items()}
        runs.append(([(m.loss, m.grad_norm) for m in steps], weights))
    (steps_a, weights_a), (steps_b, weights_b) = runs
    tol = tolerance("TRAIN-009", "loss")
    for (loss_a, gn_a), (loss_b, gn_b) in zip(steps_a, steps_b, strict=True):
        assert abs(loss_a - loss_b) <= tol * abs(loss_a) and abs(gn_a - gn_b) <= tol * abs(gn_a), (steps_a, steps_b)
    for name, w in weights_a.items():
        assert rel_err(weights_b[name], w) <= tolerance("TRAIN-009", "weights"), name


@pytest.mark.claim("TRAIN-010")
@pytest.mark.slow  # two runs under torch.compile
def test_each_compiled_run_compiles_its_own_step(small_data: Path, tmp_path: Path) -> None:
    cfg = small_config(small_data, tmp_path / "first")
    earlier = Decoder(cfg.model)
    idx = torch.randint(0, cfg.model.vocab_size, (2, 9), generator=torch.Generator().manual_seed(5))
    torch.compile(earlier, backend="aot_eager")(idx, idx, reduction="sum")
    assert _debug_get_cache_entry_list(Decoder.forward.__code__), "the earlier step should be cached"
    Trainer(small_config(small_data, tmp_path / "second", compile=True, activation_memory_budget=0.5))
    assert not _debug_get_cache_entry_list(Decoder.forward.__code__), "the new run would reuse the earlier step"


@pytest.mark.claim("TRAIN-011")
def test_init_from_starts_from_the_checkpoint_with_a_fresh_optimizer(small_data: Path, tmp_path: Path) -> None:
    base = Trainer(small_config(small_data, tmp_path / "base"))
    base.fit()
    tuned = Trainer(small_config(small_data, tmp_path / "tuned", init_from=str(base.run_dir)))
    saved = _weights(base.run_dir)
    for name, value in tuned.model.state_dict().items():
        if name in saved:
            assert torch.equal(value, saved[name]), f"{name} is not the checkpoint's"
    assert tuned.state.step == 0 and not tuned.state.optimizer.state, "a fine-tune starts at step 0, Adam empty"
    latest = base.checkpoints.root / "latest" / "tokenizer.json"
    assert tuned.cfg.data.tokenizer == latest.resolve() and tuned.tokenizer_path.read_bytes() == latest.read_bytes()
    m = tuned.train_step()
    assert m.step == 1 and m.lr == lr_at(0, tuned.cfg.optim)
    with pytest.raises(ValueError, match=r"model\.n_layers: 2 there, 3 here"):
        Trainer(small_config(small_data, tmp_path / "other", init_from=str(base.run_dir), **{"model.n_layers": 3}))


def _damage(path: Path, how: str) -> None:
    if how == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        path.unlink()


@pytest.mark.claim("TRAIN-012")
@pytest.mark.parametrize(
    ("name", "how"),
    [("optimizer.pt", "truncate"), ("model.safetensors", "flip"), ("state.json", "delete")],
    ids=["truncated-optimizer", "flipped-weights", "deleted-state"],
)
def test_a_corrupt_latest_checkpoint_is_moved_aside_and_the_run_finishes(
    small_data: Path, tmp_path: Path, name: str, how: str
) -> None:
    ref = _uninterrupted(small_config(small_data, tmp_path / "ref"))
    cfg = small_config(small_data, tmp_path / "cut")
    with Trainer(cfg) as first:
        first.fit_steps(4)  # checkpoints at steps 2 and 4 (checkpoint_every=2)
    root = first.checkpoints.root
    _damage(root / ckpt.step_dir_name(4) / name, how)
    with pytest.warns(UserWarning, match="moved corrupt checkpoint step-00000004 aside"), Trainer(cfg, True) as t:
        assert t.state.step == 2, "the resume falls back to the newest checkpoint that verifies"
        t.fit()
    assert (root / f"corrupt-{ckpt.step_dir_name(4)}").is_dir(), "the corrupt checkpoint is kept, named as corrupt"
    assert ckpt.latest_valid(root).name == ckpt.step_dir_name(MAX_STEPS)
    _assert_same_run(ref, first.run_dir)


@pytest.mark.claim("TRAIN-013")
@pytest.mark.slow  # a trainer in a subprocess: seconds of start-up
def test_a_second_trainer_on_a_run_is_refused_with_the_holders_pid(small_data: Path, tmp_path: Path) -> None:
    cfg = small_config(small_data, tmp_path)
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(cfg.to_yaml())
    second = [sys.executable, "-m", "albor.train", "--config", str(cfg_path), "--preflight", "off"]
    with Trainer(cfg) as holder:
        holder.fit_steps(1)
        proc = subprocess.run(second, cwd=tmp_path, capture_output=True, text=True, check=False)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"being written by another trainer (pid {os.getpid()})" in proc.stderr
        assert not (holder.run_dir / "preflight.json").exists(), "the refused trainer wrote nothing into the run"
        holder.fit_steps(1)
    lines = [json.loads(x) for x in (holder.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if r["kind"] == "train"] == [1, 2], "one writer: no step logged twice"
    resumed = subprocess.run([*second, "--resume"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


@pytest.mark.claim("TRAIN-014")
@pytest.mark.parametrize(
    ("override", "field"),
    [("optim.lr=0.01", "optim.lr"), ("data.seq_len=12", "data.seq_len"), ("model.n_layers=3", "model.n_layers")],
)
def test_resume_refuses_config_drift_before_touching_anything(
    small_data: Path, tmp_path: Path, override: str, field: str
) -> None:
    cfg = small_config(small_data, tmp_path)
    with Trainer(cfg) as first:
        first.fit_steps(2)
    run = first.run_dir
    before = {p: p.stat().st_mtime_ns for p in [run / "config.yaml", *small_data.iterdir()]}
    key, value = override.split("=")
    with pytest.raises(ValueError, match=rf"`{field}`: .* in the checkpoint, .* asked for"):
        Trainer(small_config(small_data, tmp_path, **{key: yaml.safe_load(value)}), resume=True)
    assert {p: p.stat().st_mtime_ns for p in before} == before, "nothing was rewritten before the refusal"
    assert not (run / "history.jsonl").read_text().count('"resume"')


@pytest.mark.claim("TRAIN-015")
def test_an_allowed_change_is_recorded_in_the_history_not_over_the_config(small_data: Path, tmp_path: Path) -> None:
    cfg = small_config(small_data, tmp_path)
    with Trainer(cfg) as first:
        first.fit_steps(2)
    started_with = (first.run_dir / "config.yaml").read_text()
    longer = small_config(small_data, tmp_path, **{"optim.max_steps": MAX_STEPS + 2, "eval_every": 5})
    with Trainer(longer, resume=True) as resumed:
        resumed.fit()
    assert resumed.state.step == MAX_STEPS + 2
    assert (first.run_dir / "config.yaml").read_text() == started_with, "config.yaml stays what the run started with"
    events = [json.loads(x) for x in (first.run_dir / "history.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["start", "resume"]
    assert events[1]["changes"] == {"eval_every": [4, 5], "optim.max_steps": [MAX_STEPS, MAX_STEPS + 2]}
    latest = yaml.safe_load((resumed.checkpoints.root / "latest" / "config.yaml").read_text())
    assert latest["optim"]["max_steps"] == MAX_STEPS + 2, "each checkpoint holds the config it was made with"


@pytest.mark.claim("TRAIN-016")
@pytest.mark.slow  # a trainer in a subprocess: seconds of start-up
def test_a_fresh_start_after_a_kill_before_any_checkpoint_logs_each_step_once(small_data: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(small_config(small_data, tmp_path).to_yaml())
    cmd = [sys.executable, "-m", "albor.train", "--config", str(cfg_path), "--preflight", "off"]
    # Killed at step 2 before its first checkpoint (checkpoint_every=2): step 1 is in the log, nothing saved.
    killed = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "ALBOR_CRASH_AT": "step:2"}, capture_output=True)
    assert killed.returncode == -9 and '"step": 1' in (tmp_path / "default" / "metrics.jsonl").read_text()
    assert not (tmp_path / "default" / "checkpoints").exists() or not list(
        (tmp_path / "default" / "checkpoints").iterdir()
    )
    assert subprocess.run(cmd, cwd=tmp_path, capture_output=True, check=False).returncode == 0
    steps = [r["step"] for r in map(json.loads, (tmp_path / "default" / "metrics.jsonl").read_text().splitlines())
             if r["kind"] == "train"]  # fmt: skip
    assert steps == list(range(1, MAX_STEPS + 1))


@pytest.mark.claim("TRAIN-017")
@pytest.mark.slow  # a trainer in a subprocess: seconds of start-up
def test_resume_finds_the_run_under_the_runs_dir_it_is_given(small_data: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(small_config(small_data, elsewhere, **{"optim.max_steps": 4}).to_yaml())
    cmd = [sys.executable, "-m", "albor.train", "--preflight", "off"]
    assert subprocess.run([*cmd, "--config", str(cfg_path)], cwd=tmp_path, capture_output=True).returncode == 0
    resumed = subprocess.run(
        [*cmd, "--resume", f"runs_dir={elsewhere}", "optim.max_steps=6"], cwd=tmp_path, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((elsewhere / "default" / "summary.json").read_text())["steps"] == 6


def _history(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "history.jsonl").read_text().splitlines()]


def _supervised(cfg_path: Path, cwd: Path, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "albor.train", "--supervise", "--config", str(cfg_path), "--preflight", "off"]
    return subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.claim("TRAIN-018")
@pytest.mark.slow
def test_the_supervisor_restarts_a_killed_run_which_then_equals_the_uninterrupted_one(
    small_data: Path, tmp_path: Path
) -> None:
    ref = _uninterrupted(small_config(small_data, tmp_path / "ref"))
    cfg_path = tmp_path / "cut.yaml"
    cfg_path.write_text(small_config(small_data, tmp_path / "cut").to_yaml())
    run_dir = tmp_path / "cut" / "default"
    supervisor = _supervised(cfg_path, tmp_path)
    deadline = time.monotonic() + 120
    # Kill the supervised trainer (its pid is in the run's lock file) once it has logged step 3.
    while not (run_dir / "metrics.jsonl").exists() or '"step": 3' not in (run_dir / "metrics.jsonl").read_text():
        assert time.monotonic() < deadline and supervisor.poll() is None, "the run never reached step 3"
        time.sleep(0.05)
    os.kill(int((run_dir / ".lock").read_text()), signal.SIGKILL)
    assert supervisor.wait(timeout=180) == 0, supervisor.stderr.read().decode()[-3000:]
    events = _history(run_dir)
    assert [e["event"] for e in events] == ["start", "restart", "resume", "supervisor-stop"]
    assert events[1]["exit_code"] == -9 and events[-1]["reason"] == "the run finished"
    _assert_same_run(ref, run_dir)


@pytest.mark.claim("TRAIN-019")
@pytest.mark.slow
@pytest.mark.parametrize("failure", ["repeats", "alert"])
def test_the_supervisor_stops_on_a_repeated_failure_or_an_alert(small_data: Path, tmp_path: Path, failure: str) -> None:
    over = {"alert_after": 0, "alert_grad_norm": 1e-6} if failure == "alert" else {}
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(small_config(small_data, tmp_path, **over).to_yaml())
    env = {"ALBOR_CRASH_AT": "step:3"} if failure == "repeats" else {}
    supervisor = _supervised(cfg_path, tmp_path, **env)
    try:
        code = supervisor.wait(timeout=120)
    finally:
        supervisor.kill()
    events = _history(tmp_path / "default")
    stop = events[-1]
    assert stop["event"] == "supervisor-stop" and code != 0
    if failure == "repeats":
        assert stop["reason"] == "the run died twice after step 2: the failure repeats" and stop["attempts"] == 2
        assert [e["event"] for e in events].count("restart") == 1
    else:
        assert stop["reason"] == "a training alert stopped the run (exit 3)" and code == 3
        assert "restart" not in [e["event"] for e in events]


def _fixed_batch(trainer: Trainer, n: int) -> np.ndarray:
    """``n`` real windows, FIM sentinels among them, the last target of the first two ignored (int64, so that
    IGNORE_INDEX fits): the micro-batches of a step then hold different numbers of targets."""
    windows = trainer.train_windows[:].astype(np.int64)
    fim = [i for i, w in enumerate(windows) if np.isin(w, SENTINELS).any()]
    assert fim, "the small corpus is FIM-transformed at rate 0.5: some window holds a sentinel"
    rest = [i for i in range(len(windows)) if i not in fim[:1]]
    batch = windows[[fim[0], *rest[: n - 1]]].copy()
    batch[:2, -1] = IGNORE_INDEX
    return batch


@pytest.mark.claim("TRAIN-020")
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_step_matches_float64_reference(small_data: Path, tmp_path: Path, tied: bool) -> None:
    assert_steps_match_float64_reference(small_data, tmp_path, "TRAIN-020", **{"model.tie_embeddings": tied})


def assert_steps_match_float64_reference(data: Path, runs: Path, claim: str, **over: object) -> None:
    """Four real trainer steps of two accumulated micro-batches on a fixed batch, clipped, equal the
    hand-written float64 reference's (``albor.verify.references.training_reference``) step by step."""
    over = {"micro_batch": 2, "grad_accum": 2, "optim.grad_clip": 0.05, **over}
    cfg = small_config(data, runs, **over)
    trainer = Trainer(cfg)
    trainer.model.double()  # the parameters stay the optimizer's: only their data changes dtype
    # The model keeps its RoPE tables rounded once to float32; the comparison in float64 needs them exact.
    cos, sin = rope_tables(torch.arange(cfg.data.seq_len), cfg.model.head_dim, cfg.model.rope_theta, torch.float64)
    trainer.model.rope_cos.copy_(cos)
    trainer.model.rope_sin.copy_(sin)
    batch = _fixed_batch(trainer, cfg.micro_batch * cfg.grad_accum)
    # One epoch is one step: every step sees the whole fixed batch, split into micro-batches in a fresh order.
    trainer.train_windows = batch
    trainer.state.cursor = DataCursor(len(batch), cfg.micro_batch, cfg.seed)
    start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    steps = 4
    ref = training_reference(start, cfg.model, cfg.optim, torch.from_numpy(batch), steps)
    tol = tolerance(claim, "float64")
    params = dict(trainer.model.named_parameters())
    for k, want in enumerate(ref):
        start = time.perf_counter()
        got = trainer.train_step()
        wall = time.perf_counter() - start
        assert got.step == k + 1 and got.tokens == (k + 1) * batch[:, :-1].size, f"step {k}: step or tokens seen"
        assert 0 < got.tok_s < math.inf and got.tok_s * wall >= batch[:, :-1].size, "tokens per second of the step"
        assert got.lr == pytest.approx(want.lr, rel=tol), f"step {k}: lr"
        assert got.loss == pytest.approx(want.loss, rel=tol), f"step {k}: loss"
        assert got.grad_norm == pytest.approx(want.grad_norm, rel=tol), f"step {k}: grad norm before clipping"
        assert want.grad_norm > cfg.optim.grad_clip, "the step must clip"
        assert all(p.grad is None for p in params.values()), f"step {k}: gradients left after the step"
        for name, p in params.items():
            assert rel_err(p, want.weights[name]) <= tol, f"step {k}: {name}"
            state = trainer.state.optimizer.state[p]
            assert rel_err(state["exp_avg"], want.exp_avg[name]) <= tol, f"step {k}: first moment of {name}"
            assert rel_err(state["exp_avg_sq"], want.exp_avg_sq[name]) <= tol, f"step {k}: second moment of {name}"


def _draws() -> tuple[float, float, list[float]]:
    """The next number of every RNG the run has: python's, numpy's and torch's."""
    return random.random(), float(np.random.random()), torch.rand(3).tolist()


@pytest.mark.claim("TRAIN-021")
def test_resumed_run_draws_the_same_random_numbers(small_data: Path, tmp_path: Path) -> None:
    ref = _uninterrupted(small_config(small_data, tmp_path / "ref"))
    assert len(_samples(ref)) == 2 and len(set(_samples(ref))) == 2, "evaluations at steps 4 and 8 sample text"
    cfg = small_config(small_data, tmp_path / "cut")
    with Trainer(cfg) as first:
        first.fit_steps(6)  # the checkpoint of step 6 comes after the sample of step 4 drew from the RNG
        assert ckpt.list_checkpoints(first.checkpoints.root)[-1].name == ckpt.step_dir_name(6)
        expected = _draws()
    with Trainer(cfg, resume=True):
        assert _draws() == expected, "after resume the RNGs do not draw what the checkpointed run would have"
    with Trainer(cfg, resume=True) as resumed:
        resumed.fit()
    _assert_same_run(ref, first.run_dir)


@pytest.mark.claim("TRAIN-022")
def test_bf16_runs_the_step_under_autocast(small_data: Path, tmp_path: Path) -> None:
    seen: dict[str, set[torch.dtype]] = {}
    losses = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(small_config(small_data, tmp_path / precision, precision=precision))
        dtypes = seen.setdefault(precision, set())
        trainer.model.blocks[0].ffn.down.register_forward_hook(lambda _m, _i, out, d=dtypes: d.add(out.dtype))
        # autocast's default dtype is float16 on CUDA and bfloat16 on the CPU: with the CPU's set to float16
        # too, only a step that asks for bfloat16 by name runs in it.
        default = torch.get_autocast_dtype(trainer.device.type)
        torch.set_autocast_dtype(trainer.device.type, torch.float16)
        try:
            losses[precision] = trainer.train_step().loss
        finally:
            torch.set_autocast_dtype(trainer.device.type, default)
    assert seen == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}, seen
    assert losses["bf16"] != losses["fp32"], "the same loss in bf16: nothing ran in bf16"
    assert abs(losses["bf16"] - losses["fp32"]) <= tolerance("TRAIN-022", "bfloat16") * losses["fp32"]


@pytest.mark.claim("TRAIN-023")
@pytest.mark.slow  # two ranks under torchrun
def test_a_sharded_run_that_samples_at_evaluation_ends(small_data: Path, tmp_path: Path) -> None:
    cfg_path = tmp_path / "run.yaml"
    over = {"parallel": "fsdp", "micro_batch": 2, "optim.max_steps": 4, "eval_every": 2}
    cfg_path.write_text(small_config(small_data, tmp_path, **over).to_yaml())
    train(cfg_path, tmp_path, 2)
    samples = [m for m in _metrics(tmp_path / "default") if m["kind"] == "sample"]
    assert [m["step"] for m in samples] == [2, 4] and all(m["text"] for m in samples), samples


@pytest.mark.claim("TRAIN-025")
def test_a_sharded_step_synchronises_gradients_on_its_last_micro_batch_only(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gradients come out the same either way (a reduce per micro-batch sums to the same), so what is
    # checked is the switch each micro-batch's forward and backward run under.
    with Trainer(small_config(small_data, tmp_path, parallel="fsdp", grad_accum=3)) as trainer:
        sync = [True]
        set_sync = trainer.model.set_requires_gradient_sync
        monkeypatch.setattr(
            trainer.model, "set_requires_gradient_sync", lambda on, **k: (sync.append(on), set_sync(on, **k))[1]
        )
        seen: list[bool] = []
        trainer.model.register_forward_pre_hook(lambda *_: seen.append(sync[-1]))
        trainer.train_step()
        trainer.train_step()
    assert seen == [False, False, True] * 2, seen


# Each rank counts its micro-batches (the decoder's forwards) and notes, at every bucket DDP hands to its
# all-reduce, which micro-batch's backward it came from.
COUNT_ALL_REDUCES = """
import json, sys
from pathlib import Path
import torch.distributed as dist
import yaml
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from albor.train.config import build_config
from albor.train.trainer import Trainer
cfg_path, out = sys.argv[1:3]
with Trainer(build_config(yaml.safe_load(Path(cfg_path).read_text()), [])) as trainer:
    micro, reduced = [0], []
    trainer.model.register_forward_pre_hook(lambda *_: micro.__setitem__(0, micro[0] + 1))
    def counting(state, bucket):
        reduced.append(micro[0])
        return allreduce_hook(state, bucket)
    trainer.train_model.register_comm_hook(dist.group.WORLD, counting)
    trainer.train_step()
    trainer.train_step()
    Path(out, f"rank-{trainer.dist.rank}.json").write_text(json.dumps(reduced))
"""


@pytest.mark.claim("TRAIN-027")
@pytest.mark.slow  # two ranks under torchrun
def test_a_data_parallel_step_all_reduces_on_its_last_micro_batch_only(small_data: Path, tmp_path: Path) -> None:
    # Gradients come out the same either way (DDP averages each micro-batch's share alike), so what is
    # checked is when the all-reduces happen: in the backward of micro-batches 3 and 6, never before.
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(small_config(small_data, tmp_path, micro_batch=2, grad_accum=3).to_yaml())
    run_on_ranks(COUNT_ALL_REDUCES, tmp_path, 2, str(cfg_path), str(tmp_path))
    for rank in (0, 1):
        reduced = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert reduced and set(reduced) == {3, 6}, f"rank {rank}: all-reduces in micro-batches {reduced}"
        assert reduced.count(3) == reduced.count(6), f"rank {rank}: the two steps reduced {reduced}"


@pytest.mark.claim("TRAIN-030")
def test_leaving_the_process_group_lets_its_threads_take_the_gil(monkeypatch: pytest.MonkeyPatch) -> None:
    # The thread stands for a gloo worker that is ready, once the group is gone, to release the tensors of
    # the collective it has just finished, which takes the GIL. With no forced switching, the GIL changes
    # hands only where the main thread lets it go; shutdown must do so before the interpreter may finalize.
    from albor.train import distributed

    d = distributed.init("cpu", sharded=True)  # a gloo group of one
    gone, released = threading.Event(), threading.Event()
    worker = threading.Thread(target=lambda: (gone.wait(), released.set()))
    worker.start()
    destroy = torch.distributed.destroy_process_group
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: (destroy(), gone.set()))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        distributed.shutdown(d)
        done = released.is_set()
    finally:
        sys.setswitchinterval(interval)
        gone.set()
        worker.join()
    assert not torch.distributed.is_initialized(), "the group outlived shutdown"
    assert done, "shutdown returned before a thread waiting for the GIL could take it"


@pytest.mark.claim("TRAIN-026")
def test_a_steps_mfu_is_its_throughput_over_the_peak(small_data: Path, tmp_path: Path) -> None:
    with Trainer(small_config(small_data, tmp_path)) as trainer:
        off_table = trainer.train_step()
        trainer.peak_flops = 5e12  # as a card in the peak table would set it
        m = trainer.train_step()
        model, cfg = trainer.model, trainer.cfg
    assert (off_table.mfu, off_table.mfu_with_head) == (None, None), "no peak, no MFU"
    c = model.cfg
    # Written out from the parameters themselves: every weight but the embedding and the head, 6 FLOPs each
    # per token, plus attention's 12·L·d·T; the head's 6·V·d where it is counted.
    n = sum(p.numel() for name, p in model.named_parameters() if not name.startswith(("embed.", "head.")))
    flops = 6 * n + 12 * c.n_layers * c.d_model * cfg.data.seq_len
    assert m.mfu == pytest.approx(m.tok_s * flops / 5e12, rel=1e-12)
    assert m.mfu_with_head == pytest.approx(m.tok_s * (flops + 6 * c.vocab_size * c.d_model) / 5e12, rel=1e-12)


@pytest.mark.claim("TRAIN-028")
@pytest.mark.slow  # an eager run and a compiled one
def test_block_scope_compiles_one_block_for_every_block(small_data: Path, tmp_path: Path) -> None:
    torch._dynamo.reset()
    eager = Trainer(small_config(small_data, tmp_path / "eager", eval_every=3))
    steps_a = [eager.train_step() for _ in range(3)]
    over = {"compile": True, "compile_scope": "block", "eval_every": 3, "eval_windows": 3, "eval_sample_tokens": 4}
    blocks = Trainer(small_config(small_data, tmp_path / "block", **over))
    assert blocks.train_model is blocks.model, "block scope leaves the decoder itself as the step's module"
    blocks.fit_steps(3)  # steps 1..3, then the evaluation and the sample at step 3
    # One entry on the block's call: its forward and backward, traced once, serve both blocks; the
    # evaluation (eval mode, no grad) and the sample (a KV cache) ran eagerly and left none of their own.
    entries = _debug_get_cache_entry_list(Block.forward.__code__)
    assert len(entries) == 1, f"{len(entries)} compiled graphs of a block, not 1"
    assert not _debug_get_cache_entry_list(Decoder.forward.__code__), "block scope compiled the whole forward"
    records = _metrics(blocks.run_dir)
    assert [r["kind"] for r in records] == ["train"] * 3 + ["eval", "sample"]
    for a, b in zip(steps_a, records[:3], strict=True):
        assert abs(a.loss - b["loss"]) <= tolerance("TRAIN-028", "loss") * abs(a.loss), (steps_a, records[:3])
    weights = eager.model.state_dict()
    for name, w in blocks.model.state_dict().items():
        assert rel_err(w, weights[name]) <= tolerance("TRAIN-028", "weights"), name


@pytest.mark.claim("TRAIN-029")
def test_the_kernels_are_checked_while_the_data_is_prepared(
    small_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from albor.train import trainer as trainer_module

    real_prepare, real_kernels = trainer_module.prepare_config, trainer_module.Kernels
    preparing, checked = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    # Each side waits for the other: run one after the other, the first of them times out.
    def prepare(data: object) -> None:
        preparing.set()
        seen["the check ended while the data was being prepared"] = checked.wait(10)
        real_prepare(data)

    def kernels(*args: object) -> Kernels:
        seen["the check ran once the preparation had begun"] = preparing.wait(10)
        table = real_kernels(*args)
        checked.set()
        return table

    monkeypatch.setattr(trainer_module, "prepare_config", prepare)
    monkeypatch.setattr(trainer_module, "Kernels", kernels)
    with Trainer(small_config(small_data, tmp_path / "overlap")) as trainer:
        assert isinstance(trainer.kernels, Kernels)
        trainer.fit_steps(1)
    assert seen == dict.fromkeys(seen, True) and len(seen) == 2, seen
    parts = json.loads((trainer.run_dir / "run.json").read_text())["setup_s"]
    assert {"data", "kernels", "model"} <= parts.keys(), parts

    # What either side raises stops the run, named, and leaves the run free for the next trainer.
    def unusable(*args: object) -> Kernels:
        raise KernelUnavailable("op 'rmsnorm': the triton backend is unusable: a planted failure")

    def bad_data(data: object) -> None:
        raise ValueError("corpus: a planted preparation failure")

    cfg = small_config(small_data, tmp_path / "failing")
    for target, fake, error in [("Kernels", unusable, "rmsnorm"), ("prepare_config", bad_data, "planted preparation")]:
        monkeypatch.setattr(trainer_module, "prepare_config", real_prepare)
        monkeypatch.setattr(trainer_module, "Kernels", real_kernels)
        monkeypatch.setattr(trainer_module, target, fake)
        with pytest.raises((KernelUnavailable, ValueError), match=error):
            Trainer(cfg)
    monkeypatch.setattr(trainer_module, "prepare_config", real_prepare)
    with Trainer(cfg) as trainer:
        trainer.fit_steps(1)
