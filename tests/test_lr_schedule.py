"""Property tests for the LR schedule (contracts/lr_schedule.yaml) over random configurations and steps."""

from __future__ import annotations

import math

from hypothesis import assume, given
from hypothesis import strategies as st

from albor.config import OptimConfig
from albor.optim.lr_schedule import lr_at
from albor.verify.contracts import tolerance


@st.composite
def configs(draw: st.DrawFn) -> OptimConfig:
    lr = draw(st.floats(1e-6, 1e-1))
    max_steps = draw(st.integers(2, 100_000))
    return OptimConfig(
        lr=lr,
        min_lr=lr * draw(st.floats(0.0, 1.0)),
        warmup_steps=draw(st.integers(0, max_steps - 1)),
        max_steps=max_steps,
    )


steps = st.integers(0, 200_000)


@given(configs(), steps)
def test_bounded_by_peak_and_floor(cfg: OptimConfig, s: int) -> None:
    lr = lr_at(s, cfg)
    assert 0 < lr <= cfg.lr * (1 + 1e-15) or (lr == 0 and cfg.min_lr == 0 and s >= cfg.warmup_steps)
    if s >= cfg.warmup_steps:
        assert lr >= cfg.min_lr


@given(configs(), steps, steps)
def test_warmup_rises_and_decay_falls(cfg: OptimConfig, a: int, b: int) -> None:
    a, b = min(a, b), max(a, b)
    if b < cfg.warmup_steps:
        assert lr_at(a, cfg) <= lr_at(b, cfg)
    if a >= cfg.warmup_steps - 1:
        assert lr_at(a, cfg) >= lr_at(b, cfg)


@given(configs())
def test_endpoints(cfg: OptimConfig) -> None:
    tol = tolerance("LR-002", "float64") * cfg.lr
    if cfg.warmup_steps:
        assert abs(lr_at(cfg.warmup_steps - 1, cfg) - cfg.lr) <= tol
        assert abs(lr_at(0, cfg) - cfg.lr / cfg.warmup_steps) <= tol
    if cfg.warmup_steps < cfg.max_steps - 1:
        assert abs(lr_at(cfg.warmup_steps, cfg) - cfg.lr) <= tol
    assert lr_at(cfg.max_steps - 1, cfg) == cfg.min_lr
    assert lr_at(cfg.max_steps + 7, cfg) == cfg.min_lr


@given(configs(), st.floats(0.0, 1.0))
def test_cosine_closed_form_and_symmetry(cfg: OptimConfig, frac: float) -> None:
    span = cfg.max_steps - 1 - cfg.warmup_steps
    assume(span > 0)
    k = round(frac * span)
    lr = lr_at(cfg.warmup_steps + k, cfg)
    want = cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * k / span))
    tol = tolerance("LR-005", "float64") * cfg.lr
    assert abs(lr - want) <= tol
    # Cosine symmetry about the midpoint of the decay.
    assert abs(lr + lr_at(cfg.max_steps - 1 - k, cfg) - (cfg.lr + cfg.min_lr)) <= tol
