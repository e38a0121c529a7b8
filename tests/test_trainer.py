"""Unit tests of the trainer's configuration: bad values are refused with the field named (a ValueError)."""

from __future__ import annotations

import re

import pytest

from albor.train.config import load_config


@pytest.mark.parametrize("budget", ["0", "-0.5", "1.5"])
def test_activation_memory_budget_out_of_range_is_refused(budget: str) -> None:
    with pytest.raises(ValueError, match="activation_memory_budget"):
        load_config("pretrain-350m", [f"activation_memory_budget={budget}"])


def test_activation_memory_budget_needs_compile() -> None:
    with pytest.raises(ValueError, match=re.escape("activation_memory_budget=0.5 needs compile: true")):
        load_config("pretrain-350m", ["compile=false", "activation_memory_budget=0.5"])


def test_activation_memory_budget_is_kept() -> None:
    assert load_config("pretrain-350m", ["activation_memory_budget=0.5"]).activation_memory_budget == 0.5
    assert load_config("default", []).activation_memory_budget == 1.0


def test_vocab_mismatch_names_both_fields() -> None:
    with pytest.raises(ValueError, match=r"model.vocab_size \(32768\) must equal data.vocab_size \(8192\)"):
        load_config("pretrain-350m", ["data.vocab_size=8192"])
