"""Property tests for the Muon optimizer (contracts/muon.yaml) over random matrix shapes, gradient scales,
hyperparameters and models."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from albor.config import ModelConfig, OptimConfig
from albor.model import Decoder
from albor.optim import build_optimizer, muon
from albor.verify.numerics import rel_err
from albor.verify.references import muon_reference


class Block(nn.Module):
    """One block matrix, where Muon looks for the matrices it trains, and a gain outside the blocks."""

    def __init__(self, rows: int, cols: int) -> None:
        super().__init__()
        self.blocks = nn.ParameterList([nn.Parameter(torch.zeros(rows, cols))])
        self.norm = nn.Parameter(torch.ones(cols))


def _first_update(rows: int, cols: int, grad: torch.Tensor, lr: float, wd: float) -> torch.Tensor:
    """The change a first Muon step makes to a zero matrix given ``grad``."""
    model = Block(rows, cols)
    cfg = OptimConfig(name="muon", lr=lr, min_lr=0.0, weight_decay=wd, warmup_steps=0, max_steps=10)
    opt = muon.build_optimizer(model, cfg)
    model.blocks[0].grad = grad
    model.norm.grad = torch.ones(cols)
    opt.step()
    return model.blocks[0].detach().clone()


shapes = st.tuples(st.integers(1, 24), st.integers(1, 24))
seeds = st.integers(0, 2**31 - 1)


@given(shapes, seeds, st.floats(1e-3, 1e3), st.floats(1e-4, 1e-1), st.floats(0.0, 1.0))
@settings(deadline=None, max_examples=40)
def test_first_step_ignores_the_gradients_scale_and_the_decay_of_zero(
    shape: tuple[int, int], seed: int, scale: float, lr: float, wd: float
) -> None:
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    a = _first_update(*shape, g, lr, wd)
    b = _first_update(*shape, g * scale, lr, 0.0)
    # Torch iterates in bfloat16, whose rounding of the normalised input moves the result a few percent.
    assert rel_err(a, b) <= 0.1, "the update is normalised: scaling the gradient must not change it"
    # The update's RMS is 0.2·lr·sqrt(max(A, B))·|O|_F / sqrt(A·B), where O's singular values are about one.
    rms = a.pow(2).mean().sqrt().item()
    unit = 0.2 * lr * math.sqrt(max(shape)) / math.sqrt(shape[0] * shape[1])
    assert 0.3 * unit * math.sqrt(min(shape)) <= rms <= 1.3 * unit * math.sqrt(min(shape))


@given(shapes, seeds, st.floats(0.0, 0.99), st.integers(1, 4))
@settings(deadline=None, max_examples=30)
def test_reference_update_is_near_orthogonal(shape: tuple[int, int], seed: int, momentum: float, steps: int) -> None:
    # The float64 reference alone: in the basis of the matrix it orthogonalises, its update is diagonal, with
    # the singular values that five iterations lift (at least 3e-3 of the Frobenius norm) near one.
    g = torch.Generator().manual_seed(seed)
    p = torch.zeros(shape, dtype=torch.float64)
    buf = torch.zeros_like(p)
    for _ in range(steps):
        before = p
        grad = torch.randn(shape, generator=g, dtype=torch.float64)
        p, buf = muon_reference(p, grad, buf, 1.0, 0.0, momentum, muon.NS_COEFFICIENTS, muon.NS_STEPS)
    x = grad + momentum * buf
    update = (before - p) / (0.2 * math.sqrt(max(shape)))
    u, s_in, vh = torch.linalg.svd(x, full_matrices=False)
    core = u.T @ update @ vh.T
    diag = torch.diagonal(core)
    assert (core - torch.diag(diag)).norm() <= 1e-9 * core.norm()
    lifted = s_in >= 3e-3 * x.norm()
    assert diag[lifted].min() >= 0.68 and diag.max() <= 1.21, diag


@given(st.integers(1, 3), st.booleans(), st.sampled_from(["adamw", "muon"]))
@settings(deadline=None, max_examples=12)
def test_every_parameter_in_exactly_one_group(n_layers: int, tied: bool, name: str) -> None:
    cfg = ModelConfig(
        name="p", n_layers=n_layers, d_model=8, n_heads=2, n_kv_heads=1, d_ff=12, vocab_size=11, max_seq_len=4
    )
    model = Decoder(cfg.model_copy(update={"tie_embeddings": tied}))
    opt = build_optimizer(model, OptimConfig(name=name, warmup_steps=0, max_steps=2))
    ids = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    on_muon = {id(p) for g in opt.param_groups if g.get("algorithm") == "muon" for p in g["params"]}
    # Four matrices a block: the fused qkv, out, the fused gate_up and down.
    hidden = {id(p) for p in muon.hidden_matrices(model)}
    assert len(hidden) == 4 * n_layers
    assert on_muon == (hidden if name == "muon" else set())
