"""Falsifiers for the ``perplexity`` contract (contracts/perplexity.yaml)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from albor.config import ModelConfig
from albor.data import load_windows, prepare
from albor.data.synthetic import clean_repos, write_repos
from albor.data.tokenizer import load_tokenizer
from albor.eval import __main__ as eval_cli
from albor.eval.perplexity import evaluate_perplexity, token_byte_lengths
from albor.generate import load
from albor.model import Decoder
from albor.train.config import build_config
from albor.train.trainer import Trainer
from albor.verify.contracts import tolerance

CFG = ModelConfig(
    name="ppl-test", n_layers=2, d_model=24, n_heads=3, n_kv_heads=1, d_ff=40, vocab_size=301, max_seq_len=19
)


def _model(device: torch.device, dtype: torch.dtype = torch.float32) -> Decoder:
    torch.manual_seed(0)
    return Decoder(CFG.model_copy(update={"init_std": 0.2})).to(device, dtype)


def _windows(n: int = 7, seq_len: int = 13, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, CFG.vocab_size, (n, seq_len + 1)).astype(np.uint16)


@pytest.mark.claim("PPL-001")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_float64_reference(device: torch.device, dtype: torch.dtype) -> None:
    model, windows = _model(device, dtype), _windows()
    res = evaluate_perplexity(model, windows, batch_size=3, device=device)
    w = torch.from_numpy(windows.astype(np.int64)).to(device)
    with torch.no_grad():
        logits = model.hidden(w[:, :-1]).double() @ model.head_weight.double().t()
        logp = torch.log_softmax(logits, dim=-1)
    ref = -logp.gather(-1, w[:, 1:, None]).mean().item()
    assert abs(res.loss - ref) / ref <= tolerance("PPL-001", dtype)
    assert res.ppl == math.exp(res.loss)
    assert res.tokens == windows.shape[0] * (windows.shape[1] - 1)


@pytest.mark.claim("PPL-002")
def test_batch_size_invariant(device: torch.device) -> None:
    model, windows = _model(device), _windows()
    losses = {b: evaluate_perplexity(model, windows, b, device).loss for b in (1, 3, 7)}
    assert max(losses.values()) - min(losses.values()) <= tolerance("PPL-002", torch.float32) * losses[1]
    assert evaluate_perplexity(model, windows, 3, device).loss == losses[3]
    first4 = evaluate_perplexity(model, windows, 3, device, max_windows=4)
    assert first4.tokens == 4 * 13 and first4 == evaluate_perplexity(model, windows[:4], 3, device)


@pytest.mark.claim("PPL-003")
@pytest.mark.parametrize("training", [True, False])
def test_model_state_restored(device: torch.device, training: bool) -> None:
    model = _model(device)
    model.train(training)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate_perplexity(model, _windows(), 4, device)
    assert model.training is training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.claim("PPL-004")
def test_cli_matches_trainer_eval(small_data: Path, tmp_path: Path, capsys) -> None:
    model = {"name": "ppl", "n_layers": 2, "d_model": 24, "n_heads": 3, "n_kv_heads": 1, "d_ff": 40}
    run = {
        "name": "ppl",
        "model": {**model, "vocab_size": 300, "max_seq_len": 16},
        "data": {"vocab_size": 300, "seq_len": 16, "out": str(small_data), "source": str(small_data.parent / "src")},
        "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1, "max_steps": 4},
        "micro_batch": 3,
        "device": "cpu",
        "eval_every": 4,
        "eval_windows": 5,
        "checkpoint_every": 4,
        "runs_dir": str(tmp_path),
    }
    with Trainer(build_config(run, [])) as trainer:
        trainer.fit()
    capsys.readouterr()
    metrics = [json.loads(line) for line in (tmp_path / "ppl" / "metrics.jsonl").read_text().splitlines()]
    logged = [m for m in metrics if m["kind"] == "eval"][-1]

    assert eval_cli.main(["perplexity", "--checkpoint", str(tmp_path / "ppl"), "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["checkpoint"].endswith(f"step-{logged['step']:08d}")
    assert (out["val_loss"], out["val_ppl"], out["tokens"]) == (logged["val_loss"], logged["val_ppl"], logged["tokens"])
    assert (out["val_bpb"], out["bytes"]) == (logged["val_bpb"], logged["bytes"])

    assert (
        eval_cli.main(["perplexity", "--checkpoint", out["checkpoint"], "--max-windows", "all", "--device", "cpu"]) == 0
    )
    whole = evaluate_perplexity(load(Path(out["checkpoint"]), "cpu").model, load_windows(small_data, "val"), 3, "cpu")
    assert json.loads(capsys.readouterr().out)["val_loss"] == whole.loss


@pytest.mark.claim("PPL-005")
def test_overlong_windows_refused(device: torch.device, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(device)
    calls = []
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(a))
    with pytest.raises(ValueError, match="max_seq_len 19"):
        evaluate_perplexity(model, _windows(seq_len=CFG.max_seq_len + 1), 2, device)
    bad = _windows()
    bad[3, 5] = CFG.vocab_size
    with pytest.raises(ValueError, match=r"\[0, 301\)"):
        evaluate_perplexity(model, bad, 2, device)
    assert calls == []
    assert evaluate_perplexity(_model(device), _windows(seq_len=CFG.max_seq_len), 2, device).tokens == 7 * 19


@pytest.mark.claim("PPL-006")
def test_eval_refuses_a_data_folder_rebuilt_with_another_tokenizer(small_data: Path, tmp_path: Path, capsys) -> None:
    data = Path(shutil.copytree(small_data, tmp_path / "data"))
    run = {
        "name": "ppl",
        "model": {"name": "ppl", "n_layers": 1, "d_model": 24, "n_heads": 3, "n_kv_heads": 1, "d_ff": 40},
        "data": {"vocab_size": 300, "seq_len": 16, "out": str(data), "source": str(small_data.parent / "src")},
        "optim": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1, "max_steps": 2},
        "micro_batch": 3,
        "device": "cpu",
        "eval_every": 2,
        "eval_windows": 5,
        "checkpoint_every": 2,
        "runs_dir": str(tmp_path),
    }
    with Trainer(build_config(run, [])) as trainer:
        trainer.fit()
    # The same folder rebuilt from other sources: same vocabulary size and context, other ids.
    other = write_repos(tmp_path / "other-src", clean_repos(n_repos=6, files_per_repo=4, seed=7))
    prepare(other, data, vocab_size=300, seq_len=16, seed=0)
    capsys.readouterr()
    assert eval_cli.main(["perplexity", "--checkpoint", str(tmp_path / "ppl"), "--device", "cpu"]) == 2
    assert "is not the tokenizer of the data in" in capsys.readouterr().err


@pytest.mark.claim("PPL-007")
def test_bits_per_byte_against_decoded_bytes(small_data: Path) -> None:
    tok = load_tokenizer(small_data / "tokenizer.json")
    windows = load_windows(small_data, "val")[:]
    seq_len = windows.shape[1] - 1
    assert np.isin(windows[:, 1:], [2, 4, 5, 6]).any(), "the val targets hold EOS and FIM sentinels"
    torch.manual_seed(0)
    cfg = CFG.model_copy(update={"vocab_size": 300, "max_seq_len": seq_len, "init_std": 0.2})
    model = Decoder(cfg).double()
    lengths = token_byte_lengths(tok, cfg.vocab_size)
    # Independent: the targets of each window decoded to text, special tokens left out, in UTF-8 bytes.
    decoded = sum(len(tok.decode(w[1:].tolist(), skip_special_tokens=True).encode()) for w in windows)
    tol = tolerance("PPL-007", torch.float64)

    res = evaluate_perplexity(model, windows, 3, "cpu", token_bytes=lengths)
    w = torch.from_numpy(windows.astype(np.int64))
    with torch.no_grad():
        logp = torch.log_softmax(model.hidden(w[:, :-1]) @ model.head_weight.t(), dim=-1)
    nats = -logp.gather(-1, w[:, 1:, None]).sum().item()
    assert res.bytes == decoded
    assert abs(res.bits_per_byte - nats / math.log(2) / decoded) <= tol * res.bits_per_byte

    with torch.no_grad():
        model.head_weight.zero_()  # every logit 0: each token costs ln V
    uniform = evaluate_perplexity(model, windows, 4, "cpu", token_bytes=lengths)
    expected = math.log2(cfg.vocab_size) * uniform.tokens / decoded
    assert abs(uniform.bits_per_byte - expected) <= tol * expected


@pytest.mark.claim("PPL-008")
def test_arguments_at_and_past_their_edges(device: torch.device) -> None:
    model, windows = _model(device), _windows()
    plain = evaluate_perplexity(model, windows, 3, device)
    assert (plain.bytes, plain.bits_per_byte) == (None, None)
    # The edges are accepted: one input a window, one window, max_windows 1, batches of 1.
    assert evaluate_perplexity(model, windows[:, :2], 1, device).tokens == len(windows)
    assert evaluate_perplexity(model, windows[:1], 1, device).tokens == 13
    assert evaluate_perplexity(model, windows, 2, device, max_windows=1).tokens == 13
    # Bits per byte leaves the loss and ppl as they are, and one scored byte is enough.
    one = np.zeros(CFG.vocab_size, dtype=np.int64)
    one[windows[0, 1]] = 1
    single = windows[:1].copy()
    single[0, 2:] = (windows[0, 1] + 1) % CFG.vocab_size  # every later target an id of no bytes
    res = evaluate_perplexity(model, single, 1, device, token_bytes=one)
    assert res.bytes == 1 and res.ppl == math.exp(res.loss) == evaluate_perplexity(model, single, 1, device).ppl
    refused = [
        ({"windows": windows[0]}, r"windows must be \(n, seq_len \+ 1\) with seq_len >= 1, got shape \(14,\)"),
        ({"windows": windows[:, :1]}, r"windows must be \(n, seq_len \+ 1\) with seq_len >= 1, got shape \(7, 1\)"),
        ({"batch_size": 0}, "^batch_size must be >= 1, got 0$"),
        ({"max_windows": 0}, "^max_windows must be >= 1 or None, got 0$"),
        ({"windows": windows[:0]}, "^no windows to evaluate$"),
        ({"token_bytes": one[:-1]}, r"token_bytes must give one length per id of the model's vocabulary \(301,\), "),
        ({"token_bytes": np.zeros_like(one)}, r"^the scored tokens stand for no source bytes \(only special ids\)"),
    ]
    for change, message in refused:
        args = {"windows": windows, "batch_size": 3} | change
        with pytest.raises(ValueError, match=message):
            evaluate_perplexity(model, device=device, **args)


@pytest.mark.claim("PPL-008")
def test_byte_lengths_are_integers_and_cover_the_vocabulary(small_data: Path) -> None:
    tok = load_tokenizer(small_data / "tokenizer.json")
    lengths = token_byte_lengths(tok, tok.get_vocab_size() + 3)
    assert lengths.dtype == np.int64 and lengths.shape == (tok.get_vocab_size() + 3,)
    with pytest.raises(
        ValueError, match=f"^size 299 is below the tokenizer's vocabulary of {tok.get_vocab_size()} ids$"
    ):
        token_byte_lengths(tok, 299)
