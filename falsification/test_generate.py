"""Falsifiers for the ``generate`` contract (contracts/generate.yaml)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import Tokenizer

from albor.checkpoint import save_checkpoint
from albor.config import ModelConfig, load_model_config
from albor.data.fim import fim_invert, parts_from_ids
from albor.data.tokenizer import save_tokenizer, train_tokenizer
from albor.eval.humaneval import load_problems
from albor.generate import (
    CachedDecoder,
    Sampling,
    check_tokenizer,
    encode,
    fim_prompt,
    first_stop,
    generate,
    load,
    next_token,
    stream_text,
)
from albor.model import Decoder
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err

PRESETS = ["tiny", "50m", "125m", "350m"]
CFG = ModelConfig(
    name="gen-test", n_layers=2, d_model=24, n_heads=3, n_kv_heads=1, d_ff=40, vocab_size=301, max_seq_len=41
)


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    return train_tokenizer([p.prompt + p.canonical_solution for p in load_problems()], 300)


def _model(cfg: ModelConfig = CFG, device: torch.device | str = "cpu", dtype=torch.float32, std=0.3) -> Decoder:
    torch.manual_seed(0)
    return Decoder(cfg.model_copy(update={"init_std": std})).to(device, dtype).eval()


def _ids(n: int, high: int = CFG.vocab_size, seed: int = 1) -> list[int]:
    return torch.randint(7, high, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def _preset_geometry(preset: str) -> ModelConfig:
    """The preset's attention geometry (d_model, heads, KV heads, head_dim, RoPE base) on two layers."""
    return load_model_config(preset).model_copy(
        update={"n_layers": 2, "d_ff": 40, "vocab_size": 301, "max_seq_len": 37}
    )


def _check_cache_against_recompute(model: Decoder, prompt: list[int], steps: int, dtype: torch.dtype) -> None:
    """Feed ``steps`` tokens one at a time (argmax and random in turn); compare each step with a full forward."""
    decoder = CachedDecoder(model)
    ids = list(prompt)
    cached = [decoder.feed(ids)]
    for i in range(steps):
        ids.append(int(cached[-1].argmax()) if i % 2 else _ids(1, model.cfg.vocab_size, seed=i)[0])
        cached.append(decoder.feed(ids[-1:]))
    with torch.no_grad():
        full = model(torch.tensor([ids], device=decoder.cache.k[0].device))[0]
    tol = tolerance("GEN-001", dtype)
    for step, logits in enumerate(cached):
        err = rel_err(logits, full[len(prompt) - 1 + step])
        assert err <= tol, f"step {step}: rel err {err:.3g} > {tol}"


@pytest.mark.claim("GEN-001")
@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cached_logits_match_full_recompute(device: torch.device, preset: str, dtype: torch.dtype) -> None:
    cfg = _preset_geometry(preset)
    model = _model(cfg, device, dtype, std=0.05)
    prompt = _ids(5)
    _check_cache_against_recompute(model, prompt, cfg.max_seq_len - len(prompt), dtype)
    assert CachedDecoder(model).cache.k[0].shape[2] == cfg.max_seq_len


@pytest.mark.slow
@pytest.mark.claim("GEN-001")
@pytest.mark.parametrize("preset", PRESETS)
def test_cached_logits_full_size_presets(device: torch.device, preset: str) -> None:
    cfg = load_model_config(preset)
    model = _model(cfg, device, torch.float32, std=cfg.init_std)
    _check_cache_against_recompute(model, _ids(9, cfg.vocab_size), 8, torch.float32)


@pytest.mark.claim("GEN-002")
def test_greedy_equals_recompute_argmax(device: torch.device) -> None:
    model, prompt = _model(device=device), _ids(6)
    out = list(generate(model, prompt, 20, eos_id=None))
    assert len(out) == 20
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            ids.append(int(model(torch.tensor([ids], device=device))[0, -1].argmax()))
    assert out == ids[len(prompt) :]


