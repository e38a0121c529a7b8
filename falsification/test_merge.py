"""Falsifiers for the ``merge`` contract (contracts/merge.yaml)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from albor.checkpoint import load_for_inference
from albor.data.tokenizer import train_tokenizer
from albor.ladder.merge import main, merge_checkpoints, merge_state, slerp
from albor.verify.contracts import tolerance
from falsification.exports import RANDOM, code_tokenizer, random_decoder, save_run

DTYPES = [torch.float32, torch.bfloat16]


def _pair(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g).to(dtype), torch.randn(shape, generator=g).to(dtype)


def _slerp64(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """The SLERP formula in float64, written out."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    cos = float(a64 @ b64 / (a64.norm() * b64.norm()))
    theta = math.acos(max(-1.0, min(1.0, cos)))
    out = (math.sin((1 - t) * theta) * a64 + math.sin(t * theta) * b64) / math.sin(theta)
    return out.view(a.shape)


@pytest.mark.claim("MERGE-001")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_endpoints_bitwise(dtype: torch.dtype, tmp_path: Path) -> None:
    a, b = _pair((37, 23), dtype)
    # Nearly parallel, at a ratio where a + (b − a) rounds away from b in float32: the linear branch at
    # t = 1 would not give b bitwise.
    near = a.float() * 0.3 + 1e-3 * b.float()
    for x, y in ((a, b), (a, near.to(dtype))):
        assert torch.equal(slerp(x, y, 0.0), x) and slerp(x, y, 0.0).dtype == dtype
        assert torch.equal(slerp(x, y, 1.0), y) and slerp(x, y, 1.0).dtype == dtype
    first = save_run(tmp_path / "a", random_decoder(seed=0), code_tokenizer())
    second = save_run(tmp_path / "b", random_decoder(seed=1), code_tokenizer())
    for t, want in ((0.0, first), (1.0, second)):
        merge_checkpoints(first, second, t, tmp_path / f"m{t}", "test")
        got, ref = (
            load_for_inference(tmp_path / f"m{t}").model.state_dict(),
            load_for_inference(want).model.state_dict(),
        )
        assert all(torch.equal(got[k], ref[k]) for k in ref), t


@pytest.mark.claim("MERGE-002")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t", [0.25, 0.5, 0.9])
def test_linear_fallback_exact(dtype: torch.dtype, t: float) -> None:
    a, _ = _pair((41, 17), torch.float32, 3)
    for b in (2.5 * a, a + 1e-4 * torch.randn(a.shape, generator=torch.Generator().manual_seed(4))):
        a_d, b_d = a.to(dtype), b.to(dtype)
        got = slerp(a_d, b_d, t)
        want = (a_d.double() + t * (b_d.double() - a_d.double())).to(dtype)
        assert got.dtype == dtype and torch.isfinite(got.float()).all()
        err = ((got.double() - want.double()).norm() / want.double().norm()).item()
        assert err <= tolerance("MERGE-002", dtype), err


@pytest.mark.claim("MERGE-003")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_self_merge_identity(dtype: torch.dtype) -> None:
    a, _ = _pair((29, 31), dtype, 5)
    for t in (0.0, 0.1, 0.5, 0.73, 1.0):
        assert torch.equal(slerp(a, a.clone(), t), a), t


@pytest.mark.claim("MERGE-004")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("t", [0.2, 0.5, 0.8])
def test_matches_float64_slerp(dtype: torch.dtype, t: float) -> None:
    a, b = _pair((53, 19), torch.float32, 6)
    u = a / a.norm()
    w = b - (u.flatten() @ b.flatten()) * u
    w = w / w.norm()
    # cos θ from nearly opposite to about 11°, all beyond the linear fallback; the norms differ.
    for c in (-0.9, 0.0, 0.5, 0.98):
        b_c = 3.0 * (c * u + math.sqrt(1 - c * c) * w)
        a_d, b_d = a.to(dtype), b_c.to(dtype)
        got, want = slerp(a_d, b_d, t), _slerp64(a_d, b_d, t)
        assert got.dtype == dtype
        err = ((got.double() - want).norm() / want.norm()).item()
        assert err <= tolerance("MERGE-004", dtype), (c, err)


