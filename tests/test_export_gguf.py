"""Unit and property tests of ``albor.export.export_gguf``: the rotary row permutation, the vocabulary
and the tensor types it writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor.config import ModelConfig
from albor.data import tokenizer as data_tokenizer
from albor.export import export_gguf as gg
from albor.export.staging import ExportError
from albor.model import Decoder


@given(st.integers(1, 4), st.integers(1, 8), st.integers(1, 5))
def test_permutation_interleaves_each_head(n_heads: int, half: int, cols: int) -> None:
    hd = 2 * half
    w = torch.arange(n_heads * hd * cols, dtype=torch.float64).reshape(n_heads * hd, cols)
    out = gg.permute_rotary(w, n_heads)
    for h in range(n_heads):
        for i in range(half):
            assert torch.equal(out[h * hd + 2 * i], w[h * hd + i])
            assert torch.equal(out[h * hd + 2 * i + 1], w[h * hd + i + half])
    assert sorted(out[:, 0].tolist()) == sorted(w[:, 0].tolist())


def test_vocabulary_pads_to_the_model_and_types_tokens() -> None:
    pytest.importorskip("gguf", reason="gguf is not installed (pip install 'albor[cpu]')")
    from gguf import TokenType

    tok = data_tokenizer.train_tokenizer(["def f(x):\n    return x + 1\n"] * 8, 270)
    n = tok.get_vocab_size()
    tokens, types, merges = gg.vocabulary(tok, n + 5)
    assert len(tokens) == len(types) == n + 5 and tokens[-1] == f"[PAD{n + 4}]"
    assert types[: data_tokenizer.N_SPECIAL] == [TokenType.CONTROL] * data_tokenizer.N_SPECIAL
    assert set(types[data_tokenizer.N_SPECIAL : n]) == {TokenType.NORMAL} and set(types[n:]) == {TokenType.UNUSED}
    assert merges and all(len(m.split(" ")) == 2 for m in merges)
    with pytest.raises(ExportError, match="the model only"):
        gg.vocabulary(tok, n - 1)


def test_q8_0_keeps_rows_it_cannot_block_in_float16(tmp_path: Path) -> None:
    pytest.importorskip("gguf", reason="gguf is not installed (pip install 'albor[cpu]')")
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFReader

    cfg = ModelConfig(name="q8", n_layers=1, d_model=64, n_heads=2, n_kv_heads=1, d_ff=40, vocab_size=300)
    tok = data_tokenizer.train_tokenizer(["def f(x):\n    return x + 1\n"] * 8, 280)
    path = gg.write_gguf(Decoder(cfg), tok, tmp_path / "m.gguf", "q8_0")
    types = {t.name: t.tensor_type for t in GGUFReader(str(path)).tensors}
    assert types["blk.0.ffn_down.weight"] == Q.F16  # rows of 40: not whole blocks of 32
    assert types["blk.0.ffn_up.weight"] == types["token_embd.weight"] == Q.Q8_0
    assert types["blk.0.attn_norm.weight"] == Q.F32
    with pytest.raises(ExportError, match="--type"):
        gg.write_gguf(Decoder(cfg), tok, tmp_path / "x.gguf", "q5_0")  # type: ignore[arg-type]
