"""Property tests for initialisation (contracts/init.yaml) over random shapes and init_std."""

from __future__ import annotations

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

from albor.config import ModelConfig
from albor.contracts import tolerance
from albor.model import Decoder


@st.composite
def configs(draw: st.DrawFn) -> ModelConfig:
    n_heads = draw(st.integers(1, 4))
    return ModelConfig(
        name="init",
        n_layers=draw(st.integers(1, 2)),
        d_model=n_heads * 2 * draw(st.integers(4, 12)),
        n_heads=n_heads,
        n_kv_heads=1,
        d_ff=draw(st.integers(16, 96)),
        vocab_size=draw(st.integers(64, 300)),
        max_seq_len=8,
        tie_embeddings=draw(st.booleans()),
        init_std=draw(st.floats(1e-3, 1.0)),
    )


@given(configs(), st.integers(0, 2**31 - 1))
def test_matrices_normal_and_gains_one(cfg: ModelConfig, seed: int) -> None:
    torch.manual_seed(seed)
    model = Decoder(cfg)
    z = tolerance("INIT-001")
    sigma = cfg.init_std
    for name, p in model.named_parameters():
        if p.ndim == 1:
            assert torch.equal(p, torch.ones_like(p)), name
            continue
        w, n = p.detach().double().flatten(), p.numel()
        assert abs(w.mean().item()) <= z * sigma / math.sqrt(n), name
        assert abs(w.std().item() / sigma - 1) <= z / math.sqrt(2 * n), name


@given(configs(), st.integers(0, 2**31 - 1))
def test_reset_restores_the_distribution(cfg: ModelConfig, seed: int) -> None:
    torch.manual_seed(seed)
    model = Decoder(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(7).add_(3)
    torch.manual_seed(seed)
    model.reset_parameters()
    torch.manual_seed(seed)
    fresh = Decoder(cfg)
    for (name, p), q in zip(model.named_parameters(), fresh.parameters(), strict=True):
        if p.ndim == 1:
            assert torch.equal(p, q), name
        else:
            assert abs(p.detach().double().std().item() / cfg.init_std - 1) <= 0.5, name
