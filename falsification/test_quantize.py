"""Falsifiers for the ``quantize`` contract (contracts/quantize.yaml): Albor's int8 and int4 weights
against a float64 dequantised reference, the packed ATen kernels, and the quantised decoder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from albor.data import load_windows
from albor.export.compare import decoder_logits, window_perplexity
from albor.export.quantize import (
    Int4Linear,
    Int8Linear,
    dequantize_int4,
    dequantize_int8,
    quantize_decoder,
    quantize_int4,
    quantize_int8,
    quantized_linear,
)
from albor.generate import CachedDecoder, load
from albor.verify.contracts import tolerance
from albor.verify.numerics import rel_err
from falsification.exports import RANDOM, random_decoder


def _weights(n: int, k: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Rows of very different scales, and an outlier, so a scale shared across rows or groups shows.
    w = torch.randn(n, k, generator=g) * torch.logspace(-2, 0, n)[:, None]
    w[0, k // 3] = 7.0
    return w


@pytest.mark.claim("QUANT-001")
@pytest.mark.parametrize(("n", "k"), [(48, 100), (17, 257), (3, 5)])
def test_int8_error_within_half_a_step(n: int, k: int) -> None:
    w = _weights(n, k)
    q, scale = quantize_int8(w)
    assert q.dtype == torch.int8 and q.shape == (n, k) and scale.shape == (n,)
    assert q.min() >= -127 and q.max() <= 127
    assert (q.abs().amax(dim=1) == 127).all(), "each row's largest weight maps to ±127"
    dq = dequantize_int8(q, scale)
    step = w.double().abs().amax(dim=1, keepdim=True) / 127
    excess = ((dq - w.double()).abs() - step / 2).max().item()
    assert excess <= tolerance("QUANT-001", torch.float64), f"a weight is {excess:.3g} past half its row's step"


# The group sizes the contract declares (those of the int4 kernel), not the module's own tuple.
DECLARED_GROUPS = (32, 64, 128, 256)


@pytest.mark.claim("QUANT-002")
@pytest.mark.parametrize("group", DECLARED_GROUPS)
def test_int4_error_within_half_a_step(group: int) -> None:
    n, k = 32, 2 * group + 24  # not a whole number of groups: the last one is padded
    w = _weights(n, k, seed=group)
    q, scale, zero = quantize_int4(w, group)
    padded = -(-k // group) * group
    assert q.shape == (n, padded) and scale.shape == zero.shape == (n, padded // group)
    assert q.min() >= 0 and q.max() <= 15
    dq = dequantize_int4(q, scale, zero)
    wp = torch.nn.functional.pad(w, (0, padded - k)).double().reshape(n, -1, group)
    lo, hi = wp.amin(dim=2), wp.amax(dim=2)
    step = ((hi - lo) / 15)[..., None]
    dqg = dq.reshape(n, -1, group)
    tol = tolerance("QUANT-002", torch.float64)
    assert (dqg.amin(dim=2) - lo).abs().max() <= tol and (dqg.amax(dim=2) - hi).abs().max() <= tol
    excess = ((dqg - wp).abs() - step / 2).max().item()
    assert excess <= tol, f"a weight is {excess:.3g} past half its group's step"


@pytest.mark.claim("QUANT-003")
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize(("m", "k"), [(1, 96), (5, 100), (3, 257)])
def test_packed_kernels_equal_float64_dequantised_product(bits: int, m: int, k: int) -> None:
    n = 48
    w = _weights(n, k, seed=k)
    x = torch.randn(2, m, k, generator=torch.Generator().manual_seed(1))
    if bits == 8:
        layer: nn.Module = Int8Linear(w)
        dq = dequantize_int8(*quantize_int8(w))
    else:
        layer = Int4Linear(w, 32)
        dq = dequantize_int4(*quantize_int4(w, 32))[:, :k]
    y = layer(x)
    assert y.shape == (2, m, n) and y.dtype == torch.float32
    ref = x.double() @ dq.t()
    assert rel_err(y, ref) <= tolerance("QUANT-003", torch.float32)


@pytest.mark.claim("QUANT-004")
@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_decoder_replaces_every_linear(bits: int) -> None:
    cfg = RANDOM.model_copy(update={"max_seq_len": 24})
    model = quantize_decoder(random_decoder(cfg), bits)
    assert not [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert isinstance(model.head, Int8Linear if bits == 8 else Int4Linear)
    assert model.embed.weight.dtype == torch.float32
    ids = torch.randint(7, cfg.vocab_size, (cfg.max_seq_len,), generator=torch.Generator().manual_seed(2)).tolist()
    with torch.no_grad():
        full = model(torch.tensor([ids]))[0]
    decoder = CachedDecoder(model)
    cached = [decoder.feed(ids[:5])] + [decoder.feed([t]) for t in ids[5:]]
    for step, logits in enumerate(cached):
        err = rel_err(logits, full[4 + step])
        assert err <= tolerance("QUANT-004", torch.float32), f"step {step}: rel err {err:.3g}"


@pytest.mark.slow
@pytest.mark.claim("QUANT-005")
def test_perplexity_bounds(trained_run: Path, small_data: Path) -> None:
    windows = load_windows(small_data, "val")
    ppl = {}
    for quant in ("float32", "int8", "int4"):
        model = load(trained_run, "cpu").model
        if quant != "float32":
            quantize_decoder(model, 8 if quant == "int8" else 4)
        ppl[quant] = window_perplexity(decoder_logits(model), windows).ppl
    assert ppl["float32"] < 100, f"the model is not trained: val ppl {ppl['float32']:.1f}"
    for quant in ("int8", "int4"):
        ratio = ppl[quant] / ppl["float32"]
        assert ratio <= tolerance("QUANT-005", quant), f"{quant}: ppl {ppl[quant]:.3f} is {ratio:.4f}× float32's"


@pytest.mark.claim("QUANT-006")
def test_bad_input_is_refused_by_name() -> None:
    w = _weights(16, 64)
    for group in (16, 48, 65, 512):
        with pytest.raises(ValueError, match=rf"^group_size must be one of \(32, 64, 128, 256\), got {group}$"):
            quantize_int4(w, group)
    with pytest.raises(ValueError, match=r"^only bias-free linears are quantised$"):
        quantized_linear(nn.Linear(8, 8, bias=True), 8, 32)
    with pytest.raises(ValueError, match=r"^bits must be 4 or 8, got 6$"):
        quantized_linear(nn.Linear(8, 8, bias=False), 6, 32)  # type: ignore[arg-type]
    with torch.device("meta"):
        on_meta = random_decoder(RANDOM)
    with pytest.raises(ValueError, match=r"^the quantised kernels run on the CPU only$"):
        quantize_decoder(on_meta, 8)


@pytest.mark.claim("QUANT-007")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_a_weight_of_any_float_dtype_quantises_as_its_float32_value(dtype: torch.dtype) -> None:
    w = _weights(24, 96).to(dtype)
    exact = w.to(torch.float32)  # the same values, exactly (float64 rounded once, as the cast does)
    for got, want in ((quantize_int8(w), quantize_int8(exact)), (quantize_int4(w, 32), quantize_int4(exact, 32))):
        for g, e in zip(got, want, strict=True):
            assert g.dtype == e.dtype and torch.equal(g, e), f"{dtype}: {g.dtype} codes or scales differ"
