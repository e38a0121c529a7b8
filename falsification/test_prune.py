"""Falsifiers for the ``prune`` contract (contracts/prune.yaml)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from albor.checkpoint import load_for_inference
from albor.config import ModelConfig
from albor.data import load_windows
from albor.data.cursor import DataCursor
from albor.data.tokenizer import load_tokenizer
from albor.ladder.prune import calibration_windows, main, parse_pattern, prune_mask, wanda_prune, wanda_scores
from albor.model import Decoder
from albor.verify.contracts import declared
from falsification.exports import code_tokenizer, random_decoder, save_run

CFG = ModelConfig(name="prune", n_layers=2, d_model=40, n_heads=4, n_kv_heads=2, d_ff=56, vocab_size=97, max_seq_len=12)


def _model(seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    model = Decoder(CFG.model_copy(update={"init_std": 0.2})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    return model


def _windows(seed: int = 1, n: int = 6) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (n, CFG.max_seq_len + 1), generator=torch.Generator().manual_seed(seed))


def _block_linears(model: Decoder) -> list[torch.nn.Linear]:
    return [m for b in model.blocks for m in b.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.claim("PRUNE-001")
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.77])
def test_sparsity_exact_per_row(sparsity: float) -> None:
    model = _model()
    result = wanda_prune(model, _windows(), sparsity=sparsity)
    total = zeros = 0
    for layer in _block_linears(model):
        per_row = (layer.weight == 0).sum(1)
        assert (per_row == int(sparsity * layer.in_features)).all(), (layer, per_row.tolist())
        zeros, total = zeros + int(per_row.sum()), total + layer.weight.numel()
    assert result.sparsity == zeros / total


@pytest.mark.claim("PRUNE-002")
def test_two_four_pattern_holds() -> None:
    model = _model(2)
    wanda_prune(model, _windows(3), pattern=(2, 4))
    for layer in _block_linears(model):
        groups = (layer.weight != 0).reshape(layer.out_features, -1, 4).sum(-1)
        assert (groups == 2).all(), layer


@pytest.mark.claim("PRUNE-003")
def test_sparsity_zero_unchanged() -> None:
    model = _model(4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    wanda_prune(model, _windows(5), sparsity=0.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def _keep64(w: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """Float64 WANDA written out: per row, drop the k lowest |W_ij|·‖X_j‖ (ties: lower index first)."""
    score = np.abs(w.astype(np.float64)) * np.sqrt((x.astype(np.float64) ** 2).sum(0))[None, :]
    keep = np.ones_like(w, dtype=bool)
    for i, row in enumerate(score):
        keep[i, np.argsort(row, kind="stable")[:k]] = False
    return keep


@pytest.mark.claim("PRUNE-004")
def test_keeps_highest_wanda_scores() -> None:
    g = torch.Generator().manual_seed(6)
    w, x = torch.randn(13, 24, generator=g), torch.randn(50, 24, generator=g) * torch.linspace(0.1, 5, 24)
    got = prune_mask(wanda_scores(w, x.double().pow(2).sum(0).sqrt()), sparsity=0.5)
    assert np.array_equal(got.numpy(), _keep64(w.numpy(), x.numpy(), 12))
    # Through the model: the first block's q/k/v input is RMSNorm(embedding), recomputed here in float64.
    model, windows = _model(7), _windows(8)
    qkv = model.blocks[0].attn.qkv
    w0 = qkv.weight.detach().clone()
    e = model.embed.weight.detach().double()[windows[:, :-1]].flatten(0, 1)
    h = e / torch.sqrt((e * e).mean(-1, keepdim=True) + CFG.norm_eps) * model.blocks[0].attn_norm.detach().double()
    wanda_prune(model, windows, sparsity=0.5)
    want = _keep64(w0.numpy(), h.numpy(), int(0.5 * w0.shape[1]))
    assert np.array_equal((qkv.weight != 0).numpy(), want)


@pytest.mark.claim("PRUNE-005")
@pytest.mark.parametrize("how", [{"sparsity": 0.5}, {"pattern": (2, 4)}], ids=["50%", "2:4"])
def test_loss_increase_reported_and_bounded(how: dict, trained_run: Path, small_data: Path) -> None:
    model = load_for_inference(trained_run).model
    windows = calibration_windows(small_data, 32, 0)
    with torch.no_grad():
        before = float(model(windows[:, :-1], windows[:, 1:]))
    result = wanda_prune(model, windows, **how)
    with torch.no_grad():
        after = float(model(windows[:, :-1], windows[:, 1:]))
    assert (result.loss_before, result.loss_after) == (before, after)
    assert result.loss_increase <= declared("prune", "max_loss_increase"), result


def _with_seed(run: Path, out: Path, seed: int) -> Path:
    """A run of the same weights, tokenizer and data folder as ``run`` whose config names ``seed``."""
    inf = load_for_inference(run)
    return save_run(out, inf.model, load_tokenizer(inf.path / "tokenizer.json"), inf.data_dir, seed=seed)


def _first_trained_on(data: Path, n: int, seed: int) -> torch.Tensor:
    """The first ``n`` windows the trainer's cursor reads at epoch 0 (one rank), in window order."""
    train = load_windows(data, "train")
    idx = np.sort(DataCursor(len(train), n, seed).next_batch())
    return torch.from_numpy(train[idx].astype(np.int64))


