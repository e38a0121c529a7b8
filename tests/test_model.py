"""Property tests for the decoder (contracts/model.yaml) over random small shapes."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor.config import ModelConfig
from albor.model import Decoder
from albor.verify.contracts import tolerance


@st.composite
def configs(draw: st.DrawFn) -> ModelConfig:
    """A random valid small config: Hkv | H, even head_dim."""
    n_kv = draw(st.integers(1, 2))
    n_heads = n_kv * draw(st.integers(1, 3))
    head_dim = 2 * draw(st.integers(1, 3))
    return ModelConfig(
        name="prop",
        n_layers=draw(st.integers(1, 2)),
        d_model=n_heads * head_dim,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_ff=draw(st.integers(1, 9)),
        vocab_size=draw(st.integers(8, 19)),
        max_seq_len=12,
        tie_embeddings=draw(st.booleans()),
        init_std=0.5,
    )


def _tokens(cfg: ModelConfig, seed: int, b: int, t: int) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (b, t), generator=torch.Generator().manual_seed(seed))


@given(configs())
def test_param_count(cfg: ModelConfig) -> None:
    model = Decoder(cfg)
    assert sum(p.numel() for p in model.parameters()) == cfg.n_params()
    assert (model.head is None) == cfg.tie_embeddings


@given(configs(), st.integers(0, 2**31 - 1), st.integers(1, 3), st.integers(1, 12))
def test_logits_shape_and_finite(cfg: ModelConfig, seed: int, b: int, t: int) -> None:
    torch.manual_seed(seed)
    logits = Decoder(cfg)(_tokens(cfg, seed, b, t))
    assert logits.shape == (b, t, cfg.vocab_size) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@given(configs(), st.integers(0, 2**31 - 1), st.integers(2, 12), st.data())
def test_causal_and_batch_independent(cfg: ModelConfig, seed: int, t: int, data: st.DataObject) -> None:
    # Changing later tokens of one row changes neither its earlier logits nor any other row.
    torch.manual_seed(seed)
    model = Decoder(cfg).double()
    idx = _tokens(cfg, seed, 2, t)
    cut = data.draw(st.integers(1, t - 1))
    changed = idx.clone()
    changed[0, cut:] = (changed[0, cut:] + 1) % cfg.vocab_size
    base, out = model(idx), model(changed)
    assert (out[0, :cut] - base[0, :cut]).abs().max().item() <= 1e-12
    assert (out[1] - base[1]).abs().max().item() <= 1e-12


@given(configs(), st.integers(0, 2**31 - 1))
def test_loss_path_matches_logits(cfg: ModelConfig, seed: int) -> None:
    torch.manual_seed(seed)
    model = Decoder(cfg).double()
    idx, targets = _tokens(cfg, seed, 2, 7), _tokens(cfg, seed + 1, 2, 7)
    want = torch.nn.functional.cross_entropy(model(idx).double().flatten(0, 1), targets.flatten())
    assert abs(model(idx, targets).item() - want.item()) <= 1e-6 * want.item()


@given(configs(), st.integers(0, 2**31 - 1))
def test_every_parameter_gets_a_gradient(cfg: ModelConfig, seed: int) -> None:
    torch.manual_seed(seed)
    model = Decoder(cfg).double()
    idx = torch.arange(min(cfg.vocab_size, 12))[None]
    model(idx, _tokens(cfg, seed, 1, idx.shape[1])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max().item() > 0, name


def test_sequence_longer_than_max_refused() -> None:
    cfg = ModelConfig(name="x", n_layers=1, d_model=8, n_heads=2, n_kv_heads=1, d_ff=4, vocab_size=9, max_seq_len=4)
    with pytest.raises(ValueError, match="max_seq_len"):
        Decoder(cfg)(torch.zeros(1, 5, dtype=torch.long))


@st.composite
def init_configs(draw: st.DrawFn) -> ModelConfig:
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


@given(init_configs(), st.integers(0, 2**31 - 1))
def test_matrices_normal_and_gains_one(cfg: ModelConfig, seed: int) -> None:
    torch.manual_seed(seed)
    model = Decoder(cfg)
    z = tolerance("MODEL-007")
    sigma = cfg.init_std
    for name, p in model.named_parameters():
        if p.ndim == 1:
            assert torch.equal(p, torch.ones_like(p)), name
            continue
        w, n = p.detach().double().flatten(), p.numel()
        assert abs(w.mean().item()) <= z * sigma / math.sqrt(n), name
        assert abs(w.std().item() / sigma - 1) <= z / math.sqrt(2 * n), name


@given(init_configs(), st.integers(0, 2**31 - 1))
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
