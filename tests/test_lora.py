"""Property tests for LoRA settings and docstring pair mining (contracts/lora.yaml)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from albor.config.errors import ConfigError
from albor.config.overrides import validate
from albor.data.synthetic import python_source
from albor.ladder.lora import LoraSettings
from albor.ladder.pairs import function_pairs


def test_unknown_targets_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="targets"):
        validate(LoraSettings, {"targets": ["qkv", "head"]})
    with pytest.raises(ConfigError, match="r"):
        validate(LoraSettings, {"r": 0})


@given(st.integers(0, 10_000))
def test_pairs_split_functions_at_their_docstring(seed: int) -> None:
    source = python_source(seed)
    for prompt, body in function_pairs(source):
        lines = prompt.splitlines()
        assert lines[0].startswith(("def ", "async def ", "@")) and lines[-1].rstrip().endswith(('"""', "'''"))
        assert body.strip() and body.endswith("\n")
        assert prompt + body in source or all(line.strip() in source for line in (prompt + body).splitlines())


def test_methods_and_decorators_dedent_and_undocumented_are_skipped() -> None:
    source = (
        'class A:\n    @staticmethod\n    def f(x):\n        """Add one."""\n        return x + 1\n\n'
        "def g():\n    return 2\n"
    )
    assert function_pairs(source) == [('@staticmethod\ndef f(x):\n    """Add one."""\n', "    return x + 1\n")]
    assert function_pairs("def broken(:\n") == []
