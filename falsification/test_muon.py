"""Falsifiers for the ``muon`` contract (contracts/muon.yaml): the orthogonalised update against a float64
SVD, the steps against hand-written references, the groups, the hyperparameters, the learning rate and
state through save and load, and the trainer's runs with it."""

from __future__ import annotations

import copy
import io
import math
from pathlib import Path

import pytest
import torch

from albor import optim
from albor.config import ModelConfig, OptimConfig
from albor.config.errors import ConfigError
from albor.model import Decoder
from albor.optim import muon
from albor.train.trainer import Trainer
from albor.verify.contracts import declared, tolerance
from albor.verify.numerics import rel_err
from albor.verify.references import adamw_reference, muon_reference
from falsification.test_trainer import _assert_same_run, _uninterrupted, small_config

# Every AdamW hyperparameter differs from torch's defaults, so a default cannot pass for it.
CFG = OptimConfig(
    name="muon", lr=2e-2, min_lr=0.0, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.3, warmup_steps=0, max_steps=10
)
# Tall (fused qkv, gate_up), wide (down) and square (out) block matrices.
MODEL = ModelConfig(
    name="muon-test", n_layers=2, d_model=16, n_heads=4, n_kv_heads=2, d_ff=24, vocab_size=13, max_seq_len=8
)
SINGULAR_VALUE_BOUNDS = (0.6, 1.3)
# Singular values below this fraction of the Frobenius norm are not yet lifted to about 1 by five iterations.
LIFTED = 3e-3


def _model(tied: bool = False) -> Decoder:
    torch.manual_seed(0)
    return Decoder(MODEL.model_copy(update={"tie_embeddings": tied}))


def _blocks_matrices(model: Decoder) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if n.startswith("blocks.") and p.ndim == 2}


def _spectrum_gradient(shape: torch.Size, decades: float, scale: float, g: torch.Generator) -> torch.Tensor:
    """A float64 matrix of ``shape`` with singular values spread log-uniformly over ``decades`` decades."""
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -decades, k, dtype=torch.float64)
    return scale * (u * s) @ v.T


@pytest.mark.slow
@pytest.mark.claim("MUON-001")
# Each spread of singular values at another gradient scale: the normalisation makes the scale irrelevant.
@pytest.mark.parametrize(("decades", "scale"), [(0.5, 1e-4), (2.0, 1.0), (4.0, 1e3)])
def test_update_is_orthogonal_within_the_declared_bounds(decades: float, scale: float) -> None:
    model = _model()
    opt = optim.build_optimizer(model, CFG.model_copy(update={"weight_decay": 0.0}))
    g = torch.Generator().manual_seed(int(decades * 10))
    grads = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.zero_()
            grads[name] = _spectrum_gradient(p.shape, decades, scale, g) if p.ndim == 2 else torch.randn(p.shape)
            p.grad = grads[name].float()
    opt.step()
    lo, hi = SINGULAR_VALUE_BOUNDS
    for name, p in _blocks_matrices(model).items():
        update = -p.detach().double() / (CFG.lr * 0.2 * math.sqrt(max(p.shape)))
        u, s_in, vh = torch.linalg.svd(grads[name], full_matrices=False)
        # The update in the gradient's singular basis: diagonal if it keeps the singular vectors.
        lifted = s_in >= LIFTED * grads[name].norm()
        assert lifted.any()
        core = (u.T @ update @ vh.T)[lifted][:, lifted]
        diag = torch.diagonal(core)
        off = core - torch.diag(diag)
        assert off.norm() <= 0.05 * core.norm(), f"{name}: the update does not keep the gradient's singular vectors"
        assert diag.min() >= lo and diag.max() <= hi, (name, diag.min().item(), diag.max().item())
        assert torch.linalg.svdvals(update).max() <= hi, name