@pytest.mark.claim("PRUNE-008")
@pytest.mark.parametrize("seed", [0, 5])
def test_calibration_windows_are_the_first_the_trainer_reads(small_data: Path, seed: int) -> None:
    for n in (1, 8, 32):
        assert torch.equal(calibration_windows(small_data, n, seed), _first_trained_on(small_data, n, seed))


@pytest.mark.claim("PRUNE-006")
def test_the_cli_writes_the_pruned_run(
    trained_run: Path, small_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A copy of the run whose config names seed 5: the calibration windows must follow the run's seed.
    trained_run = _with_seed(trained_run, tmp_path / "seeded", 5)
    base = load_for_inference(trained_run)
    seed = 5
    for flags, how, n in (
        (["--sparsity", "0.5", "--calibration-windows", "8"], {"sparsity": 0.5}, 8),
        (["--pattern", "2:4"], {"pattern": (2, 4)}, 32),
    ):
        out = tmp_path / f"pruned{n}"
        argv = [str(trained_run), "--out", str(out), "--method", "wanda", *flags]
        assert main(argv) == 0
        printed = capsys.readouterr().out
        windows = _first_trained_on(small_data, n, seed)
        want_model = load_for_inference(trained_run).model
        want = wanda_prune(want_model, windows, **how)
        got = load_for_inference(out)
        assert all(torch.equal(v, want_model.state_dict()[k]) for k, v in got.model.state_dict().items())
        ladder = json.loads((out / "ladder.json").read_text())
        assert ladder == {
            "parents": [str(trained_run)],
            "recipe": "albor prune " + " ".join(argv),
            "prune": {
                "calibration_windows": len(windows),
                "loss_before": want.loss_before,
                "loss_after": want.loss_after,
                "loss_increase": want.loss_increase,
                "sparsity": want.sparsity,
            },
        }
        assert printed.startswith(f"pruned {base.path} into {out}: {want.sparsity:.1%} of the block weights zero")
        assert got.path.name == "step-00000000"
        assert json.loads((got.path / "state.json").read_text()) == {"step": 0, "data_dir": str(base.data_dir)}
        optimizer = torch.load(got.path / "optimizer.pt", weights_only=True)
        assert optimizer["state"] == {} and [g["lr"] for g in optimizer["param_groups"]] == [0.0]
        assert yaml.safe_load((got.path / "config.yaml").read_text()) == yaml.safe_load(
            (base.path / "config.yaml").read_text()
        )
        assert (got.path / "tokenizer.json").read_bytes() == (base.path / "tokenizer.json").read_bytes()
    bare = save_run(tmp_path / "bare", random_decoder(), code_tokenizer())
    no = str(tmp_path / "no")
    for argv, message in (
        ([str(trained_run), "--out", no, "--pattern", "4:2"], "--pattern: '4:2' is not N:M with 0 < N < M, like 2:4"),
        ([str(bare), "--out", no, "--sparsity", "0.5"], "names no data folder to take calibration windows from"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("albor prune: ") and message in err, err
    for argv, message in (
        ([str(trained_run), "--out", no], "one of the arguments --sparsity --pattern is required"),
        ([str(trained_run), "--out", no, "--sparsity", "0.5", "--pattern", "2:4"], "not allowed with argument"),
        ([str(trained_run), "--sparsity", "0.5"], "the following arguments are required: --out"),
        ([str(trained_run), "--out", no, "--sparsity", "0.5", "--method", "magnitude"], "invalid choice: 'magnitude'"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("usage: albor prune ") and message in err, err
    assert not Path(no).exists()


@pytest.mark.claim("PRUNE-007")
def test_ties_go_by_position_and_bad_input_is_refused() -> None:
    # Equal scores: the lower index is pruned first, so the count stays exact. Rows and groups of 200
    # and 100: short ones are sorted stably even by an unstable sort, long ones are not.
    for width in (8, 200):
        ties = torch.ones(3, width)
        half = width // 2
        for mask, want in (
            (prune_mask(ties, 0.5, None), [False] * half + [True] * half),
            (prune_mask(ties, None, (2, 4)), [False, False, True, True] * (width // 4)),
            (prune_mask(ties, None, (half // 2, half)), ([False] * (half // 2) + [True] * (half // 2)) * 2),
        ):
            assert mask.dtype == torch.bool and mask.tolist() == [want] * 3, f"width {width}"
    with pytest.raises(ValueError, match=r"^a 2:4 pattern needs inputs in groups of 4; this layer has 6$"):
        prune_mask(torch.ones(2, 6), None, (2, 4))
    model, windows = _model(), _windows()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for how, message in (
        ({}, r"^give a sparsity or a pattern, not both$"),
        ({"sparsity": 0.5, "pattern": (2, 4)}, r"^give a sparsity or a pattern, not both$"),
        ({"sparsity": 1.0}, r"^sparsity must lie in \[0, 1\), got 1.0$"),
        ({"sparsity": -0.25}, r"^sparsity must lie in \[0, 1\), got -0.25$"),
    ):
        with pytest.raises(ValueError, match=message):
            wanda_prune(model, windows, **how)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "a refusal changed the model"
    assert (parse_pattern("2:4"), parse_pattern("1:8"), parse_pattern("3:4")) == ((2, 4), (1, 8), (3, 4))
    for text in ("2:2", "0:4", "4:2", "a:4", "24", "2:", ":4", "2:4:8", "-1:4", ""):
        with pytest.raises(
            ValueError, match=rf"^--pattern: {re.escape(repr(text))} is not N:M with 0 < N < M, like 2:4$"
        ):
            parse_pattern(text)
