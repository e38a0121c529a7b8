"""Falsifiers for the ``checkpoint`` contract (contracts/checkpoint.yaml)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

from albor import checkpoint as ckpt
from albor.config import ModelConfig, OptimConfig
from albor.data.synthetic import tiny_tokenizer
from albor.dcp_checkpoint import begin_save
from albor.ladder.lora import LoraSettings, add_lora, lora_layers
from albor.model import Decoder
from albor.optim.adamw import build_optimizer
from albor.train import distributed, fsdp

SMALL = dict(name="t", n_layers=2, d_model=24, n_heads=4, n_kv_heads=2, d_ff=40, vocab_size=61, max_seq_len=16)
OPTIM = OptimConfig(warmup_steps=1, max_steps=10)


def _tokenizer(tmp: Path) -> Path:
    """The tiny tokenizer written to ``tmp/tokenizer.json``, as a run keeps it beside its checkpoints."""
    tok = tmp / "tokenizer.json"
    tiny_tokenizer().save(str(tok))
    return tok


def _sharded() -> Decoder:
    """A fresh SMALL decoder sharded with FSDP2 on the CPU (inside a process group)."""
    model = Decoder(ModelConfig(**SMALL))
    fsdp.shard(model, model.blocks, torch.device("cpu"), bf16=False)
    return model


def _trained(tied: bool = False, seed: int = 0) -> tuple[Decoder, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = Decoder(ModelConfig(**SMALL, tie_embeddings=tied))
    opt = build_optimizer(model, OPTIM)
    x = torch.randint(0, 61, (3, 9))
    for _ in range(2):
        model(x, x).backward()
        opt.step()
        opt.zero_grad()
    return model, opt


def _save(root: Path, step: int, model: Decoder, opt: torch.optim.Optimizer, tmp: Path) -> Path:
    tok = _tokenizer(tmp)
    config = yaml.safe_dump({"model": model.cfg.model_dump()})
    return ckpt.save_checkpoint(
        root, step, model=model, optimizer=opt, state={"step": step}, config_yaml=config, tokenizer_path=tok
    )


def _manager(tmp: Path, model: Decoder, keep_last: int) -> tuple[Path, ckpt.CheckpointManager]:
    """``tmp/checkpoints`` and a manager of it, with the model's config and a tokenizer."""
    tok = _tokenizer(tmp)
    root = tmp / "checkpoints"
    return root, ckpt.CheckpointManager(root, keep_last, yaml.safe_dump({"model": model.cfg.model_dump()}), tok)


def _same_optimizer_state(a: dict, b: dict) -> bool:
    if a["state"].keys() != b["state"].keys() or a["param_groups"] != b["param_groups"]:
        return False
    return all(torch.equal(a["state"][k][n], b["state"][k][n]) for k in a["state"] for n in a["state"][k])


@pytest.mark.claim("CKPT-001")
def test_round_trip_bitwise(tmp_path: Path) -> None:
    model, opt = _trained()
    path = _save(tmp_path / "ckpts", 7, model, opt, tmp_path)
    fresh, _ = _trained(seed=1)
    fresh_opt = build_optimizer(fresh, OPTIM)
    state = ckpt.load_checkpoint(path, fresh, fresh_opt)
    assert state == {"step": 7}
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert _same_optimizer_state(opt.state_dict(), fresh_opt.state_dict())


@pytest.mark.claim("CKPT-001")
def test_tied_head_round_trip(tmp_path: Path) -> None:
    model, opt = _trained(tied=True)
    path = _save(tmp_path / "ckpts", 3, model, opt, tmp_path)
    loaded = ckpt.load_for_inference(path).model
    assert loaded.head is None
    assert torch.equal(loaded.embed.weight, model.embed.weight)
    x = torch.randint(0, 61, (2, 5))
    assert torch.equal(loaded(x), model.eval()(x))


