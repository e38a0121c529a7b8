"""Unit and property tests of ``albor.serve``: Albor's prompts, the /infill body and the arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from albor import serve
from albor.data import tokenizer as data_tokenizer


def _tokenize(text: str) -> list[int]:
    return [100 + ord(c) for c in text]


@given(st.text(max_size=20), st.one_of(st.none(), st.text(max_size=20)))
def test_prompts_are_albors(prompt: str, suffix: str | None) -> None:
    ids = serve.albor_prompt(_tokenize, prompt, suffix)
    if suffix is None:
        assert ids == [data_tokenizer.EOS, *_tokenize(prompt)]
    else:
        p, s = _tokenize(prompt), _tokenize(suffix)
        fim = [data_tokenizer.FIM_PREFIX, *p, data_tokenizer.FIM_SUFFIX, *s, data_tokenizer.FIM_MIDDLE]
        assert ids == [data_tokenizer.EOS, *fim]


def test_infill_body_tolerates_plugin_fields_and_checks_its_own() -> None:
    body = serve.InfillRequest.model_validate({"input_prefix": "a", "input_extra": [], "t_max_predict_ms": 5})
    assert (body.input_prefix, body.n_predict, body.temperature) == ("a", 128, 0.0)
    with pytest.raises(ValidationError, match="n_predict"):
        serve.InfillRequest.model_validate({"n_predict": 0})


@pytest.mark.parametrize("argv", [["m.gguf", "--port", "0"], ["m.gguf", "--threads", "0"], []])
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        serve.parse_args(argv, "albor serve")
    assert e.value.code == 2


def test_missing_model_is_refused_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main([str(tmp_path / "none.gguf")]) == 2
    assert "none.gguf" in capsys.readouterr().err
