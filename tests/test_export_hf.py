"""Unit and property tests of ``albor.export.export_hf`` and the staging every export writes through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from albor.config import ModelConfig
from albor.data import tokenizer as data_tokenizer
from albor.export.export_hf import hf_config, hf_state_dict, hf_tokenizer_json, tokenizer_config
from albor.export.staging import ExportError, staged_dir, staged_file
from albor.model import Decoder


@st.composite
def configs(draw: st.DrawFn) -> ModelConfig:
    kv = draw(st.integers(1, 3))
    heads = kv * draw(st.integers(1, 3))
    hd = 2 * draw(st.integers(1, 4))
    return ModelConfig(
        name="hf",
        n_layers=draw(st.integers(1, 3)),
        d_model=heads * hd,
        n_heads=heads,
        n_kv_heads=kv,
        d_ff=draw(st.integers(1, 20)),
        vocab_size=draw(st.integers(8, 40)),
        max_seq_len=8,
        tie_embeddings=draw(st.booleans()),
    )


@given(configs())
def test_state_dict_splits_and_names(cfg: ModelConfig) -> None:
    model = Decoder(cfg)
    sd = hf_state_dict(model)
    assert ("lm_head.weight" in sd) != cfg.tie_embeddings
    assert len(sd) == 2 + 9 * cfg.n_layers + (not cfg.tie_embeddings)
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        qkv = torch.cat([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"])
        assert torch.equal(qkv, block.attn.qkv.weight)
        assert sd[p + "self_attn.k_proj.weight"].shape == (cfg.n_kv_heads * cfg.head_dim, cfg.d_model)
        gate_up = torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])
        assert torch.equal(gate_up, block.ffn.gate_up.weight)
    assert all(t.is_contiguous() and t.dtype == torch.float32 for t in sd.values())


@given(configs())
def test_config_describes_the_shape(cfg: ModelConfig) -> None:
    c = hf_config(cfg)
    assert (c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"]) == (
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
    )
    assert (c["head_dim"], c["intermediate_size"], c["vocab_size"]) == (cfg.head_dim, cfg.d_ff, cfg.vocab_size)
    assert c["rope_theta"] == c["rope_parameters"]["rope_theta"] == cfg.rope_theta
    assert c["tie_word_embeddings"] == cfg.tie_embeddings and c["bos_token_id"] == data_tokenizer.EOS


def test_tokenizer_files_keep_special_text_as_text() -> None:
    c = tokenizer_config(64)
    assert c["split_special_tokens"] is True and c["model_max_length"] == 64
    assert [c["fim_prefix_token"], c["fim_suffix_token"], c["fim_middle_token"]] == list(
        data_tokenizer.SPECIAL_TOKENS[4:7]
    )
    tok = data_tokenizer.train_tokenizer(["def f(x):\n    return x\n"] * 4, 270)
    post = json.loads(hf_tokenizer_json(tok))["post_processor"]
    assert post["type"] == "TemplateProcessing" and post["single"][0]["SpecialToken"]["id"] == "</s>"


def test_staged_dir_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), staged_dir(out) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with staged_dir(out) as tmp:
        (tmp / "whole").write_text("x")
    assert [p.name for p in out.iterdir()] == ["whole"]
    with pytest.raises(ExportError, match="exists"), staged_dir(out):
        pass
    with pytest.raises(ExportError, match="no such directory"), staged_file(tmp_path / "missing" / "f"):
        pass
    with pytest.raises(RuntimeError), staged_file(tmp_path / "f.gguf") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