@pytest.mark.claim("MERGE-005")
def test_the_cli_writes_the_slerp_of_two_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tok = code_tokenizer()
    first = save_run(tmp_path / "a", random_decoder(seed=0), tok, data_dir=tmp_path / "data")
    second = save_run(tmp_path / "b", random_decoder(seed=1), tok)
    out = tmp_path / "merged"
    argv = ["--method", "slerp", "--t", "0.3", str(first), str(second), "--out", str(out)]
    assert main(argv) == 0
    assert f"merged {first} and {second} at t=0.3 into {out}" in capsys.readouterr().out
    # A merge trains nothing: step 0, the first's data folder, and an optimizer record with no state.
    ckpt = out / "checkpoints" / "step-00000000"
    assert json.loads((ckpt / "state.json").read_text()) == {"step": 0, "data_dir": str(tmp_path / "data")}
    optimizer = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert optimizer["state"] == {} and [g["lr"] for g in optimizer["param_groups"]] == [0.0]
    merged = load_for_inference(out)
    a, b = load_for_inference(first).model.state_dict(), load_for_inference(second).model.state_dict()
    for name, got in merged.model.state_dict().items():
        want = _slerp64(a[name], b[name], 0.3)
        assert ((got.double() - want).norm() / want.norm()).item() <= tolerance("MERGE-005", "float32"), name
    assert merged.model_config == load_for_inference(first).model_config and merged.path.name == "step-00000000"
    assert (merged.path / "tokenizer.json").read_bytes() == (
        first / "checkpoints" / "latest" / "tokenizer.json"
    ).read_bytes()
    assert json.loads((out / "ladder.json").read_text()) == {
        "parents": [str(first), str(second)],
        "recipe": "albor merge " + " ".join(argv),
    }
    # Refusals: exit 2 with the offending run named, and nothing written at --out.
    other_shape = save_run(tmp_path / "c", random_decoder(RANDOM.model_copy(update={"d_ff": 40}), seed=2), tok)
    other_tok = save_run(
        tmp_path / "d", random_decoder(seed=3), train_tokenizer(["def f(x):\n    return x\n"] * 9, 300)
    )
    for bad, message in ((other_shape, "holds another model than"), (other_tok, "has another tokenizer than")):
        assert main([str(first), str(bad), "--out", str(tmp_path / "no")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"albor merge: {bad}: ") and message in err, err
        assert not (tmp_path / "no").exists()
    # t's bounds are in [0, 1]; a merge whose first run names no data folder records none.
    for t, want in (("0", second), ("1", first)):
        assert main(["--t", t, str(second), str(first), "--out", str(tmp_path / t)]) == 0
        got, ref = load_for_inference(tmp_path / t), load_for_inference(want)
        assert got.data_dir is None
        assert all(torch.equal(v, ref.model.state_dict()[k]) for k, v in got.model.state_dict().items()), t
    for argv, message in (
        (["--t", "1.5", str(first), str(second), "--out", str(tmp_path / "no")], "--t: must lie in [0, 1], got 1.5"),
        ([str(first), str(second)], "the following arguments are required: --out"),
        (["--method", "linear", str(first), str(second), "--out", str(tmp_path / "no")], "invalid choice: 'linear'"),
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.startswith("usage: albor merge ") and message in err, err
        assert not (tmp_path / "no").exists()


@pytest.mark.claim("MERGE-006")
def test_the_linear_fallback_starts_past_the_declared_dot_and_bad_input_is_named() -> None:
    a, b = _pair((61, 13), torch.float32, 7)
    u = a.flatten() / a.norm()
    w = b.flatten() - (u @ b.flatten()) * u
    w = w / w.norm()
    for c, linear in ((0.9994, False), (0.9996, True), (-0.9996, True)):
        b_c = (c * u + math.sqrt(1 - c * c) * w).view(a.shape) * a.norm()
        got = slerp(a, b_c, 0.25).double()
        lin = a.double() + 0.25 * (b_c.double() - a.double())
        want = lin if linear else _slerp64(a, b_c, 0.25)
        other = _slerp64(a, b_c, 0.25) if linear else lin
        err = ((got - want).norm() / want.norm()).item()
        assert err <= 1e-6, (c, err)
        assert ((got - other).norm() / want.norm()).item() > 1e-5, f"cos {c}: both formulas agree, no test"
    with pytest.raises(ValueError, match=r"cannot merge tensors of shapes \(3, 4\) and \(4, 3\)"):
        slerp(torch.ones(3, 4), torch.ones(4, 3), 0.5)
    for t in (-0.1, 1.1):
        with pytest.raises(ValueError, match=rf"t must lie in \[0, 1\], got {t}"):
            slerp(a, b, t)
    with pytest.raises(ValueError, match=r"the models differ in tensors: \['x', 'y'\]"):
        merge_state({"w": a, "x": a}, {"w": b, "y": b}, 0.5)
    with pytest.raises(ValueError, match=r"the models differ in tensors: \['a', 'b', 'c', 'd', 'e'\]$"):
        merge_state({"w": a, **dict.fromkeys("abcdefg", a)}, {"w": b}, 0.5)
    merged = merge_state({"w": a, "v": b}, {"w": b, "v": a}, 0.25)
    assert list(merged) == ["w", "v"] and torch.equal(merged["v"], slerp(b, a, 0.25))
