"""Unit tests of ``albor.backend`` and ``albor complete``'s arguments."""

from __future__ import annotations

import pytest

from albor import complete
from albor.backend import open_backend


@pytest.mark.parametrize(
    "argv",
    [
        ["--checkpoint", "x"],
        ["--checkpoint", "x", "p", "--prefix", "a"],
        ["--checkpoint", "x", "--threads", "0", "p"],
        ["--checkpoint", "x", "--backend", "onnx", "p"],
        ["--checkpoint", "x", "--quant", "int3", "p"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as e:
        complete.parse_args(argv)
    assert e.value.code == 2


def test_defaults_are_the_float32_torch_path() -> None:
    args = complete.parse_args(["--checkpoint", "x", "p"])
    assert (args.backend, args.quant, args.threads) == ("torch", "none", None)


def test_quant_is_the_torch_backends() -> None:
    with pytest.raises(ValueError, match="--quant"):
        open_backend("llama.cpp", "model.gguf", "int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="CPU only"):
        open_backend("torch", "run", "int8", device="cuda")  # type: ignore[arg-type]