@pytest.mark.claim("GEN-003")
def test_seeded_sampling(device: torch.device) -> None:
    model, prompt = _model(device=device, std=0.02), _ids(4)

    def sample(seed: int, **kw) -> list[int]:
        return list(generate(model, prompt, 16, temperature=1.0, seed=seed, eos_id=None, **kw))

    assert sample(1) == sample(1) and sample(1, top_k=50, top_p=0.9) == sample(1, top_k=50, top_p=0.9)
    assert sample(1) != sample(2)


@pytest.mark.claim("GEN-004")
def test_sampling_filters() -> None:
    logits = torch.tensor([2.0, 0.3, -1.0, 1.2, 0.9, -0.4, 1.7, 0.0, -2.0, 0.6, 1.0])
    probs = torch.softmax(logits.double(), 0)
    gen = torch.Generator().manual_seed(0)

    def draws(n: int, **kw) -> torch.Tensor:
        s = Sampling(**kw)
        return torch.tensor([next_token(logits, s, gen) for _ in range(n)])

    top3 = set(torch.topk(logits, 3).indices.tolist())
    assert set(draws(300, temperature=1.0, top_k=3).tolist()) == top3
    order = probs.argsort(descending=True)
    nucleus = set(order[: int((probs[order].cumsum(0) < 0.6).sum()) + 1].tolist())
    assert set(draws(400, temperature=1.0, top_p=0.6).tolist()) == nucleus
    n = 4000
    freq = torch.bincount(draws(n, temperature=1.0), minlength=len(logits)).double() / n
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() <= tolerance("GEN-004") * se).all(), (freq, probs)
    assert set(draws(50, temperature=1e-4).tolist()) == {int(logits.argmax())}


@pytest.mark.claim("GEN-005")
def test_eos_and_stop_strings(device: torch.device, tokenizer: Tokenizer) -> None:
    model, prompt = _model(device=device), _ids(5, high=300)
    seq = list(generate(model, prompt, 30, eos_id=None))
    assert len(seq) == 30 and len(list(generate(model, prompt, 7, eos_id=None))) == 7
    eos = seq[11]
    assert list(generate(model, prompt, 30, eos_id=eos)) == seq[: seq.index(eos)]

    text = tokenizer.decode(seq)
    with_eos = list(generate(model, prompt, 30))
    assert "".join(stream_text(model, tokenizer, prompt, 30)) == tokenizer.decode(with_eos)
    starts = [i for i in range(3, len(text) - 2) if "\ufffd" not in text[i : i + 2] and not text[i : i + 2].isspace()]
    assert starts, f"no plain two-character run in {text!r}"
    stop = text[starts[0] : starts[0] + 2]

    def streamed(stops: list[str]) -> list[str]:
        return list(stream_text(model, tokenizer, prompt, 30, stops, Sampling(), eos_id=None))

    pieces = streamed([stop, "\x00never\x00"])
    assert "".join(streamed([])) == text
    assert "".join(pieces) == text[: text.find(stop)]
    assert all(stop not in p for p in pieces) and stop not in "".join(pieces)


@pytest.mark.claim("GEN-006")
def test_long_prompt_truncated_with_warning(device: torch.device) -> None:
    model, prompt = _model(device=device), _ids(CFG.max_seq_len + 9)
    with pytest.warns(UserWarning, match="truncated from the left to its last 33") as caught:
        out = list(generate(model, prompt, 8, eos_id=None))
    assert [w.filename for w in caught] == [__file__], "the warning names the line that asked for the completion"
    assert out == list(generate(model, prompt[-33:], 8, eos_id=None))
    with pytest.raises(ValueError, match="max_new_tokens"):
        list(generate(model, prompt, CFG.max_seq_len))


@pytest.mark.claim("GEN-007")
def test_fim_prompt(tokenizer: Tokenizer) -> None:
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    ids = fim_prompt(tokenizer, prefix, suffix, 8, 64)
    body = [tokenizer.encode(t, add_special_tokens=False).ids for t in (prefix, suffix)]
    assert ids == [2, 4, *body[0], 5, *body[1], 6]
    assert fim_invert(parts_from_ids(ids[1:], tokenizer.decode)) == prefix + suffix
    with pytest.raises(ValueError, match="never truncated"):
        fim_prompt(tokenizer, prefix * 20, suffix, 8, 64)