@pytest.mark.slow
@pytest.mark.claim("MUON-002")
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_steps_match_the_references(tied: bool) -> None:
    model = _model(tied)
    opt = optim.build_optimizer(model, CFG)
    hp = (declared("muon", "momentum"), tuple(declared("muon", "ns_coefficients")), declared("muon", "ns_steps"))
    hidden = {id(p) for p in _blocks_matrices(model).values()}
    params = list(model.parameters())
    # The references' own momentum and moments; each step starts from the optimizer's parameters, so each
    # step's error is its own.
    first = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    second = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    g = torch.Generator().manual_seed(3)
    for step in range(1, 5):
        want = []
        for i, p in enumerate(params):
            grad = torch.randn(p.shape, generator=g, dtype=torch.float64) * 10.0 ** (step - 2)
            p.grad = grad.float()
            p0 = p.detach().double()
            if id(p) in hidden:
                new, first[i] = muon_reference(p0, grad, first[i], CFG.lr, CFG.weight_decay, *hp)
            else:
                wd = CFG.weight_decay if p.ndim >= 2 else 0.0
                new, first[i], second[i] = adamw_reference(
                    p0, grad, first[i], second[i], step, CFG.lr, CFG.betas, CFG.eps, wd
                )
            want.append((p0, new - p0))
        opt.step()
        for p, (p0, update) in zip(params, want, strict=True):
            dtype = torch.bfloat16 if id(p) in hidden else torch.float32
            err = rel_err(p.detach().double() - p0, update)
            assert err <= tolerance("MUON-002", dtype), (step, tuple(p.shape), err)


