"""Property tests for AdamW as built by build_optimizer (contracts/adamw.yaml) over random hyperparameters."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from albor.config import OptimConfig
from albor.optim.adamw import build_optimizer
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err
from albor.verify.references import adamw_reference


class Pair(nn.Module):
    """One matrix (decayed) and one gain vector (not decayed)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.matrix = nn.Parameter(torch.randn(5, 3, generator=g, dtype=torch.float64))
        self.norm = nn.Parameter(1 + 0.1 * torch.randn(3, generator=g, dtype=torch.float64))


configs = st.builds(
    lambda lr, b1, b2, eps, wd: OptimConfig(
        lr=lr, min_lr=0.0, betas=(b1, b2), eps=eps, weight_decay=wd, warmup_steps=0, max_steps=10
    ),
    st.floats(1e-5, 1e-1),
    st.floats(0.0, 0.99),
    st.floats(0.0, 0.9999),
    st.floats(1e-10, 1e-2),
    st.floats(0.0, 1.0),
)
seeds = st.integers(0, 2**31 - 1)


@given(configs, seeds, st.integers(1, 6))
def test_steps_match_closed_form(cfg: OptimConfig, seed: int, steps: int) -> None:
    model = Pair(seed)
    opt = build_optimizer(model, cfg)
    state = {n: (p.detach().clone(), torch.zeros_like(p), torch.zeros_like(p)) for n, p in model.named_parameters()}
    g = torch.Generator().manual_seed(seed + 1)
    for step in range(1, steps + 1):
        for name, p in model.named_parameters():
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
            wd = cfg.weight_decay if p.ndim == 2 else 0.0
            state[name] = adamw_reference(*_insert_grad(state[name], p.grad), step, cfg.lr, cfg.betas, cfg.eps, wd)
        opt.step()
    for name, p in model.named_parameters():
        assert rel_err(p, state[name][0]) <= tolerance("ADAMW-001", torch.float64), name


def _insert_grad(pmv: tuple[torch.Tensor, ...], grad: torch.Tensor) -> tuple[torch.Tensor, ...]:
    p, m, v = pmv
    return p, grad, m, v


@given(configs, seeds)
def test_zero_gradient_step_is_pure_decay(cfg: OptimConfig, seed: int) -> None:
    model = Pair(seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, cfg)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(model.matrix.detach(), before["matrix"] * (1 - cfg.lr * cfg.weight_decay))
    assert torch.equal(model.norm.detach(), before["norm"])


@given(configs, seeds)
def test_first_step_moves_each_entry_by_lr(cfg: OptimConfig, seed: int) -> None:
    # Bias correction makes the first update lr·g/(|g| + eps): about lr per entry when |g| >> eps.
    model = Pair(seed)
    before = model.norm.detach().clone()
    opt = build_optimizer(model, cfg)
    g = torch.Generator().manual_seed(seed + 1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).sign() * 10
    opt.step()
    step = (before - model.norm.detach()) * model.norm.grad.sign()
    # Absolute bound: the difference of two O(1) parameters carries their rounding, whatever lr is.
    assert (step - cfg.lr * 10 / (10 + cfg.eps)).abs().max().item() <= 1e-14