def _checkpoint(tmp_path: Path, model: Decoder, tokenizer: Tokenizer) -> Path:
    tok_path = tmp_path / "tokenizer.json"
    save_tokenizer(tokenizer, tok_path)
    run = yaml.safe_dump({"model": model.cfg.model_dump(mode="json")})
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return save_checkpoint(
        tmp_path / "run" / "checkpoints",
        3,
        model=model,
        optimizer=opt,
        state={"step": 3},
        config_yaml=run,
        tokenizer_path=tok_path,
    )


@pytest.mark.claim("GEN-008")
def test_complete_cli(tmp_path: Path, tokenizer: Tokenizer, capsys) -> None:
    from albor import complete

    model = _model(std=0.05)
    ckpt = _checkpoint(tmp_path, model, tokenizer)
    args = ["--checkpoint", str(tmp_path / "run"), "--max-new-tokens", "12", "--device", "cpu"]
    assert complete.main([*args, "def fib(n):"]) == 0
    expected = "".join(stream_text(model, tokenizer, encode(tokenizer, "def fib(n):"), 12))
    assert capsys.readouterr().out == expected + "\n"
    assert complete.main([*args, "--prefix", "def f(x):\n    return ", "--suffix", "\n"]) == 0
    capsys.readouterr()
    # Without --device the decoder runs on CUDA where the machine has it, else on the CPU.
    assert complete.parse_args([*args[:-2], "x"]).device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert complete.main([*args[:-2], "def fib(n):"]) == 0 and capsys.readouterr().out.endswith("\n")
    # Special-token text in a prompt stays text for the loaded tokenizer, as in the training data.
    loaded = load(ckpt, "cpu").tokenizer
    assert min(loaded.encode("<s></s><|fim_prefix|>").ids) >= 7, "a special id from text in a prompt"

    assert complete.main(["--checkpoint", str(tmp_path / "missing"), "x"]) == 2
    assert "missing" in capsys.readouterr().err
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert complete.main(["--checkpoint", str(ckpt), "x"]) == 2
    assert "model.safetensors" in capsys.readouterr().err


def _printable_model(tokenizer: Tokenizer, device: torch.device) -> Decoder:
    """A model whose greedy text is printable: every token that is a special, a partial UTF-8 character or a
    control character gets logit 0, below the best of the rest."""
    model = _model(device=device)
    bad = [i for i in range(CFG.vocab_size) if i < 7 or not (s := tokenizer.decode([i])).isprintable() or "\ufffd" in s]
    with torch.no_grad():
        model.head.weight[bad] = 0
    return model


