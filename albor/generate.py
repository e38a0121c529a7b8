"""Decoding with a KV cache: greedy or sampled, streamed as token ids or as text, and FIM infill.

The prompt is fed once (prefill); each new token then costs one single-position forward over the
cached keys and values. The ``generate`` contract checks that the cached logits equal a full
recompute at every step.

Prompts look like training documents: encoded as the data pipeline encodes text (special-token
strings stay text) and preceded by ``</s>``, the token before every document in the packed stream.
A FIM prompt is ``</s> <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>`` (PSM).

Context policy: the prompt and the completion share ``max_seq_len``. A prompt longer than
``max_seq_len - max_new_tokens`` keeps its last tokens and a warning says how many were cut (ALB-074:
a sequence past the context must never reach the model). ``max_new_tokens`` must be below
``max_seq_len``. A FIM prompt that does not fit is refused, since cutting it would drop a sentinel.

Sampling: ``temperature`` 0 is greedy (argmax); otherwise logits are divided by the temperature,
cut to the ``top_k`` most likely tokens and then to the smallest set whose probability reaches
``top_p``, and one token is drawn in float64 on the CPU from a generator seeded by ``seed`` (so a
seeded run gives the same tokens on any device whose logits agree).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from tokenizers import Tokenizer

from albor.checkpoint import Inference, load_for_inference
from albor.config import ModelConfig
from albor.data import tokenizer as data_tokenizer
from albor.model import Decoder, KVCache

SPECIAL_TOKENS = data_tokenizer.SPECIAL_TOKENS
EOS_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID, FIM_MIDDLE_ID = (
    data_tokenizer.EOS,
    data_tokenizer.FIM_PREFIX,
    data_tokenizer.FIM_SUFFIX,
    data_tokenizer.FIM_MIDDLE,
)
REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class Sampling:
    """How the next token is chosen; by default, greedy decoding."""

    temperature: float = 0.0
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")

    def generator(self) -> torch.Generator:
        gen = torch.Generator()
        if self.seed is None:
            gen.seed()
        else:
            gen.manual_seed(self.seed)
        return gen


def next_token(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """The token chosen from ``logits`` (V,) under ``sampling``."""
    if sampling.temperature == 0:
        return int(logits.argmax())
    scores = logits.detach().to("cpu", torch.float64) / sampling.temperature
    if sampling.top_k is not None and sampling.top_k < scores.numel():
        kth = torch.topk(scores, sampling.top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if sampling.top_p is not None and sampling.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        # Keep each token whose more likely predecessors hold less than top_p: the smallest nucleus.
        keep = sorted_probs.cumsum(0) - sorted_probs < sampling.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class CachedDecoder:
    """A model with its KV cache for one sequence: feed it tokens, get the next-token logits."""

    def __init__(self, model: Decoder) -> None:
        param = next(model.parameters())
        self.model = model
        self.cache = KVCache.empty(model.cfg, 1, param.device, param.dtype)

    @property
    def length(self) -> int:
        return self.cache.length

    @torch.no_grad()
    def feed(self, ids: Sequence[int]) -> torch.Tensor:
        """Append ``ids`` to the cached sequence; float32 logits (V,) for the token after the last one."""
        x = torch.tensor([list(ids)], dtype=torch.long, device=self.cache.k[0].device)
        h = self.model.hidden(x, self.cache)[0, -1]
        return self.model.logits(h)


def fit_prompt(prompt_ids: Sequence[int], max_new_tokens: int, max_seq_len: int) -> list[int]:
    """The prompt cut from the left so that it and ``max_new_tokens`` fit the context (warns when it cuts)."""
    if not 1 <= max_new_tokens < max_seq_len:
        raise ValueError(f"max_new_tokens must lie in [1, max_seq_len={max_seq_len}), got {max_new_tokens}")
    ids = list(prompt_ids)
    if not ids:
        raise ValueError("the prompt is empty")
    room = max_seq_len - max_new_tokens
    if len(ids) > room:
        warnings.warn(
            f"prompt of {len(ids)} tokens truncated from the left to its last {room} "
            f"(max_seq_len {max_seq_len} - max_new_tokens {max_new_tokens})",
            stacklevel=3,
        )
        ids = ids[-room:]
    return ids


class Session(Protocol):
    """One sequence being decoded: ``feed`` appends tokens and returns the next token's float32 logits (V,)."""

    def feed(self, ids: Sequence[int]) -> torch.Tensor: ...


class Backend(Protocol):
    """A loaded model that starts fresh sequences (``albor.backend``: torch or llama.cpp)."""

    max_seq_len: int

    def session(self) -> Session: ...


def _start(model: Decoder | Backend) -> tuple[Session, int]:
    if isinstance(model, Decoder):
        return CachedDecoder(model), model.cfg.max_seq_len
    return model.session(), model.max_seq_len


