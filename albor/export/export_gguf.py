"""GGUF export: one file llama.cpp loads, written with the ``gguf`` package straight from a checkpoint.

Architecture ``llama``: the ``llama.*`` shape metadata, the tensors under llama.cpp's names, and the
tokenizer as a ``gpt2``-model byte-level BPE with its merges, token types, BOS/EOS/FIM ids and the
``gpt-2`` pre-tokenizer (Albor's ByteLevel split is GPT-2's regex; an empty name would make llama.cpp
fall back to its default split and warn that generation quality is degraded).

RoPE: llama.cpp's ``llama`` architecture rotates adjacent pairs (x[2i], x[2i + 1]); Albor rotates
(x[i], x[i + d/2]). So the rows of each head of the q and k projections are permuted, exactly as
llama.cpp's own converter does for Hugging Face LLaMA checkpoints: with q and k permuted the same
way, every attention score is unchanged.

Types: ``f16`` (matrices in float16, gains in float32), ``q8_0`` (gguf-py's Q8_0; a matrix whose
rows are not a multiple of 32 stays float16, as in llama.cpp's converter) and ``q4_k_m``, which
llama.cpp's own quantiser (``llama_model_quantize``, in-process) makes from a float32 GGUF.

The BOS is ``</s>`` (id 2) with ``add_bos_token``: llama.cpp then puts ``</s>`` before a prompt, as
before every training document. Tokens past the tokenizer's vocabulary up to the model's are
written as unused padding tokens.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from tokenizers import Tokenizer

from albor.config import ModelConfig
from albor.data import tokenizer as data_tokenizer
from albor.export.staging import ExportError, staged_file
from albor.generate import load
from albor.model import Decoder

if TYPE_CHECKING:
    from gguf import GGUFWriter

GGUFType = Literal["f16", "q8_0", "q4_k_m"]
TYPES: tuple[GGUFType, ...] = ("f16", "q8_0", "q4_k_m")
PRE_TOKENIZER = "gpt-2"
BOS_ID = data_tokenizer.EOS
Q8_BLOCK = 32


def _gguf() -> ModuleType:
    """The gguf package, imported when an export runs (it is in the ``cpu`` extra)."""
    try:
        import gguf
    except ImportError as e:
        raise ExportError("GGUF export needs the gguf package: pip install 'albor[cpu]'") from e
    return gguf


def permute_rotary(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a q or k projection (n_heads * hd, d) from rotate-half pairs to llama.cpp's adjacent pairs.

    Within each head, output row 2i is input row i and row 2i + 1 is row i + hd/2.
    """
    rows, cols = w.shape
    hd = rows // n_heads
    return w.reshape(n_heads, 2, hd // 2, cols).transpose(1, 2).reshape(rows, cols)


def gguf_tensors(model: Decoder) -> Iterator[tuple[str, np.ndarray]]:
    """Every tensor of the decoder under its llama.cpp name, in float32, q and k permuted for llama.cpp's RoPE."""
    cfg = model.cfg
    q_rows, kv_rows = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim

    def f32(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).contiguous().numpy()

    yield "token_embd.weight", f32(model.embed.weight)
    for i, block in enumerate(model.blocks):
        q, k, v = block.attn.qkv.weight.split([q_rows, kv_rows, kv_rows], dim=0)
        gate, up = block.ffn.gate_up.weight.chunk(2, dim=0)
        yield f"blk.{i}.attn_norm.weight", f32(block.attn_norm)
        yield f"blk.{i}.attn_q.weight", f32(permute_rotary(q, cfg.n_heads))
        yield f"blk.{i}.attn_k.weight", f32(permute_rotary(k, cfg.n_kv_heads))
        yield f"blk.{i}.attn_v.weight", f32(v)
        yield f"blk.{i}.attn_output.weight", f32(block.attn.out.weight)
        yield f"blk.{i}.ffn_norm.weight", f32(block.ffn_norm)
        yield f"blk.{i}.ffn_gate.weight", f32(gate)
        yield f"blk.{i}.ffn_up.weight", f32(up)
        yield f"blk.{i}.ffn_down.weight", f32(block.ffn.down.weight)
    yield "output_norm.weight", f32(model.norm)
    if model.head is not None:
        yield "output.weight", f32(model.head.weight)


def vocabulary(tokenizer: Tokenizer, vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens by id, their llama.cpp token types, and the BPE merges as ``"a b"`` strings.

    Ids past the tokenizer's vocabulary, up to the model's ``vocab_size``, become unused padding tokens.
    """
    gguf = _gguf()
    by_id = {i: t for t, i in tokenizer.get_vocab(with_added_tokens=True).items()}
    n = len(by_id)
    if sorted(by_id) != list(range(n)):
        raise ExportError("the tokenizer's ids are not 0..n-1")
    if n > vocab_size:
        raise ExportError(f"the tokenizer has {n} tokens, the model only {vocab_size}")
    special = set(range(data_tokenizer.N_SPECIAL))
    tokens = [by_id[i] for i in range(n)] + [f"[PAD{i}]" for i in range(n, vocab_size)]
    normal, control, unused = (gguf.TokenType.NORMAL, gguf.TokenType.CONTROL, gguf.TokenType.UNUSED)
    types = [int(control if i in special else normal) for i in range(n)] + [int(unused)] * (vocab_size - n)
    model = json.loads(tokenizer.to_str())["model"]
    if model.get("type") != "BPE":
        raise ExportError(f"the tokenizer is a {model.get('type')} model; GGUF export writes byte-level BPE")
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, merges


def _add_metadata(writer: GGUFWriter, cfg: ModelConfig, tokenizer: Tokenizer, file_type: int) -> None:
    gguf = _gguf()
    writer.add_name(cfg.name)
    writer.add_context_length(cfg.max_seq_len)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.n_layers)
    writer.add_feed_forward_length(cfg.d_ff)
    writer.add_head_count(cfg.n_heads)
    writer.add_head_count_kv(cfg.n_kv_heads)
    writer.add_rope_dimension_count(cfg.head_dim)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(cfg.norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, types, merges = vocabulary(tokenizer, cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(PRE_TOKENIZER)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(data_tokenizer.EOS)
    writer.add_unk_token_id(data_tokenizer.UNK)
    writer.add_pad_token_id(data_tokenizer.PAD)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    keys = gguf.Keys.Tokenizer
    writer.add_uint32(keys.FIM_PRE_ID, data_tokenizer.FIM_PREFIX)
    writer.add_uint32(keys.FIM_SUF_ID, data_tokenizer.FIM_SUFFIX)
    writer.add_uint32(keys.FIM_MID_ID, data_tokenizer.FIM_MIDDLE)


def write_plain(model: Decoder, tokenizer: Tokenizer, path: Path, kind: Literal["f32", "f16", "q8_0"]) -> None:
    """Write a GGUF of ``model`` to ``path`` with gguf-py: matrices in float32, float16 or Q8_0; gains in float32."""
    gguf = _gguf()
    q = gguf.GGMLQuantizationType
    file_type = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}.get(
        kind, gguf.LlamaFileType.MOSTLY_Q8_0
    )
    writer = gguf.GGUFWriter(str(path), "llama")
    _add_metadata(writer, model.cfg, tokenizer, int(file_type))
    for name, data in gguf_tensors(model):
        if data.ndim == 1 or kind == "f32":
            writer.add_tensor(name, data)
        elif kind == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, q.Q8_0), raw_dtype=q.Q8_0)
        else:
            writer.add_tensor(name, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize_q4_k_m(source: Path, out: Path, threads: int = 0) -> None:
    """llama.cpp's own quantiser, in-process: ``source`` (a float GGUF) to Q4_K_M at ``out``."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ExportError("Q4_K_M export needs llama.cpp: pip install 'albor[cpu]'") from e
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if status != 0:
        raise ExportError(f"{out}: llama_model_quantize failed with status {status}")


def write_gguf(model: Decoder, tokenizer: Tokenizer, out: Path, kind: GGUFType) -> Path:
    """Write ``model`` with its tokenizer to the GGUF file ``out`` (which must not exist yet)."""
    if kind not in TYPES:
        raise ExportError(f"--type: {kind!r} is not one of {', '.join(TYPES)}")
    with staged_file(out) as tmp:
        if kind == "q4_k_m":
            with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".tmp-{out.name}.f32.") as scratch:
                source = Path(scratch) / "f32.gguf"
                write_plain(model, tokenizer, source, "f32")
                quantize_q4_k_m(source, tmp)
        else:
            write_plain(model, tokenizer, tmp, kind)
    return out


def export_gguf(checkpoint: Path, out: Path, kind: GGUFType) -> Path:
    """``albor export gguf``: the checkpoint (or a run's latest that verifies) as one GGUF file."""
    inference = load(checkpoint, "cpu")
    return write_gguf(inference.model, inference.tokenizer, Path(out), kind)
