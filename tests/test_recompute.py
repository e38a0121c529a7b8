"""Property tests for the backward's recomputation (contracts/recompute.yaml) over random shapes and inputs."""

from __future__ import annotations

from typing import get_args

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from albor.config import ModelConfig
from albor.model import Block
from albor.ops import rope_tables
from albor.ops.dispatch import Kernels
from albor.recompute import Recompute
from albor.train.config import load_config

subsets = st.sets(st.sampled_from(get_args(Recompute)), min_size=1).map(frozenset)


@st.composite
def blocks(draw: st.DrawFn) -> tuple[ModelConfig, int, int]:
    kv = draw(st.integers(1, 2))
    heads = kv * draw(st.integers(1, 3))
    cfg = ModelConfig(
        name="prop",
        n_layers=1,
        d_model=heads * 2 * draw(st.integers(1, 3)),
        n_heads=heads,
        n_kv_heads=kv,
        d_ff=draw(st.integers(1, 9)),
        vocab_size=11,
        max_seq_len=9,
    )
    return cfg, draw(st.integers(1, 3)), draw(st.integers(1, 9))


def _grads(cfg: ModelConfig, recompute: frozenset, batch: int, t: int, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    block = Block(cfg, Kernels(), recompute).double()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.3 * torch.randn_like(p))
    cos, sin = rope_tables(torch.arange(t), cfg.head_dim, dtype=torch.float64)
    x = torch.randn(batch, t, cfg.d_model, dtype=torch.float64, requires_grad=True)
    y = block(x, cos, sin)
    (y * torch.randn_like(y)).sum().backward()
    return [y.detach(), x.grad, *(p.grad for p in block.parameters())]


@settings(max_examples=25, deadline=None)
@given(blocks(), subsets, st.integers(0, 2**31 - 1))
def test_a_recomputed_block_computes_the_same_values_and_gradients(shape, recompute, seed) -> None:
    cfg, batch, t = shape
    plain, recomputed = _grads(cfg, frozenset(), batch, t, seed), _grads(cfg, recompute, batch, t, seed)
    for a, b in zip(plain, recomputed, strict=True):
        assert torch.equal(a, b)


@given(subsets)
def test_without_gradients_nothing_is_checkpointed(recompute) -> None:
    cfg = ModelConfig(name="p", n_layers=1, d_model=8, n_heads=2, n_kv_heads=1, d_ff=6, vocab_size=11, max_seq_len=4)
    block = Block(cfg, Kernels(), recompute)
    cos, sin = rope_tables(torch.arange(4), cfg.head_dim)
    with torch.no_grad():
        y = block(torch.randn(1, 4, 8), cos, sin)
    assert y.grad_fn is None


def test_the_option_names_each_result_once_from_the_known_ones() -> None:
    assert load_config("pretrain-350m", []).recompute == []
    assert load_config("pretrain-350m", ["recompute=[swiglu, rmsnorm]"]).recompute == ["swiglu", "rmsnorm"]
    with pytest.raises(ValueError, match=r"recompute.*more than once"):
        load_config("pretrain-350m", ["recompute=[swiglu, swiglu]"])
    with pytest.raises(ValueError, match=r"recompute\.0.*'rope'"):
        load_config("pretrain-350m", ["recompute=[rope]"])
