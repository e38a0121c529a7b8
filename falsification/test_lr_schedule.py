"""Falsifiers for the ``lr_schedule`` contract (contracts/lr_schedule.yaml)."""

from __future__ import annotations

from itertools import pairwise

import pytest

from albor.config import OptimConfig
from albor.optim.lr_schedule import lr_at
from albor.verify.contracts import tolerance
from albor.verify.references import lr_reference

# Decay spans (max_steps - 1 - warmup_steps) are even, so each has an exact midpoint step.
CONFIGS = [
    OptimConfig(lr=3e-4, min_lr=3e-5, warmup_steps=10, max_steps=111),
    OptimConfig(lr=1e-3, min_lr=0.0, warmup_steps=1, max_steps=8),
    OptimConfig(lr=6e-4, min_lr=6e-5, warmup_steps=0, max_steps=51),
    OptimConfig(lr=2e-3, min_lr=1e-4, warmup_steps=37, max_steps=1002),
]
IDS = [f"w{c.warmup_steps}-s{c.max_steps}" for c in CONFIGS]


@pytest.mark.claim("LR-001")
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_linear_warmup(cfg: OptimConfig) -> None:
    tol = tolerance("LR-001", "float64") * cfg.lr
    for s in range(cfg.warmup_steps):
        assert abs(lr_at(s, cfg) - cfg.lr * (s + 1) / cfg.warmup_steps) <= tol, s
    if cfg.warmup_steps:
        assert lr_at(0, cfg) > 0


@pytest.mark.claim("LR-002")
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_peak_at_warmup_end(cfg: OptimConfig) -> None:
    tol = tolerance("LR-002", "float64") * cfg.lr
    peak_steps = [cfg.warmup_steps] + ([cfg.warmup_steps - 1] if cfg.warmup_steps else [])
    for s in peak_steps:
        assert abs(lr_at(s, cfg) - cfg.lr) <= tol, s
    assert max(lr_at(s, cfg) for s in range(cfg.max_steps + 5)) <= cfg.lr + tol


@pytest.mark.claim("LR-003")
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_monotone_after_warmup(cfg: OptimConfig) -> None:
    lrs = [lr_at(s, cfg) for s in range(max(cfg.warmup_steps - 1, 0), cfg.max_steps + 20)]
    assert all(b <= a for a, b in pairwise(lrs))


@pytest.mark.claim("LR-004")
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_min_lr_at_last_step(cfg: OptimConfig) -> None:
    tol = tolerance("LR-004", "float64")
    for s in (cfg.max_steps - 1, cfg.max_steps, cfg.max_steps + 1000):
        assert abs(lr_at(s, cfg) - cfg.min_lr) <= tol, s
    assert lr_at(cfg.max_steps - 2, cfg) > cfg.min_lr, "min_lr is reached at the last step, not before"


@pytest.mark.claim("LR-005")
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_decays_through_midpoint(cfg: OptimConfig) -> None:
    mid = cfg.warmup_steps + (cfg.max_steps - 1 - cfg.warmup_steps) // 2
    lr = lr_at(mid, cfg)
    assert cfg.min_lr < lr < cfg.lr
    assert abs(lr - (cfg.lr + cfg.min_lr) / 2) <= tolerance("LR-005", "float64") * cfg.lr


# The edges: no decay step (warmup ends on the last step), one decay step, no warmup, the shortest runs.
EDGES = [
    OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=9, max_steps=10),
    OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=8, max_steps=10),
    OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0, max_steps=1),
    OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=0, max_steps=2),
    OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, max_steps=2),
    OptimConfig(lr=1e-3, min_lr=0.0, warmup_steps=0, max_steps=3),
]


@pytest.mark.claim("LR-006")
@pytest.mark.parametrize("cfg", EDGES, ids=[f"w{c.warmup_steps}-s{c.max_steps}" for c in EDGES])
def test_edges_match_the_written_out_schedule(cfg: OptimConfig) -> None:
    tol = tolerance("LR-006", "float64") * cfg.lr
    for s in range(cfg.max_steps + 3):
        want = lr_reference(s, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.max_steps)
        assert abs(lr_at(s, cfg) - want) <= tol, (s, lr_at(s, cfg), want)
    assert abs(lr_at(cfg.max_steps - 1, cfg) - cfg.min_lr) <= tol, "the last step is at min_lr"
