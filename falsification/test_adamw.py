"""Falsifiers for the ``adamw`` contract (contracts/adamw.yaml)."""

from __future__ import annotations

import pytest
import torch

from albor.config import ModelConfig, OptimConfig, presets
from albor.model import Decoder
from albor.optim.adamw import build_optimizer, param_groups
from albor.train.config import load_config
from albor.verify.contracts import declared, tolerance
from albor.verify.numerics import rel_err
from albor.verify.references import adamw_reference

# Every hyperparameter differs from torch's AdamW defaults, so a default cannot pass for it.
CFG = OptimConfig(lr=2.5e-2, min_lr=0.0, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.3, warmup_steps=0, max_steps=10)
MODEL = ModelConfig(
    name="adamw-test", n_layers=1, d_model=12, n_heads=3, n_kv_heads=1, d_ff=10, vocab_size=11, max_seq_len=8
)


def _model(device: torch.device, dtype: torch.dtype) -> Decoder:
    torch.manual_seed(0)
    return Decoder(MODEL).to(device, dtype)


def _is_matrix(p: torch.Tensor) -> bool:
    return p.ndim >= 2


@pytest.mark.claim("ADAMW-001")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("fused", [False, True])
def test_matches_closed_form(device: torch.device, dtype: torch.dtype, fused: bool) -> None:
    model = _model(device, dtype)
    opt = build_optimizer(model, CFG, fused=fused)
    params = list(model.parameters())
    zeros = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    ref = [(p.detach().double().clone(), z, z.clone()) for p, z in zip(params, zeros, strict=True)]
    g = torch.Generator().manual_seed(1)
    for step in range(1, 6):
        for i, p in enumerate(params):
            grad = torch.randn(p.shape, generator=g, dtype=torch.float64) * 10**step * 1e-3
            p.grad = grad.to(device, dtype)
            wd = CFG.weight_decay if _is_matrix(p) else 0.0
            p_ref, m, v = ref[i]
            ref[i] = adamw_reference(p_ref, grad.to(device), m, v, step, CFG.lr, CFG.betas, CFG.eps, wd)
        opt.step()
        for (want, _, _), p in zip(ref, params, strict=True):
            assert rel_err(p, want) <= tolerance("ADAMW-001", dtype), (step, tuple(p.shape))


@pytest.mark.claim("ADAMW-002")
def test_decay_decoupled(device: torch.device) -> None:
    model = _model(device, torch.float64)
    opt = build_optimizer(model, CFG)
    before = [p.detach().clone() for p in model.parameters()]
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    tol = tolerance("ADAMW-002", torch.float64)
    for p, p0 in zip(model.parameters(), before, strict=True):
        want = p0 * (1 - CFG.lr * CFG.weight_decay) if _is_matrix(p) else p0
        assert (p.detach() - want).abs().max().item() <= tol, tuple(p.shape)
        assert _is_matrix(p) == (not torch.equal(p.detach(), p0)), "only matrices decay"


@pytest.mark.claim("ADAMW-003")
@pytest.mark.parametrize("tied", [False, True])
def test_decay_on_matrices_only(device: torch.device, tied: bool) -> None:
    model = Decoder(MODEL.model_copy(update={"tie_embeddings": tied})).to(device)
    groups = param_groups(model.parameters(), CFG.weight_decay)
    seen = [id(p) for group in groups for p in group["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()), "each parameter in exactly one group"
    decayed = {id(p) for group in groups if group["weight_decay"] > 0 for p in group["params"]}
    for name, p in model.named_parameters():
        if _is_matrix(p):
            assert id(p) in decayed, f"{name} is a matrix and must decay"
        else:
            assert id(p) not in decayed and name.endswith("norm"), f"{name} is a gain and must not decay"
    assert {group["weight_decay"] for group in groups} == {CFG.weight_decay, 0.0}
    assert any(name.endswith("norm") for name, _ in model.named_parameters())


@pytest.mark.claim("ADAMW-004")
def test_configured_hparams_used(device: torch.device) -> None:
    model = _model(device, torch.float32)
    opt = build_optimizer(model, CFG)
    assert len(opt.param_groups) == 2
    # The trainer asks for the fused kernel on CUDA (one launch for every parameter); otherwise the for-loop.
    assert not opt.defaults["fused"] and build_optimizer(model, CFG, fused=True).defaults["fused"] is True
    for group in opt.param_groups:
        assert group["lr"] == CFG.lr
        assert tuple(group["betas"]) == CFG.betas
        assert group["eps"] == CFG.eps
        want_wd = CFG.weight_decay if all(_is_matrix(p) for p in group["params"]) else 0.0
        assert all(_is_matrix(p) == (want_wd > 0) for p in group["params"]), "a group mixes matrices and gains"
        assert group["weight_decay"] == want_wd


@pytest.mark.claim("ADAMW-005")
@pytest.mark.parametrize("preset", presets("train"))
def test_every_preset_builds_its_declared_optimizer(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(preset)
    monkeypatch.setattr(torch.nn.init, "normal_", lambda t, *args, **kwargs: t)  # values are not needed
    with torch.device("meta"):
        model = Decoder(cfg.model)
    opt = build_optimizer(model, cfg.optim)
    named = {id(p): name for name, p in model.named_parameters()}
    seen = [named[id(p)] for group in opt.param_groups for p in group["params"]]
    assert sorted(seen) == sorted(named.values()), "each parameter in exactly one group"
    for group in opt.param_groups:
        assert (group["lr"], tuple(group["betas"]), group["eps"]) == (cfg.optim.lr, cfg.optim.betas, cfg.optim.eps)
        for p in group["params"]:
            want = cfg.optim.weight_decay if p.ndim >= 2 else 0.0
            assert group["weight_decay"] == want, f"{preset}: {named[id(p)]} decays by {group['weight_decay']}"
    declared_values = (declared("adamw", "betas"), declared("adamw", "eps"), declared("adamw", "weight_decay"))
    assert (list(cfg.optim.betas), cfg.optim.eps, cfg.optim.weight_decay) == declared_values, preset