@pytest.mark.claim("GEN-009")
def test_edges(device: torch.device, tokenizer: Tokenizer) -> None:
    model, prompt = _printable_model(tokenizer, device), _ids(5, high=300)
    n = 12
    text = tokenizer.decode(list(generate(model, prompt, n, eos_id=None)))
    assert len(text) >= 6 and text.isprintable(), text

    def streamed(stops: list[str], ids: list[int] = prompt, new: int = n) -> str:
        return "".join(stream_text(model, tokenizer, ids, new, stops, Sampling(), eos_id=None))

    assert streamed([text[:1]]) == "" and streamed([text[:3]]) == "", "a stop string at index 0"
    assert streamed([text]) == "", "the whole completion as the stop string: nothing may be emitted before the end"
    last = next(text[-k:] for k in range(2, len(text)) if text.find(text[-k:]) == len(text) - k)
    assert streamed([last]) == text[: -len(last)], "a stop string that the last token completes"
    assert streamed([text + "x"]) == text, "a stop string one character longer than the completion"

    cfg = model.cfg
    with torch.no_grad():
        want = int(model(torch.tensor([prompt[:1]], device=device))[0, -1].argmax())
    assert list(generate(model, prompt[:1], 1, eos_id=None)) == [want], "one-token prompt, one new token"
    full = _ids(cfg.max_seq_len - 3, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt that fits exactly is not truncated
        out = list(generate(model, full, 3, eos_id=None))
    ids = list(full)
    with torch.no_grad():
        for _ in range(3):
            ids.append(int(model(torch.tensor([ids], device=device))[0, -1].argmax()))
    assert out == ids[len(full) :] and len(ids) == cfg.max_seq_len, "the last position of the context"
    with pytest.raises(ValueError, match=r"^the prompt is empty$"):
        list(generate(model, [], 3))


@pytest.mark.claim("GEN-010")
def test_settings_at_their_edges(device: torch.device, tokenizer: Tokenizer) -> None:
    # Each setting's last value inside its range is taken, its first outside refused by name.
    for ok in ({"temperature": 0.0}, {"top_k": 1}, {"top_p": 1.0}, {"top_p": 1e-9}):
        Sampling(**ok)
    for bad, message in (
        ({"temperature": -1e-9}, r"^temperature must be >= 0, got -1e-09$"),
        ({"top_k": 0}, r"^top_k must be >= 1, got 0$"),
        ({"top_p": 0.0}, r"^top_p must lie in \(0, 1\], got 0.0$"),
        ({"top_p": 1.0 + 1e-9}, r"^top_p must lie in \(0, 1\], got 1.000000001$"),
    ):
        with pytest.raises(ValueError, match=message):
            Sampling(**bad)
    # top_k = 1 and a tiny top_p leave only the most likely token, whatever the temperature; top_p = 1 and
    # top_k = the vocabulary leave every token (the same draws as no filter, seed for seed).
    logits = torch.tensor([0.1, 2.0, -1.0, 1.9, 0.5])
    gen = torch.Generator().manual_seed(0)
    assert {next_token(logits, Sampling(5.0, top_k=1), gen) for _ in range(50)} == {1}
    assert {next_token(logits, Sampling(5.0, top_p=1e-9), gen) for _ in range(50)} == {1}
    # The nucleus is the smallest set that holds top_p: of two equally likely tokens, top_p 0.5 keeps one.
    assert len({next_token(torch.zeros(2), Sampling(1.0, top_p=0.5), gen) for _ in range(50)}) == 1

    def draws(**kw: object) -> list[int]:
        g = torch.Generator().manual_seed(3)
        return [next_token(logits, Sampling(2.0, **kw), g) for _ in range(200)]

    assert draws(top_p=1.0) == draws() == draws(top_k=len(logits))
    assert len(set(draws())) == len(logits)
    # The stream samples with every one of its settings: its text is the decoded sampled tokens.
    model, prompt = _printable_model(tokenizer, device), _ids(5, high=300)
    for kw in ({"top_k": 3}, {"top_p": 0.5}, {"seed": 11}, {"top_k": 7, "top_p": 0.8, "seed": 5}):
        settings = {"temperature": 1.0, "seed": 2, **kw}
        want = tokenizer.decode(list(generate(model, prompt, 10, eos_id=None, **settings)))
        got = "".join(stream_text(model, tokenizer, prompt, 10, (), Sampling(**settings), eos_id=None))
        assert got == want, settings
    with pytest.raises(ValueError, match=r"^stop strings must not be empty$"):
        list(stream_text(model, tokenizer, prompt, 3, ["x", ""]))
    # A FIM prompt that fits the context exactly is taken; one token more is refused.
    ids = fim_prompt(tokenizer, "a = ", "\n", 8, 64)
    assert fim_prompt(tokenizer, "a = ", "\n", 64 - len(ids), 64) == ids
    with pytest.raises(ValueError, match="never truncated"):
        fim_prompt(tokenizer, "a = ", "\n", 65 - len(ids), 64)
    # A tokenizer as large as the model's vocabulary is its own; one token larger, or special ids moved, is not.
    size = tokenizer.get_vocab_size()
    check_tokenizer(tokenizer, CFG.model_copy(update={"vocab_size": size}))
    with pytest.raises(ValueError, match=rf"^tokenizer has {size} tokens but the model only {size - 1}: not this"):
        check_tokenizer(tokenizer, CFG.model_copy(update={"vocab_size": size - 1}))
    moved = Tokenizer.from_str(tokenizer.to_str().replace('"<|fim_prefix|>"', '"<|fim_prefix_moved|>"'))
    with pytest.raises(ValueError, match=r"^tokenizer's special token ids differ from the fixed ones"):
        check_tokenizer(moved, CFG.model_copy(update={"vocab_size": size}))


class _Script:
    """A backend that emits a fixed token script, one-hot, and records what reaches it: the number of feeds and
    the positions fed, so that a test sees when each chunk of a stream arrives."""

    def __init__(self, script: list[int], vocab: int, max_seq_len: int) -> None:
        self.script, self.vocab, self.max_seq_len = script, vocab, max_seq_len
        self.feeds = 0
        self.positions = 0

    def session(self) -> _Script:
        return self

    def feed(self, ids: list[int]) -> torch.Tensor:
        self.positions += len(ids)
        assert self.positions <= self.max_seq_len, f"position {self.positions} past the context"
        logits = torch.zeros(self.vocab)
        logits[self.script[self.feeds]] = 1.0
        self.feeds += 1
        return logits


@pytest.mark.claim("GEN-011")
def test_against_a_scripted_backend(device: torch.device, tokenizer: Tokenizer) -> None:
    # Each token of the script is one character, so the text a chunk must hold is known token by token.
    chars = "xXabcd"
    script = [tokenizer.token_to_id(c) for c in chars]
    assert None not in script, "the byte-level alphabet holds every ASCII character"
    vocab, prompt = tokenizer.get_vocab_size(), [7, 8, 9]

    def stream(stop: list[str], eos_id: int | None = None, context: int = 64) -> tuple[list[str], list[int]]:
        backend = _Script(script, vocab, context)
        chunks, at = [], []
        for chunk in stream_text(backend, tokenizer, prompt, len(script), stop, Sampling(), eos_id=eos_id):
            chunks.append(chunk)
            at.append(backend.feeds)
        return chunks, at

    # No stop string can start in this text: each character is emitted as soon as its token is decoded
    # (a U+FFFD of an unfinished character is the only other thing held back; "X" is not one).
    assert stream(["qqq"]) == (list(chars), [1, 2, 3, 4, 5, 6])
    # "a", then "ab", may still become "abc": held, and dropped with it; no chunk is ever empty.
    assert stream(["abc"]) == (["x", "X"], [1, 2])
    assert stream(["x"]) == ([], []), "a stop string at index 0 yields no chunk at all"
    assert stream([], eos_id=script[3]) == (["x", "X", "a"], [1, 2, 3]), "EOS ends the stream before it"
    # generate feeds the prompt once and each new token but the last: n feeds, when prompt and completion
    # fill the context exactly, and no warning (the prompt is not cut).
    backend = _Script(script, vocab, len(prompt) + len(script))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(generate(backend, prompt, len(script), eos_id=None)) == script
    assert backend.feeds == len(script) and backend.positions == len(prompt) + len(script) - 1
    # The earliest occurrence of the earliest stop string, also when one is in the text twice.
    assert first_stop("a\n\nb\n\nc", ["\n\n"]) == 1
    assert first_stop("a\n\nb#c", ["#", "\n\n"]) == 1 and first_stop("abc", ["d"]) is None
    # top_k 1 and a tiny top_p reach the sampler: at a high temperature they still give the greedy tokens.
    model = _model(device=device)
    greedy = list(generate(model, prompt, 12, eos_id=None))
    assert list(generate(model, prompt, 12, temperature=50.0, top_k=1, seed=0, eos_id=None)) == greedy
    assert list(generate(model, prompt, 12, temperature=50.0, top_p=1e-9, seed=0, eos_id=None)) == greedy
    assert list(generate(model, prompt, 12, temperature=50.0, seed=0, eos_id=None)) != greedy
    # A one-layer decoder has one cache: greedy decoding still equals the argmax of a full forward.
    one = _model(CFG.model_copy(update={"n_layers": 1}), device=device)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(4):
            ids.append(int(one(torch.tensor([ids], device=device))[0, -1].argmax()))
    assert list(generate(one, prompt, 4, eos_id=None)) == ids[len(prompt) :]