@pytest.mark.claim("CKPT-002")
@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_corruption_detected(tmp_path: Path, damage: str) -> None:
    model, opt = _trained()
    path = _save(tmp_path / "ckpts", 1, model, opt, tmp_path)
    target = path / "optimizer.pt"
    data = target.read_bytes()
    if damage == "flip":
        target.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "truncate":
        target.write_bytes(data[: len(data) // 2])
    else:
        target.unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"optimizer\.pt"):
        ckpt.load_checkpoint(path, model, opt)


@pytest.mark.claim("CKPT-003")
@pytest.mark.slow  # a writer process killed mid-save
@pytest.mark.parametrize("point", ["checkpoint", "link"])
def test_killed_write_leaves_previous_latest(tmp_path: Path, point: str) -> None:
    root = tmp_path / "ckpts"
    model, opt = _trained()
    first = _save(root, 1, model, opt, tmp_path)
    repo = str(Path(__file__).parents[1])
    script = (
        f"import sys; sys.path.insert(0, {repo!r})\n"
        "from pathlib import Path\n"
        "from falsification.test_checkpoint import _trained, _save\n"
        f"m, o = _trained(); _save(Path({str(root)!r}), 2, m, o, Path({str(tmp_path)!r}))\n"
    )
    env = {**os.environ, "ALBOR_CRASH_AT": f"{point}:2"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, check=False)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (root / "latest").resolve() == first.resolve(), "latest moves only after the checkpoint is in place"
    if point == "checkpoint":
        assert [p.name for p in ckpt.list_checkpoints(root)] == [first.name]
        assert ckpt.latest_valid(root) == first
    else:  # killed after the rename: the checkpoint is whole, and resume takes it
        assert [p.name for p in ckpt.list_checkpoints(root)] == [first.name, "step-00000002"]
        assert ckpt.latest_valid(root) == root / "step-00000002"


@pytest.mark.claim("CKPT-004")
def test_latest_valid_skips_corrupt(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    model, opt = _trained()
    good = _save(root, 1, model, opt, tmp_path)
    bad = _save(root, 2, model, opt, tmp_path)
    (bad / "model.safetensors").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=bad.name):
        assert ckpt.latest_valid(root) == good


@pytest.mark.claim("CKPT-005")
def test_prune_keeps_last_and_best(tmp_path: Path) -> None:
    root = tmp_path / "ckpts"
    model, opt = _trained()
    paths = [_save(root, s, model, opt, tmp_path) for s in (1, 2, 3, 4, 5)]
    ckpt.set_link(root / "best", paths[1].name)
    ckpt.prune(root, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(root)] == [paths[i].name for i in (1, 3, 4)]


# Run inside a private mount namespace whose checkpoint folder is a small tmpfs: the first save fits,
# the second finds the disk full.
DISK_FULL = """
import json, sys
from pathlib import Path
from albor import checkpoint as ckpt
from falsification.test_checkpoint import _save, _trained
root, tmp = Path(sys.argv[1]), Path(sys.argv[2])
m, o = _trained()
first = _save(root, 1, m, o, tmp)
try:
    _save(root, 2, m, o, tmp)
    error = None
except ckpt.CheckpointError as e:
    error = str(e)
print(json.dumps({"error": error, "left": sorted(p.name for p in root.iterdir()),
                  "latest": ckpt.latest_valid(root).name, "first": first.name}))
"""


@pytest.mark.claim("CKPT-006")
@pytest.mark.slow  # a save onto a filesystem that fills up
def test_a_full_disk_fails_the_save_cleanly_and_says_so(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a small tmpfs in a private mount namespace")
    model, opt = _trained()
    size = sum(f.stat().st_size for f in _save(tmp_path / "probe", 1, model, opt, tmp_path).iterdir())
    root = tmp_path / "ckpts"
    root.mkdir()
    mount = f"mount -t tmpfs -o size={int(size * 1.6)} tmpfs {root}"
    repo = str(Path(__file__).parents[1])
    run = f'{mount} && PYTHONPATH="{repo}:$PYTHONPATH" "{sys.executable}" -c "$0" {root} {tmp_path}'
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", run, DISK_FULL],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0 and "mount" in proc.stderr and "tmpfs" not in proc.stdout:
        pytest.skip(f"this machine allows no private tmpfs: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["error"] and "the disk is full" in out["error"] and "step 2" in out["error"], out
    assert not [n for n in out["left"] if n.startswith(".tmp-")], "the partial checkpoint must not stay"
    assert out["latest"] == out["first"], "the earlier checkpoint stands and is the one to resume from"


# The layout DESIGN.md declares ("Checkpoint layout"), which resume tooling, users' scripts and the book's
# training log read: written out here, not taken from albor.checkpoint's own names.
DECLARED_FILES = {"model.safetensors", "optimizer.pt", "state.json", "config.yaml", "tokenizer.json", "MANIFEST.json"}


@pytest.mark.claim("CKPT-007")
def test_the_layout_is_the_declared_one(tmp_path: Path) -> None:
    model, opt = _trained()
    root, manager = _manager(tmp_path, model, 3)
    manager.save(800, model, opt, {"step": 800})
    manager.mark_best(800)
    manager.save(1000, model, opt, {"step": 1000})
    assert sorted(p.name for p in root.iterdir()) == ["best", "latest", "step-00000800", "step-00001000"]
    assert os.readlink(root / "latest") == "step-00001000" and os.readlink(root / "best") == "step-00000800"
    step = root / "step-00001000"
    assert {p.name for p in step.iterdir()} == DECLARED_FILES
    manifest = json.loads((step / "MANIFEST.json").read_text())
    assert manifest == {
        n: hashlib.sha256((step / n).read_bytes()).hexdigest() for n in DECLARED_FILES - {"MANIFEST.json"}
    }


@pytest.mark.claim("CKPT-008")
def test_a_save_that_fails_after_the_weights_leaves_nothing_behind(tmp_path: Path) -> None:
    model, opt = _trained()
    root = tmp_path / "ckpts"
    first = _save(root, 1, model, opt, tmp_path)
    config = yaml.safe_dump({"model": model.cfg.model_dump()})
    # The weights are written; copying the tokenizer, the next part of the checkpoint, fails.
    with pytest.raises(ckpt.CheckpointError, match="saving step 2 failed, the write failed") as e:
        ckpt.save_checkpoint(
            root, 2, model=model, optimizer=opt, state={"step": 2}, config_yaml=config, tokenizer_path=tmp_path / "none"
        )
    assert "FileNotFoundError" in str(e.value) and isinstance(e.value.__cause__, FileNotFoundError)
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000001"], "the partial folder stayed"
    assert os.readlink(root / "latest") == first.name
    ckpt.verify(first)


@pytest.mark.claim("CKPT-008")
def test_a_step_is_never_saved_twice(tmp_path: Path) -> None:
    model, opt = _trained()
    root = tmp_path / "ckpts"
    first = _save(root, 1, model, opt, tmp_path)
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    other, other_opt = _trained(seed=1)
    with pytest.raises(ckpt.CheckpointError, match="step-00000001 exists already"):
        _save(root, 1, other, other_opt, tmp_path)
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000001"]


@pytest.mark.claim("CKPT-009")
def test_an_unsharded_checkpoint_loads_into_a_sharded_model(tmp_path: Path) -> None:
    model, opt = _trained()
    tok = _tokenizer(tmp_path)
    config = yaml.safe_dump({"model": model.cfg.model_dump(), "optim": OPTIM.model_dump()})
    path = ckpt.save_checkpoint(
        tmp_path / "ckpts", 3, model=model, optimizer=opt, state={"step": 3}, config_yaml=config, tokenizer_path=tok
    )
    full = StateDictOptions(full_state_dict=True)
    group = distributed.init("cpu", sharded=True)  # a process group of one, as an FSDP run on one process has
    try:
        torch.manual_seed(1)
        sharded = _sharded()
        sharded_opt = build_optimizer(sharded, OPTIM)
        assert ckpt.load_checkpoint(path, sharded, sharded_opt) == {"step": 3}
        weights, moments = get_state_dict(sharded, sharded_opt, options=full)
        _, saved_moments = get_state_dict(model, opt, options=full)
        evaluated = _sharded()  # weights only, as evaluating a sharded model loads them
        assert ckpt.load_checkpoint(path, evaluated, None) == {"step": 3}
        evaluated_weights, _ = get_state_dict(evaluated, build_optimizer(evaluated, OPTIM), options=full)
    finally:
        distributed.shutdown(group)
    assert weights.keys() == model.state_dict().keys() == evaluated_weights.keys()
    for name, w in model.state_dict().items():
        assert torch.equal(weights[name], w) and torch.equal(evaluated_weights[name], w), name
    assert moments["state"].keys() == saved_moments["state"].keys()
    for name, state in saved_moments["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(moments["state"][name][key]), torch.as_tensor(value)), (name, key)


def _corrupt(path: Path) -> None:
    data = bytearray((path / "state.json").read_bytes())
    data[0] ^= 0x20
    (path / "state.json").write_bytes(bytes(data))


@pytest.mark.claim("CKPT-010")
def test_any_path_of_a_run_resolves_to_its_newest_valid_checkpoint(tmp_path: Path) -> None:
    model, opt = _trained()
    run = tmp_path / "run"
    root = run / "checkpoints"
    first, second = (_save(root, step, model, opt, tmp_path) for step in (1, 2))
    _corrupt(second)
    with pytest.warns(UserWarning, match=second.name):
        assert ckpt.resolve(run) == first.resolve()
    with pytest.warns(UserWarning, match=second.name):
        assert ckpt.resolve(root) == first.resolve()
    assert ckpt.resolve(second) == second.resolve(), "a checkpoint named directly is that checkpoint"
    copied = shutil.copytree(first, tmp_path / "kept")
    assert ckpt.resolve(copied) == copied.resolve(), "so is one copied under a name of its own"
    with pytest.raises(ckpt.CheckpointError, match=r"none: no such checkpoint or run directory"):
        ckpt.resolve(tmp_path / "none")
    _corrupt(first)
    with (
        pytest.warns(UserWarning),
        pytest.raises(ckpt.CheckpointError, match=r"run: holds no checkpoint that verifies"),
    ):
        ckpt.resolve(run)


@pytest.mark.claim("CKPT-010")
def test_recover_moves_every_newer_corrupt_checkpoint_aside(tmp_path: Path) -> None:
    model, opt = _trained()
    root, manager = _manager(tmp_path, model, 5)
    good, bad, worse = (manager.save(step, model, opt, {"step": step}) for step in (1, 2, 3))
    manager.mark_best(3)
    (root / "corrupt-step-00000003").mkdir()  # an earlier recovery's leftover holds the first name
    _corrupt(bad)
    _corrupt(worse)
    with pytest.warns(UserWarning) as seen:
        assert manager.recover() == good
    said = " ".join(str(w.message) for w in seen)
    assert (
        "step-00000003 aside to corrupt-step-00000003-2" in said
        and "step-00000002 aside to corrupt-step-00000002" in said
    )
    names = sorted(p.name for p in root.iterdir())
    assert names == [
        "corrupt-step-00000002",
        "corrupt-step-00000003",
        "corrupt-step-00000003-2",
        "latest",
        "step-00000001",
    ]
    assert os.readlink(root / "latest") == good.name, "latest names the checkpoint recovered"
    assert manager.latest() == good and manager.any()
    assert manager.load(good, *_trained(seed=1)) == {"step": 1}
    # A second save of the steps moved aside is possible again, and none is ever listed.
    assert manager.save(2, model, opt, {"step": 2}).name == "step-00000002"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step-00000001", "step-00000002"]


@pytest.mark.claim("CKPT-011")
def test_a_checkpoint_loads_for_inference_with_its_own_tokenizer(tmp_path: Path) -> None:
    model, opt = _trained()
    tok = _tokenizer(tmp_path)
    config = yaml.safe_dump({"model": model.cfg.model_dump()})
    data = tmp_path / "data"
    path = ckpt.save_checkpoint(
        tmp_path / "run" / "checkpoints",
        4,
        model=model,
        optimizer=opt,
        state={"step": 4, "data_dir": str(data)},
        config_yaml=config,
        tokenizer_path=tok,
    )
    inf = ckpt.load_for_inference(tmp_path / "run")
    assert inf.path == path.resolve() and inf.data_dir == data and inf.model_config == model.cfg
    assert not inf.model.training, "loaded for inference: eval mode"
    assert next(inf.model.parameters()).device.type == "cpu"
    for (name, a), b in zip(model.state_dict().items(), inf.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert inf.tokenizer.to_str() == tiny_tokenizer().to_str()
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9))
    model.eval()
    with torch.no_grad():
        assert torch.equal(inf.model(ids), model(ids))
    no_data = ckpt.save_checkpoint(
        tmp_path / "other", 1, model=model, optimizer=opt, state={"step": 1}, config_yaml=config, tokenizer_path=tok
    )
    assert ckpt.load_for_inference(no_data).data_dir is None


def _refuse_to_remove(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """A filesystem that will not delete files called ``name`` (as one gone read-only under a save would)."""
    unlink = os.unlink

    def refusing(path: str | Path, *args: object, **kwargs: object) -> None:
        if os.fspath(path).endswith(name):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", refusing)


MIB = 1 << 20


def _fail_optimizer_write(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """torch.save (the optimizer state, after the weights) fails with ``code``."""

    def failing(*_a: object, **_k: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", failing)


REMEDY = " and the earlier ones are intact: free space, then --resume"


@pytest.mark.claim("CKPT-012")
@pytest.mark.parametrize(
    ("code", "free", "why"),
    [
        (errno.ENOSPC, 10 << 30, "the disk is full"),
        (errno.EDQUOT, 10 << 30, "the disk is full"),
        (errno.EIO, MIB - 1, "the disk is full"),
        (errno.EIO, MIB, "the write failed"),
        (errno.EIO, 3 * MIB // 2, "the write failed"),
    ],
)
def test_a_failed_save_says_whether_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, free: int, why: str
) -> None:
    model, opt = _trained()
    root = tmp_path / "ckpts"
    first = _save(root, 1, model, opt, tmp_path)
    usage = shutil.disk_usage(root)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=free))
    _fail_optimizer_write(monkeypatch, code)
    with pytest.raises(ckpt.CheckpointError) as e:
        _save(root, 2, model, opt, tmp_path)
    assert str(e.value) == (
        f"{root}: saving step 2 failed, {why} (OSError: [Errno {code}] {os.strerror(code)}; {free:,} bytes free); "
        f"the partial checkpoint was removed{REMEDY}"
    )
    assert sorted(p.name for p in root.iterdir()) == ["latest", first.name]


@pytest.mark.claim("CKPT-012")
@pytest.mark.parametrize("stage", ["weights", "rest"])
def test_a_failed_save_whose_folder_cannot_be_removed_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    model, opt = _trained()
    root = tmp_path / "ckpts"
    first = _save(root, 1, model, opt, tmp_path)
    config = yaml.safe_dump({"model": model.cfg.model_dump()})
    tok = tmp_path / "tokenizer.json"
    if stage == "weights":  # optimizer.pt fails, after model.safetensors is written
        _fail_optimizer_write(monkeypatch, errno.EIO)
    else:  # the tokenizer, after both weight files
        tok = tmp_path / "none"
    _refuse_to_remove(monkeypatch, "model.safetensors")
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.save_checkpoint(root, 2, model=model, optimizer=opt, state={}, config_yaml=config, tokenizer_path=tok)
    assert isinstance(e.value.__cause__, OSError) and not isinstance(e.value.__cause__, PermissionError)
    kept = "the partial checkpoint .tmp-step-00000002 could not be removed (it is never loaded)"
    assert str(e.value).endswith(kept + REMEDY)
    monkeypatch.undo()
    assert ckpt.list_checkpoints(root) == [first] and ckpt.latest_valid(root) == first


@pytest.mark.claim("CKPT-013")
def test_stale_partial_folders_never_reach_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, opt = _trained()
    root, manager = _manager(tmp_path, model, 3)
    manager.save(1, model, opt, {"step": 1})
    # Partial folders of crashed saves: one of the step about to be saved, one of another step.
    for step in (2, 7):
        stale = root / f".tmp-step-{step:08d}"
        stale.mkdir()
        (stale / "junk.bin").write_bytes(b"from a crashed save")
    second = manager.save(2, model, opt, {"step": 2})
    assert {p.name for p in second.iterdir()} == DECLARED_FILES
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-00000001", "step-00000002"], "pruned"
    # A stale folder that cannot be wholly removed does not fail the save that prunes it.
    stale = root / ".tmp-step-00000009"
    stale.mkdir()
    (stale / "junk.bin").write_bytes(b"undeletable")
    _refuse_to_remove(monkeypatch, "junk.bin")
    third = manager.save(3, model, opt, {"step": 3})
    monkeypatch.undo()
    assert ckpt.latest_valid(root) == third and stale.is_dir()


@pytest.mark.claim("CKPT-014")
def test_a_manifest_unreadable_or_incomplete_is_refused(tmp_path: Path) -> None:
    model, opt = _trained()
    path = _save(tmp_path / "ckpts", 1, model, opt, tmp_path)
    manifest = path / "MANIFEST.json"
    sealed = json.loads(manifest.read_text())
    manifest.write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match=rf"^{manifest}: unreadable manifest \(Expecting"):
        ckpt.verify(path)
    for dropped in ("model.safetensors", "optimizer.pt", "state.json", "config.yaml", "tokenizer.json"):
        manifest.write_text(json.dumps({k: v for k, v in sealed.items() if k != dropped}))
        with pytest.raises(ckpt.CheckpointError, match=rf"^{manifest}: manifest lacks \['{dropped}'\]$"):
            ckpt.verify(path)


def _sharded_save(root: Path, step: int, model: Decoder, opt: torch.optim.Optimizer, config: str, tok: Path) -> Path:
    """Step ``step`` of a sharded run on one process, through the calls a sharded trainer makes."""
    tmp = ckpt.new_checkpoint_dir(root, step)
    pending = begin_save(
        tmp, step, model, opt, lambda t: ckpt.complete(t, step, {"step": step}, config, tok), True, lambda: None, None
    )
    path = pending.finish()
    assert path is not None
    return path


@pytest.mark.claim("CKPT-014")
def test_a_sharded_checkpoint_verifies_and_loads_into_either_kind_of_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tok = _tokenizer(tmp_path)
    config = yaml.safe_dump({"model": ModelConfig(**SMALL).model_dump(), "optim": OPTIM.model_dump()})
    synced: list[Path] = []
    fsync_dir = ckpt.fsync_dir
    monkeypatch.setattr(ckpt, "fsync_dir", lambda p: synced.append(Path(p)) or fsync_dir(p))
    full = StateDictOptions(full_state_dict=True)
    group = distributed.init("cpu", sharded=True)
    try:

        def sharded_model(seed: int) -> tuple[Decoder, torch.optim.Optimizer]:
            torch.manual_seed(seed)
            m = _sharded()
            o = build_optimizer(m, OPTIM)
            x = torch.randint(0, SMALL["vocab_size"], (3, 9))
            m(x, x).backward()
            o.step()
            o.zero_grad()
            return m, o

        model, opt = sharded_model(0)
        path = _sharded_save(tmp_path / "ckpts", 5, model, opt, config, tok)
        ckpt.verify(path)
        tmp = tmp_path / "ckpts" / ".tmp-step-00000005"
        assert {tmp, tmp / "dcp"} <= set(synced), "every folder of the checkpoint is fsynced before the rename"
        saved_weights, saved_moments = get_state_dict(model, opt, options=full)
        into, into_opt = sharded_model(1)
        assert ckpt.load_checkpoint(path, into, into_opt) == {"step": 5}
        weights, moments = get_state_dict(into, into_opt, options=full)
        evaluated, evaluated_opt = sharded_model(2)  # weights only, as evaluation of a sharded model loads them
        assert ckpt.load_checkpoint(path, evaluated, None) == {"step": 5}
        evaluated_weights, _ = get_state_dict(evaluated, evaluated_opt, options=full)
    finally:
        distributed.shutdown(group)
    for name, w in saved_weights.items():
        assert torch.equal(weights[name], w) and torch.equal(evaluated_weights[name], w), name
    for name, state in saved_moments["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(moments["state"][name][key]), torch.as_tensor(value)), (name, key)
    plain = Decoder(ModelConfig(**SMALL))
    assert ckpt.load_checkpoint(path, plain, None) == {"step": 5}
    for name, w in plain.state_dict().items():
        assert torch.equal(w, saved_weights[name]), name


@pytest.mark.claim("CKPT-015")
def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    # A tied model's weights under a config that says untied: the head's tensor is missing, and neither a
    # plain nor a sharded model may take the rest and keep its own random head.
    model, opt = _trained(tied=True)
    tok = _tokenizer(tmp_path)
    untied = {"model": ModelConfig(**SMALL, tie_embeddings=False).model_dump(), "optim": OPTIM.model_dump()}
    path = ckpt.save_checkpoint(
        tmp_path / "ckpts", 1, model=model, optimizer=opt, state={}, config_yaml=yaml.safe_dump(untied),
        tokenizer_path=tok,
    )  # fmt: skip
    cause = r"does not fit the model: (SafetensorError|RuntimeError|KeyError|ValueError): \S"
    with pytest.raises(ckpt.CheckpointError, match=rf"^{path}: {cause}"):
        ckpt.load_checkpoint(path, Decoder(ModelConfig(**SMALL)), None)
    group = distributed.init("cpu", sharded=True)
    try:
        sharded = _sharded()
        with pytest.raises(ckpt.CheckpointError, match=rf"^{path}: {cause}"):
            ckpt.load_checkpoint(path, sharded, None)
    finally:
        distributed.shutdown(group)


class _Payload:
    """Pickles as a call that creates a file: what a crafted optimizer.pt could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


class _CraftedOptimizer:
    """Hands save_checkpoint a state dict holding the payload, so the manifest seals it like any other."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def state_dict(self) -> dict:
        return {"state": {0: {"exp_avg": _Payload(self.marker)}}, "param_groups": []}


@pytest.mark.claim("CKPT-015")
def test_a_pickled_payload_in_the_optimizer_state_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch's own default refuses such a payload, unless the environment relaxes that default: the loader
    # must refuse it whatever the environment says.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    model, _ = _trained()
    tok = _tokenizer(tmp_path)
    marker = tmp_path / "payload-ran"
    config = yaml.safe_dump({"model": model.cfg.model_dump(), "optim": OPTIM.model_dump()})
    path = ckpt.save_checkpoint(
        tmp_path / "ckpts", 1, model=model, optimizer=_CraftedOptimizer(marker), state={}, config_yaml=config,
        tokenizer_path=tok,
    )  # fmt: skip
    marker.unlink(missing_ok=True)  # pickling does not run it; only loading may
    with pytest.raises(ckpt.CheckpointError, match=rf"^{path}: does not fit the model: UnpicklingError"):
        ckpt.load_checkpoint(path, model, build_optimizer(model, OPTIM))
    assert not marker.exists(), "loading optimizer.pt ran code it held"
    group = distributed.init("cpu", sharded=True)
    try:
        sharded = _sharded()
        with pytest.raises(ckpt.CheckpointError, match="UnpicklingError"):
            ckpt.load_checkpoint(path, sharded, build_optimizer(sharded, OPTIM))
    finally:
        distributed.shutdown(group)
    assert not marker.exists(), "loading optimizer.pt into a sharded model ran code it held"


@pytest.mark.claim("CKPT-010")
def test_recovery_without_a_best_link_resumes_weights_and_optimizer(tmp_path: Path) -> None:
    model, opt = _trained()
    root, manager = _manager(tmp_path, model, 5)
    good = manager.save(1, model, opt, {"step": 1})
    _corrupt(manager.save(2, *_trained(seed=2), {"step": 2}))
    with pytest.warns(UserWarning, match="step-00000002 aside"):
        assert manager.recover() == good
    assert not (root / "best").exists() and os.readlink(root / "latest") == good.name
    fresh, _ = _trained(seed=1)
    fresh_opt = build_optimizer(fresh, OPTIM)
    assert manager.load(good, fresh, fresh_opt) == {"step": 1}
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert _same_optimizer_state(opt.state_dict(), fresh_opt.state_dict()), "resume restores the optimizer too"


@pytest.mark.claim("CKPT-011")
def test_a_lora_runs_checkpoint_loads_merged_on_the_device_asked(tmp_path: Path) -> None:
    pytest.importorskip("peft", reason="LoRA needs peft (albor[ladder])")
    model, _ = _trained()
    settings = LoraSettings(r=2, alpha=4.0)
    add_lora(model, settings)
    torch.manual_seed(3)
    for _, layer in lora_layers(model):  # trained adapters: B no longer zero
        for p in layer.lora_B.parameters():
            torch.nn.init.normal_(p, std=0.5)
    tok = _tokenizer(tmp_path)
    config = yaml.safe_dump({"model": model.cfg.model_dump(), "lora": settings.model_dump()})
    opt = build_optimizer(model, OPTIM)
    path = ckpt.save_checkpoint(
        tmp_path / "ckpts", 2, model=model, optimizer=opt, state={}, config_yaml=config, tokenizer_path=tok
    )
    inf = ckpt.load_for_inference(path)
    assert not lora_layers(inf.model), "the adapters are merged into the base weights"
    assert set(inf.model.state_dict()) == set(Decoder(ModelConfig(**SMALL)).state_dict())
    ids = torch.randint(0, SMALL["vocab_size"], (2, 9))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(inf.model(ids), model(ids), rtol=1e-5, atol=1e-5)
    on_meta = ckpt.load_for_inference(path, "meta").model
    assert all(p.is_meta for p in on_meta.parameters()) and not on_meta.training, "on the device asked"
