"""Falsifiers for the ``distill`` contract (contracts/distill.yaml)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from albor.checkpoint import load_for_inference
from albor.distill.distill import (
    TEACHER_MANIFEST,
    DistillConfig,
    Distiller,
    DistillSettings,
    TeacherShards,
    kd_divergence,
    kd_loss_sum,
    renormalise,
)
from albor.train.config import build_config
from albor.train.trainer import Trainer
from albor.verify.contracts import tolerance
from falsification.ladder_runs import overrides, run_tree, teacher_run


def _logits(n: int, v: int, seed: int, scale: float = 2.0) -> torch.Tensor:
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed)) * scale


def _kl64(p_logits: torch.Tensor, q_logits: torch.Tensor, t: float) -> torch.Tensor:
    """Σ_v p (log p − log q) of the tempered distributions, in float64, written out."""
    p_z, q_z = p_logits.double() / t, q_logits.double() / t
    log_p = p_z - torch.log(torch.exp(p_z).sum(-1, keepdim=True))
    log_q = q_z - torch.log(torch.exp(q_z).sum(-1, keepdim=True))
    return (log_p.exp() * (log_p - log_q)).sum(-1)


@pytest.mark.claim("DISTILL-001")
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_alpha_zero_is_cross_entropy(temperature: float) -> None:
    student, teacher = _logits(37, 53, 0).requires_grad_(), _logits(37, 53, 1)
    targets = torch.randint(0, 53, (37,), generator=torch.Generator().manual_seed(2))
    targets[::7] = -100
    settings = DistillSettings(teacher=Path("unused"), alpha=0.0, temperature=temperature)
    loss = kd_loss_sum(student, targets, torch.log_softmax(teacher, -1), None, settings)
    want = torch.nn.functional.cross_entropy(student, targets, ignore_index=-100, reduction="sum")
    assert torch.equal(loss, want), (loss.item(), want.item())
    keep = targets != -100
    z = student.detach().double()[keep]
    ce64 = (torch.logsumexp(z, -1) - z.gather(-1, targets[keep, None]).squeeze(-1)).sum()
    assert abs(loss.item() - ce64.item()) <= tolerance("DISTILL-001", "float32") * abs(ce64.item())
    (g,) = torch.autograd.grad(loss, student)
    (g_ce,) = torch.autograd.grad(want, student)
    assert torch.equal(g, g_ce)


@pytest.mark.claim("DISTILL-001")
def test_alpha_zero_run_trains_as_the_plain_run(small_data: Path, teacher: Path, tmp_path: Path) -> None:
    values = {"optim.max_steps": 3, "eval_every": 100}
    with Trainer(build_config(run_tree(small_data, tmp_path), overrides(values | {"name": "plain"}))) as plain:
        plain_init = {k: v.clone() for k, v in plain.model.state_dict().items()}
        plain_losses = [plain.train_step().loss for _ in range(3)]
    with _distiller(small_data, tmp_path, teacher, name="kd", **{"distill.alpha": 0.0}) as kd:
        assert all(torch.equal(plain_init[k], v) for k, v in kd.model.state_dict().items()), "the same init"
        kd._begin()
        kd_losses = [kd.train_step().loss for _ in range(3)]
    tol = tolerance("DISTILL-001", "float32")
    assert all(abs(a - b) <= 10 * tol * abs(a) for a, b in zip(plain_losses, kd_losses, strict=True))


@pytest.mark.claim("DISTILL-002")
@pytest.mark.parametrize("kl", ["forward", "reverse"])
@pytest.mark.parametrize("temperature", [0.7, 1.0, 3.0])
def test_kl_nonnegative_and_matches_float64(kl: str, temperature: float) -> None:
    student, teacher = _logits(41, 67, 3), _logits(41, 67, 4)
    got = kd_divergence(student, torch.log_softmax(teacher, -1), None, temperature, kl)
    want = _kl64(teacher, student, temperature) if kl == "forward" else _kl64(student, teacher, temperature)
    assert (got >= 0).all()
    assert (want > 1e-3).all(), "the distributions differ, so the KL is positive"
    rel = ((got.double() - want).norm() / want.norm()).item()
    assert rel <= tolerance("DISTILL-002", "float32"), rel


@pytest.mark.claim("DISTILL-002")
@pytest.mark.parametrize("kl", ["forward", "reverse"])
def test_kl_zero_iff_equal(kl: str) -> None:
    z = _logits(29, 31, 5)
    tol = tolerance("DISTILL-002", "float32")
    for teacher in (z, z + torch.arange(29.0)[:, None]):  # the same distributions, shifted logits
        got = kd_divergence(z, torch.log_softmax(teacher, -1), None, 2.0, kl)
        assert got.abs().max().item() <= tol
    other = z.clone()
    other[:, 0] += 1.0
    assert (kd_divergence(z, torch.log_softmax(other, -1), None, 2.0, kl) > tol).all()


@pytest.mark.claim("DISTILL-003")
def test_temperature_squared_keeps_gradient_scale() -> None:
    v = 50
    zs, zt = _logits(8, v, 6, 1.0), _logits(8, v, 7, 1.0)
    limit = ((zs - zs.mean(-1, keepdim=True)) - (zt - zt.mean(-1, keepdim=True))).double() / v
    norms = {}
    for t in (16.0, 64.0):
        student = zs.clone().requires_grad_()
        targets = torch.zeros(8, dtype=torch.long)
        settings = DistillSettings(teacher=Path("unused"), alpha=1.0, temperature=t)
        loss = kd_loss_sum(student, targets, torch.log_softmax(zt, -1), None, settings)
        (g,) = torch.autograd.grad(loss, student)
        norms[t] = g.norm().item()
        if t == 64.0:
            rel = ((g.double() - limit).norm() / limit.norm()).item()
            assert rel <= tolerance("DISTILL-003", "float32"), rel
    assert abs(norms[64.0] / norms[16.0] - 1) < 0.1, norms


@pytest.mark.claim("DISTILL-004")
@pytest.mark.parametrize("k", [1, 5, 64])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 8.0])
def test_topk_renormalised_sums_to_one(k: int, temperature: float) -> None:
    logp = torch.log_softmax(_logits(23, 64, 8), -1).topk(k, -1).values
    total = renormalise(logp, temperature).exp().sum(-1)
    assert (total - 1).abs().max().item() <= tolerance("DISTILL-004", "float32")


@pytest.fixture(scope="module")
def teacher(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return teacher_run(small_data, tmp_path_factory.mktemp("teacher"))


def _distiller(small_data: Path, runs: Path, teacher: Path, **values) -> Distiller:
    tree = run_tree(small_data, runs)
    over = {"distill.teacher": str(teacher), "optim.max_steps": 4, "eval_every": 100} | values
    return Distiller(build_config(tree, overrides(over), DistillConfig))


@pytest.mark.claim("DISTILL-004")
def test_offline_shards_keep_the_teachers_top_k(small_data: Path, teacher: Path, tmp_path: Path) -> None:
    with _distiller(small_data, tmp_path, teacher, **{"distill.mode": "offline", "distill.top_k": 7}) as d:
        idx = np.array([0, 5, 11, len(d.train_windows) - 1])
        ids, logp = d.shards.rows(idx)
        windows = d.train_windows[idx]
    model = load_for_inference(teacher).model
    with torch.no_grad():
        z = model(torch.from_numpy(windows[:, :-1].astype(np.int64))).double()
    want = torch.argsort(z, dim=-1, descending=True, stable=True)[..., :7]
    assert torch.equal(torch.from_numpy(ids.astype(np.int64)).sort(-1).values, want.sort(-1).values)
    logp64 = torch.log_softmax(z, -1).gather(-1, torch.from_numpy(ids.astype(np.int64)))
    assert (torch.from_numpy(logp.astype(np.float64)) - logp64).abs().max().item() < 1e-2


@pytest.mark.claim("DISTILL-005")
@pytest.mark.parametrize("kl", ["forward", "reverse"])
def test_offline_equals_online_when_k_is_v(small_data: Path, teacher: Path, tmp_path: Path, kl: str) -> None:
    # The student starts from the teacher's weights, so the KL pairs each position with its own teacher row:
    # teacher rows of other windows (in the same batch) would add to the loss instead of cancelling.
    start = {"init_from": str(teacher), "data.out": str(tmp_path / "data"), "model.d_model": 48, "model.d_ff": 64}
    losses = {}
    for mode in ("online", "offline"):
        values = {"name": mode, "distill.mode": mode, "distill.top_k": 300, "distill.kl": kl} | start
        with _distiller(small_data, tmp_path, teacher, **values) as d:
            d._begin()
            losses[mode] = d.train_step().loss
    rel = abs(losses["offline"] - losses["online"]) / losses["online"]
    assert rel <= tolerance("DISTILL-005", "float32"), losses


def _train_losses(run: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if r["kind"] == "train"}


@pytest.mark.claim("DISTILL-006")
def test_offline_resume_is_exact(small_data: Path, teacher: Path, tmp_path: Path) -> None:
    common = {"distill.mode": "offline", "distill.top_k": 6, "checkpoint_every": 2, "distill.alpha": 0.8}
    shards = {"distill.teacher_dir": str(tmp_path / "topk")}
    with _distiller(small_data, tmp_path, teacher, name="whole", **common, **shards) as d:
        d.fit()
    with _distiller(small_data, tmp_path, teacher, name="cut", **common, **shards) as d:
        d.fit_steps(2)
    tree = run_tree(small_data, tmp_path)
    over = {"distill.teacher": str(teacher), "optim.max_steps": 4, "eval_every": 100, "name": "cut"} | common | shards
    with Distiller(build_config(tree, overrides(over), DistillConfig), resume=True) as d:
        d.fit()
    whole, cut = _train_losses(tmp_path / "whole"), _train_losses(tmp_path / "cut")
    assert [whole[s] for s in (3, 4)] == [cut[s] for s in (3, 4)], (whole, cut)


@pytest.mark.claim("DISTILL-006")
def test_corrupt_teacher_shard_refused(small_data: Path, teacher: Path, tmp_path: Path) -> None:
    with _distiller(small_data, tmp_path, teacher, **{"distill.mode": "offline", "distill.top_k": 4}) as d:
        directory, expect = tmp_path / "default" / "teacher-topk", dict(d.shards.manifest)
    shard = directory / json.loads((directory / TEACHER_MANIFEST).read_text())["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    keys = ("top_k", "seq_len", "n_windows", "teacher_sha256", "windows_sha256")
    with pytest.raises(ValueError, match="corrupt"):
        TeacherShards(directory, {k: expect[k] for k in keys})