@pytest.mark.claim("MUON-003")
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_blocks_matrices_on_muon_the_rest_on_adamw(tied: bool) -> None:
    model = _model(tied)
    opt = optim.build_optimizer(model, CFG)
    seen = [id(p) for group in opt.param_groups for p in group["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()), "each parameter in exactly one group"
    by_id = {id(p): group for group in opt.param_groups for p in group["params"]}
    for name, p in model.named_parameters():
        group = by_id[id(p)]
        assert group["lr"] == CFG.lr, name
        if name.startswith("blocks.") and p.ndim == 2:
            assert (group["algorithm"], group["weight_decay"]) == ("muon", CFG.weight_decay), name
        elif p.ndim == 2:
            assert (group["algorithm"], group["weight_decay"]) == ("adamw", CFG.weight_decay), name
        else:
            assert (group["algorithm"], group["weight_decay"]) == ("adamw", 0.0), name
    names = {n for n, _ in model.named_parameters()}
    assert ("head.weight" in names) != tied and "embed.weight" in names


@pytest.mark.claim("MUON-004")
@pytest.mark.parametrize("fused", [False, True])
def test_configured_and_declared_hparams_used(fused: bool) -> None:
    opt = optim.build_optimizer(_model(), CFG, fused=fused)
    assert isinstance(opt, muon.MuonAdamW)
    (muon_group,) = [g for g in opt.param_groups if g["algorithm"] == "muon"]
    assert muon_group["momentum"] == declared("muon", "momentum") and muon_group["nesterov"] is True
    assert list(muon_group["ns_coefficients"]) == declared("muon", "ns_coefficients")
    assert muon_group["ns_steps"] == declared("muon", "ns_steps")
    assert muon_group["adjust_lr_fn"] == declared("muon", "adjust_lr")
    for group in (g for g in opt.param_groups if g["algorithm"] == "adamw"):
        assert (group["lr"], tuple(group["betas"]), group["eps"]) == (CFG.lr, CFG.betas, CFG.eps)
        assert bool(group["fused"]) == fused
    plain = optim.build_optimizer(_model(), CFG.model_copy(update={"name": "adamw"}))
    assert type(plain) is torch.optim.AdamW
    unasked = muon.build_optimizer(_model(), CFG)
    assert not any(g.get("fused") for g in unasked.param_groups), "fused only when asked"
    with pytest.raises(ValueError, match=r"^MuonAdamW\.step takes no closure$"):
        opt.step(lambda: 0.0)


def _step_all(model: Decoder, opt: torch.optim.Optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g)
    opt.step()


def _reloaded(model: Decoder, opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    fresh = optim.build_optimizer(model, CFG)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


@pytest.mark.slow
@pytest.mark.claim("MUON-005")
def test_the_groups_lr_drives_both_algorithms_after_loading() -> None:
    model = _model()
    opt = optim.build_optimizer(model, CFG)
    _step_all(model, opt, 0)
    for loaded in (False, True):
        if loaded:
            opt = _reloaded(model, opt)
        before = [p.detach().clone() for p in model.parameters()]
        for group in opt.param_groups:
            group["lr"] = 0.0
        _step_all(model, opt, 1)
        for p, p0 in zip(model.parameters(), before, strict=True):
            assert torch.equal(p.detach(), p0), f"lr 0 moved a {tuple(p.shape)} parameter (loaded={loaded})"
    # A second lr, set after loading, against a fresh optimizer built with it from the same state.
    lr = CFG.lr / 7
    twin_model = _model()
    twin_model.load_state_dict(model.state_dict())
    twin = optim.build_optimizer(twin_model, CFG.model_copy(update={"lr": lr}))
    # A copy: load_state_dict keeps the given tensors, and the two optimizers must not share moments.
    state = copy.deepcopy(opt.state_dict())
    for group in state["param_groups"]:
        group["lr"] = lr
    twin.load_state_dict(state)
    for group in opt.param_groups:
        group["lr"] = lr
    _step_all(model, opt, 2)
    _step_all(twin_model, twin, 2)
    for (name, p), q in zip(model.named_parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(p.detach(), q.detach()), f"{name}: the lr set on the groups was not the one stepped with"


@pytest.mark.slow
@pytest.mark.claim("MUON-005")
def test_state_round_trip_continues_bit_for_bit() -> None:
    model, twin_model = _model(), _model()
    opt = optim.build_optimizer(model, CFG)
    for seed in range(2):
        _step_all(model, opt, seed)
    twin_model.load_state_dict(model.state_dict())
    twin = _reloaded(twin_model, opt)
    for seed in range(2, 5):
        _step_all(model, opt, seed)
        _step_all(twin_model, twin, seed)
    for (name, p), q in zip(model.named_parameters(), twin_model.parameters(), strict=True):
        assert torch.equal(p.detach(), q.detach()), f"{name} differs after a save and load of the optimizer"


@pytest.mark.claim("MUON-006")
@pytest.mark.parametrize("over", [{"parallel": "fsdp"}, {"lora": {"r": 4}, "init_from": "x"}], ids=["fsdp", "lora"])
def test_muon_with_fsdp_or_lora_is_refused(small_data: Path, tmp_path: Path, over: dict) -> None:
    with pytest.raises(ConfigError, match=r"optim\.name: muon"):
        small_config(small_data, tmp_path, **{"optim.name": "muon", **over})
    small_config(small_data, tmp_path, **over)


@pytest.mark.slow
@pytest.mark.claim("MUON-006")
def test_a_muon_run_resumes_bit_for_bit(small_data: Path, tmp_path: Path) -> None:
    over = {"optim.name": "muon"}
    ref = _uninterrupted(small_config(small_data, tmp_path / "ref", **over))
    plain = _uninterrupted(small_config(small_data, tmp_path / "plain"))
    cfg = small_config(small_data, tmp_path / "cut", **over)
    with Trainer(cfg) as first:
        assert isinstance(first.state.optimizer, muon.MuonAdamW)
        first.fit_steps(3)
        first.save()
    with Trainer(cfg, resume=True) as resumed:
        resumed.fit()
    _assert_same_run(ref, resumed.run_dir)
    with pytest.raises(AssertionError):
        _assert_same_run(ref, plain)
