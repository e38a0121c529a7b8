"""Falsifiers for the ``init`` contract (contracts/init.yaml)."""

from __future__ import annotations

import math

import pytest
import torch

from albor.config import load_model_config
from albor.contracts import tolerance
from albor.model import Decoder

# One layer of the 50m preset with a smaller vocabulary, and an init_std that is not the default.
CFG = load_model_config("50m").model_copy(update={"n_layers": 1, "vocab_size": 2053, "init_std": 0.037})
NORMAL_WITHIN = {1: math.erf(1 / math.sqrt(2)), 2: math.erf(2 / math.sqrt(2))}


@pytest.fixture(scope="module")
def model() -> Decoder:
    torch.manual_seed(0)
    return Decoder(CFG)


@pytest.mark.claim("INIT-001")
def test_matrices_normal_with_init_std(model: Decoder) -> None:
    z = tolerance("INIT-001")
    sigma = CFG.init_std
    matrices = [(name, p.detach().double().flatten()) for name, p in model.named_parameters() if p.ndim == 2]
    assert {name for name, _ in matrices} >= {"embed.weight", "head.weight", "blocks.0.attn.qkv.weight"}
    for name, w in matrices:
        n = w.numel()
        assert abs(w.mean().item()) <= z * sigma / math.sqrt(n), f"{name}: mean"
        assert abs(w.std().item() - sigma) <= z * sigma / math.sqrt(2 * n), f"{name}: std"
        for k, p in NORMAL_WITHIN.items():
            share = (w.abs() < k * sigma).double().mean().item()
            assert abs(share - p) <= z * math.sqrt(p * (1 - p) / n), f"{name}: share within {k}σ is {share}"


@pytest.mark.claim("INIT-002")
def test_gains_exactly_one(model: Decoder) -> None:
    gains = [(name, p) for name, p in model.named_parameters() if p.ndim == 1]
    assert len(gains) == 2 * CFG.n_layers + 1
    trained = Decoder(CFG.model_copy(update={"n_layers": 2, "vocab_size": 29}))
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    trained.reset_parameters()
    gains += [(name, p) for name, p in trained.named_parameters() if p.ndim == 1]
    for name, p in gains:
        assert name.endswith("norm") and torch.equal(p, torch.ones_like(p)), name


@pytest.mark.claim("INIT-003")
def test_same_seed_same_parameters() -> None:
    cfg = CFG.model_copy(update={"d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 96, "vocab_size": 101})
    states = []
    for _ in range(2):
        torch.manual_seed(1234)
        states.append(Decoder(cfg).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