def generate(
    model: Decoder | Backend,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    eos_id: int | None = EOS_ID,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` new token ids after ``prompt_ids``; stops before ``eos_id``."""
    sampling = Sampling(temperature, top_k, top_p, seed)
    decoder, max_seq_len = _start(model)
    ids = fit_prompt(prompt_ids, max_new_tokens, max_seq_len)
    generator = sampling.generator()
    logits = decoder.feed(ids)
    for i in range(max_new_tokens):
        token = next_token(logits, sampling, generator)
        if token == eos_id:
            return
        yield token
        if i + 1 < max_new_tokens:
            logits = decoder.feed([token])


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters of ``text`` might still become part of a stop string.

    An unfinished UTF-8 character decodes as U+FFFD; it and the longest proper prefix of a stop
    string that ends just before it are held until the next tokens settle them.
    """
    settled = text.rstrip(REPLACEMENT_CHAR)
    longest = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(settled)), longest, -1):
            if settled.endswith(s[:k]):
                longest = k
                break
    return len(text) - len(settled) + longest


def first_stop(text: str, stop: Sequence[str]) -> int | None:
    """Index of the earliest stop string in ``text``, or None."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(hits) if hits else None


def stream_text(
    model: Decoder | Backend,
    tokenizer: Tokenizer,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    stop: Sequence[str] = (),
    sampling: Sampling | None = None,
    eos_id: int | None = EOS_ID,
) -> Iterator[str]:
    """Yield the completion's text as it grows, never a stop string.

    Generation ends at the first token after which the decoded text holds a stop string; the text
    is cut where the earliest stop string in it begins. Text that could still grow into a stop
    string, and an unfinished UTF-8 character, are held back until the next token settles them.
    """
    sampling = sampling or Sampling()
    if any(not s for s in stop):
        raise ValueError("stop strings must not be empty")
    ids: list[int] = []
    emitted = 0
    s = sampling
    tokens = generate(model, prompt_ids, max_new_tokens, s.temperature, s.top_k, s.top_p, s.seed, eos_id)
    for token in tokens:
        ids.append(token)
        text = tokenizer.decode(ids)
        cut = first_stop(text, stop)
        if cut is not None:
            if cut > emitted:
                yield text[emitted:cut]
            return
        end = len(text) - _held_back(text, stop)
        if end > emitted:
            yield text[emitted:end]
            emitted = end
    text = tokenizer.decode(ids)
    if len(text) > emitted:
        yield text[emitted:]


def encode(tokenizer: Tokenizer, text: str) -> list[int]:
    """A prompt as the model saw documents in training: after the previous document's ``</s>``.

    The text is encoded as the data pipeline encodes it (special-token strings stay text).
    """
    return [EOS_ID, *data_tokenizer.encode(tokenizer, text)]


def fim_prompt(tokenizer: Tokenizer, prefix: str, suffix: str, max_new_tokens: int, max_seq_len: int) -> list[int]:
    """The PSM infill prompt ``</s> <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>``, as in training.

    Refused, never cut, when it and ``max_new_tokens`` do not fit the context.
    """
    ids = [
        EOS_ID,
        FIM_PREFIX_ID,
        *data_tokenizer.encode(tokenizer, prefix),
        FIM_SUFFIX_ID,
        *data_tokenizer.encode(tokenizer, suffix),
        FIM_MIDDLE_ID,
    ]
    if len(ids) + max_new_tokens > max_seq_len:
        raise ValueError(
            f"FIM prompt of {len(ids)} tokens plus max_new_tokens {max_new_tokens} exceeds max_seq_len "
            f"{max_seq_len}; shorten the prefix or suffix (a FIM prompt is never truncated)"
        )
    return ids


def check_tokenizer(tokenizer: Tokenizer, cfg: ModelConfig) -> None:
    """Refuse a tokenizer that cannot be the model's own: special ids moved or a vocabulary too large."""
    size = tokenizer.get_vocab_size()
    if size > cfg.vocab_size:
        raise ValueError(f"tokenizer has {size} tokens but the model only {cfg.vocab_size}: not this model's tokenizer")
    found = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    wrong = {t: (f, i) for i, (t, f) in enumerate(zip(SPECIAL_TOKENS, found, strict=True)) if f != i}
    if wrong:
        raise ValueError(f"tokenizer's special token ids differ from the fixed ones (found, expected): {wrong}")


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load(checkpoint: Path, device: torch.device | str) -> Inference:
    """A checkpoint for generation or evaluation, with the tokenizer it was trained with (ALB-131)."""
    inference = load_for_inference(Path(checkpoint), device)
    check_tokenizer(inference.tokenizer, inference.model_config)
    # Not kept in tokenizer.json: without it "<s>" in a prompt would encode as the special id.
    inference.tokenizer.encode_special_tokens = True
    return inference
