"""Hugging Face export: a folder ``transformers.AutoModelForCausalLM`` and ``AutoTokenizer`` load offline.

The decoder is LLaMA's: the fused q/k/v and gate/up projections are split into Hugging Face's
``q_proj``, ``k_proj``, ``v_proj``, ``gate_proj`` and ``up_proj``. Albor's RoPE pairs (x[i], x[i + d/2])
(rotate-half), which is the convention of ``LlamaForCausalLM``, so the q and k rows are kept as they
are; the ``export_hf`` contract checks it against Hugging Face's own rotary code.

Tokenizer: Albor's ``tokenizer.json``, with a post-processor that puts ``</s>`` before the text, as
before every training document; ``tokenizer_config.json`` sets ``split_special_tokens`` so that
special-token text in source (``"<s>"`` in a regex test) stays text, as in Albor. The BOS of the
exported model is therefore ``</s>`` (id 2): ``<s>`` never occurs in Albor's training data.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, processors

from albor.checkpoint import Inference
from albor.config import ModelConfig
from albor.data import tokenizer as data_tokenizer
from albor.export.staging import staged_dir
from albor.generate import load
from albor.model import Decoder

BOS_ID = data_tokenizer.EOS  # a document follows </s> in the packed stream; <s> is never trained


def hf_state_dict(model: Decoder) -> dict[str, torch.Tensor]:
    """The decoder's weights under Hugging Face LLaMA names, the fused projections split, in float32."""
    cfg = model.cfg
    q_rows, kv_rows = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    out = {"model.embed_tokens.weight": model.embed.weight}
    for i, block in enumerate(model.blocks):
        p = f"model.layers.{i}."
        q, k, v = block.attn.qkv.weight.split([q_rows, kv_rows, kv_rows], dim=0)
        gate, up = block.ffn.gate_up.weight.chunk(2, dim=0)
        out |= {
            p + "input_layernorm.weight": block.attn_norm,
            p + "self_attn.q_proj.weight": q,
            p + "self_attn.k_proj.weight": k,
            p + "self_attn.v_proj.weight": v,
            p + "self_attn.o_proj.weight": block.attn.out.weight,
            p + "post_attention_layernorm.weight": block.ffn_norm,
            p + "mlp.gate_proj.weight": gate,
            p + "mlp.up_proj.weight": up,
            p + "mlp.down_proj.weight": block.ffn.down.weight,
        }
    out["model.norm.weight"] = model.norm
    if model.head is not None:
        out["lm_head.weight"] = model.head.weight
    return {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in out.items()}


def hf_config(cfg: ModelConfig) -> dict:
    """``config.json`` of a ``LlamaForCausalLM`` of the same shape."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        # Both spellings: transformers 5 reads rope_parameters, earlier releases rope_theta.
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": BOS_ID,
        "eos_token_id": data_tokenizer.EOS,
        "pad_token_id": data_tokenizer.PAD,
        "torch_dtype": "float32",
        "albor_model": cfg.name,
    }


def generation_config() -> dict:
    """``generation_config.json``: greedy, stopping at ``</s>``."""
    return {
        "bos_token_id": BOS_ID,
        "eos_token_id": data_tokenizer.EOS,
        "pad_token_id": data_tokenizer.PAD,
        "do_sample": False,
    }


def hf_tokenizer_json(tokenizer: Tokenizer) -> str:
    """Albor's tokenizer with a post-processor that writes ``</s>`` before a text (``add_special_tokens``)."""
    tok = Tokenizer.from_str(tokenizer.to_str())
    eos = data_tokenizer.SPECIAL_TOKENS[data_tokenizer.EOS]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{eos} $A", pair=f"{eos} $A {eos} $B:1", special_tokens=[(eos, data_tokenizer.EOS)]
    )
    return tok.to_str()


def tokenizer_config(max_seq_len: int) -> dict:
    """``tokenizer_config.json``: the special and FIM tokens, and special-token text kept as text."""
    names = data_tokenizer.SPECIAL_TOKENS
    fim = list(names[data_tokenizer.FIM_PREFIX : data_tokenizer.FIM_MIDDLE + 1])
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names[BOS_ID],
        "eos_token": names[data_tokenizer.EOS],
        "unk_token": names[data_tokenizer.UNK],
        "pad_token": names[data_tokenizer.PAD],
        "additional_special_tokens": fim,
        "extra_special_tokens": fim,
        "fim_prefix_token": fim[0],
        "fim_suffix_token": fim[1],
        "fim_middle_token": fim[2],
        "split_special_tokens": True,
        "model_max_length": max_seq_len,
        "clean_up_tokenization_spaces": False,
    }


def write_hf(inference: Inference, out: Path) -> Path:
    """Write the Hugging Face folder of a loaded checkpoint to ``out`` (which must not exist yet)."""
    cfg = inference.model_config
    with staged_dir(out) as tmp:
        save_file(hf_state_dict(inference.model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        files = {
            "config.json": hf_config(cfg),
            "generation_config.json": generation_config(),
            "tokenizer_config.json": tokenizer_config(cfg.max_seq_len),
        }
        for name, obj in files.items():
            (tmp / name).write_text(json.dumps(obj, indent=2) + "\n")
        (tmp / "tokenizer.json").write_text(hf_tokenizer_json(inference.tokenizer))
        shutil.copyfile(inference.path / "config.yaml", tmp / "albor_config.yaml")
    return out


def export_hf(checkpoint: Path, out: Path) -> Path:
    """``albor export hf``: the checkpoint (or a run's latest that verifies) as a Hugging Face folder."""
    return write_hf(load(checkpoint, "cpu"), Path(out))
