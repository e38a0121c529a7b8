"""Property tests for the distillation loss (contracts/distill.yaml) over random logits and settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor.config.errors import ConfigError
from albor.config.overrides import validate
from albor.distill.distill import DistillSettings, kd_divergence, kd_loss_sum, renormalise


def _logits(seed: int, n: int, v: int, scale: float) -> torch.Tensor:
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed)) * scale


@given(st.integers(0, 10_000), st.integers(1, 9), st.integers(2, 40), st.floats(0.1, 5.0), st.floats(0.3, 8.0))
def test_kl_is_nonnegative(seed: int, n: int, v: int, scale: float, t: float) -> None:
    s, te = _logits(seed, n, v, scale), _logits(seed + 1, n, v, scale)
    for kl in ("forward", "reverse"):
        assert (kd_divergence(s, torch.log_softmax(te, -1), None, t, kl) >= -1e-6).all()


@given(st.integers(0, 10_000), st.integers(2, 40), st.floats(0.3, 8.0))
def test_topk_with_every_id_equals_full(seed: int, v: int, t: float) -> None:
    s, te = _logits(seed, 5, v, 2.0), _logits(seed + 1, 5, v, 2.0)
    logp = torch.log_softmax(te, -1)
    values, ids = logp.topk(v, -1)
    for kl in ("forward", "reverse"):
        full = kd_divergence(s, logp, None, t, kl)
        top = kd_divergence(s, values, ids, t, kl)
        assert torch.allclose(full, top, atol=1e-5, rtol=1e-5)


@given(st.integers(0, 10_000), st.floats(0.0, 1.0), st.floats(0.3, 8.0))
def test_loss_is_the_weighted_sum_of_its_terms(seed: int, alpha: float, t: float) -> None:
    s, te = _logits(seed, 7, 11, 2.0), _logits(seed + 1, 7, 11, 2.0)
    y = torch.randint(0, 11, (7,), generator=torch.Generator().manual_seed(seed))
    logp = torch.log_softmax(te, -1)
    settings = DistillSettings(teacher=Path("t"), alpha=alpha, temperature=t)
    got = kd_loss_sum(s, y, logp, None, settings)
    ce = torch.nn.functional.cross_entropy(s, y, reduction="sum")
    kl = kd_divergence(s, logp, None, t).sum()
    assert torch.allclose(got, alpha * t * t * kl + (1 - alpha) * ce, rtol=1e-5, atol=1e-5)


@given(st.integers(0, 10_000), st.integers(1, 12))
def test_renormalised_topk_is_a_distribution(seed: int, k: int) -> None:
    logp = torch.log_softmax(_logits(seed, 4, 12, 3.0), -1).topk(k, -1).values
    q = renormalise(logp, 1.0).exp()
    assert torch.allclose(q.sum(-1), torch.ones(4), atol=1e-6)
    assert (q[..., :-1] >= q[..., 1:]).all(), "renormalising keeps the teacher's order"


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        validate(DistillSettings, {"teacher": "t", "alpha": 1.5})
    with pytest.raises(ConfigError, match="kl"):
        validate(DistillSettings, {"teacher": "t", "kl": "sideways"})
