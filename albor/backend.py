"""Completion backends for the CPU: Albor's decoder in torch (float32, int8 or int4 weights), or a GGUF
through llama.cpp. Each is loaded once and then serves any number of completions.

A backend gives the tokenizer, the context length, and ``session()``: a fresh sequence whose
``feed(ids)`` appends tokens and returns the float32 logits of the next one. ``albor.generate``
decodes over it, so sampling, stop strings and FIM prompts are the same code for both backends.

llama.cpp's tokenizer for a GGUF written by ``albor export gguf`` is Albor's BPE; the backend rebuilds
it from the GGUF's own vocabulary and merges (the ``export_gguf`` contract checks that llama.cpp
tokenizes the same way), so a prompt becomes the same ids on either backend.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from albor.data import tokenizer as data_tokenizer
from albor.generate import CachedDecoder, load

if TYPE_CHECKING:
    from llama_cpp import Llama

BackendName = Literal["torch", "llama.cpp"]

# What llama.cpp's system info says of a build with its AMX kernels compiled in (a native build on a
# Sapphire Rapids or later CPU).
AMX_BUILD = "AMX_INT8 = 1"


def llama_cpp_module() -> ModuleType:
    """llama-cpp-python, once its build is known to decode: a build with llama.cpp's AMX kernels crashes
    in its first matmul of quantised weights (ALB-298), so it is refused with the way to rebuild it."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ValueError("running a GGUF needs llama.cpp: pip install 'albor[cpu]' as README.md builds it") from e
    if AMX_BUILD in llama_cpp.llama_print_system_info().decode():
        raise ValueError(
            f"{Path(llama_cpp.__file__).parent}: this llama.cpp was built with its AMX kernels, whose matmul "
            "crashes the first decode of a quantised GGUF (ggml-org/llama.cpp#20824); rebuild it with "
            "cmake/llama-cpp.cmake, as README.md's second command does, adding --no-cache-dir --force-reinstall "
            "(pip would reuse its cached build)"
        )
    return llama_cpp


Quant = Literal["none", "int8", "int4"]
INT4_GROUP = 32


class TorchBackend:
    """Albor's decoder from a checkpoint, its linears optionally replaced by int8 or int4 twins."""

    def __init__(
        self, checkpoint: Path, quant: Quant = "none", threads: int | None = None, device: str = "cpu"
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        if quant != "none" and device != "cpu":
            raise ValueError(f"--quant {quant} runs on the CPU only, not on {device}")
        inference = load(checkpoint, device)
        self.model = inference.model
        if quant != "none":
            from albor.export.quantize import quantize_decoder

            quantize_decoder(self.model, 8 if quant == "int8" else 4, INT4_GROUP)
        self.tokenizer = inference.tokenizer
        self.max_seq_len = inference.model_config.max_seq_len

    def session(self) -> CachedDecoder:
        return CachedDecoder(self.model)


def gguf_tokenizer(path: Path) -> Tokenizer:
    """The byte-level BPE stored in a GGUF (``tokenizer.ggml.*``), as a ``tokenizers`` tokenizer.

    Unused padding tokens are left out; the fixed special tokens keep ids 0..6.
    """
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key: str) -> list:
        f = reader.get_field(key)
        if f is None:
            raise ValueError(f"{path}: no {key} in the GGUF")
        return f.contents()

    if field("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{path}: the tokenizer is not a gpt2-style byte-level BPE")
    tokens, types = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type")
    vocab = {t: i for i, (t, k) in enumerate(zip(tokens, types, strict=True)) if k != gguf.TokenType.UNUSED}
    merges = [tuple(m.split(" ")) for m in field("tokenizer.ggml.merges")]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(data_tokenizer.SPECIAL_TOKENS))
    return data_tokenizer.tokenizer_from_json(tok.to_str(), str(path))


class LlamaCppSession:
    """A sequence in a llama.cpp context: tokens are decoded into its KV cache through llama.cpp's C API
    (``llama_decode``), as bare llama.cpp does; ``Llama.eval`` would add a Python batch loop and a
    logits copy per token."""

    def __init__(self, llm: Llama) -> None:
        import llama_cpp

        self._c = llama_cpp
        self._llm = llm  # owns the context below: it must outlive the session
        self._ctx = llm.ctx
        self._n_batch = llm.n_batch
        self._n_vocab = llm.n_vocab()
        llm.reset()  # llama-cpp-python's own record of the cached tokens, which this session clears
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self._ctx), True)

    def feed(self, ids: Sequence[int]) -> torch.Tensor:
        c = self._c
        for start in range(0, len(ids), self._n_batch):
            chunk = ids[start : start + self._n_batch]
            tokens = (ctypes.c_int32 * len(chunk))(*chunk)
            code = c.llama_decode(self._ctx, c.llama_batch_get_one(tokens, len(chunk)))
            if code != 0:
                raise RuntimeError(f"llama_decode returned {code} for {len(chunk)} tokens")
        row = np.ctypeslib.as_array(c.llama_get_logits_ith(self._ctx, -1), shape=(self._n_vocab,))
        return torch.from_numpy(row.copy())


class LlamaCppBackend:
    """A GGUF in llama.cpp (llama-cpp-python), with the tokenizer stored in the file."""

    def __init__(self, gguf_path: Path, threads: int | None = None) -> None:
        llama_cpp = llama_cpp_module()
        path = Path(gguf_path)
        if not path.is_file():
            raise ValueError(f"{path}: no such GGUF file")
        self.tokenizer = gguf_tokenizer(path)
        # flash_attn: llama.cpp's own default turns it on where the CPU supports it; llama-cpp-python's turns it off.
        self.llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=0, n_threads=threads, n_threads_batch=threads, flash_attn=True, verbose=False
        )
        # llama.cpp pads its context to a multiple of 256; the model knows only its trained positions (ALB-216).
        self.max_seq_len = llama_cpp.llama_model_n_ctx_train(self.llm.model)
        check_vocab(self.tokenizer, self.llm.n_vocab(), path)

    def session(self) -> LlamaCppSession:
        return LlamaCppSession(self.llm)


def check_vocab(tokenizer: Tokenizer, n_vocab: int, where: Path) -> None:
    """Refuse a tokenizer that does not fit the model's vocabulary."""
    if tokenizer.get_vocab_size() > n_vocab:
        raise ValueError(f"{where}: the tokenizer has {tokenizer.get_vocab_size()} ids, the model only {n_vocab}")


def open_backend(
    name: BackendName, path: Path, quant: Quant = "none", threads: int | None = None, device: str = "cpu"
) -> TorchBackend | LlamaCppBackend:
    """The backend ``name`` for ``path``: a checkpoint or run dir (torch) or a GGUF file (llama.cpp)."""
    if name == "torch":
        return TorchBackend(path, quant, threads, device)
    if quant != "none":
        raise ValueError("--quant applies to the torch backend; a GGUF's type is chosen at export")
    return LlamaCppBackend(path, threads)
