"""Falsifiers for the ``dispatch`` contract (contracts/dispatch.yaml): no kernel ever fails in silence,
and each model runs the kernels it was given.

A kernel is made unusable by asking for it on the ``meta`` device, where no Triton kernel can launch.
"""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from albor.config import ModelConfig
from albor.model import Decoder
from albor.ops import dispatch
from albor.ops.dispatch import OPS, Kernels, KernelUnavailable, check, load
from albor.ops.rope import rope_tables

KERNEL_OPS = ["rmsnorm", "apply_rope", "swiglu", "linear_cross_entropy"]


@pytest.mark.claim("DISPATCH-001")
@pytest.mark.parametrize("op", [*KERNEL_OPS, "attention"])
def test_unusable_kernel_stops_the_run(op: str) -> None:
    device = "meta" if op != "attention" else None  # attention has no Triton kernel at all
    with pytest.raises(KernelUnavailable, match=op):
        Kernels({op: "triton"}, device=device)


@pytest.mark.claim("DISPATCH-002")
@pytest.mark.parametrize("op", KERNEL_OPS)
def test_allowed_fallback_is_recorded(op: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kernels = Kernels({op: "triton"}, allow_fallback=True, device="meta")
    assert kernels.backends[op] == "reference" and kernels.get(op) is load(op, "reference")
    assert kernels.fallbacks[op].startswith("triton: "), "the fallback and its cause go in the run's metadata"
    assert any(op in str(w.message) and w.filename == __file__ for w in caught), "announced, at the table's maker"
    assert Kernels().fallbacks == {}, "another model's table records nothing of it"


@pytest.mark.claim("DISPATCH-003")
@pytest.mark.triton
@pytest.mark.parametrize("op", KERNEL_OPS)
def test_working_kernel_is_routed(device: torch.device, op: str) -> None:
    kernels = Kernels({op: "triton"}, device=device)
    assert kernels.backends[op] == "triton" and op not in kernels.fallbacks
    assert kernels.get(op).__module__ == f"albor.kernels.{OPS[op]}"
    others = Kernels()
    assert others.backends[op] == "reference", "a second model in the process keeps its own choice"
    assert all(b == "reference" for o, b in kernels.backends.items() if o != op)


def _opcheck_cases() -> dict[str, tuple]:
    g = torch.Generator().manual_seed(3)

    def r(*shape: int, grad: bool = True) -> torch.Tensor:
        return torch.randn(*shape, generator=g).requires_grad_(grad)

    cos, sin = rope_tables(torch.arange(5), 6)
    targets = torch.randint(0, 11, (7,), generator=g)
    targets[2] = -100
    return {
        "rmsnorm_forward": (r(3, 5, 7), r(7), 1e-5),
        "rmsnorm_backward": (r(3, 7, grad=False), r(3, 7, grad=False), r(7, grad=False), torch.rand(3) + 0.5),
        "rope": (r(2, 5, 3, 6), r(2, 5, 1, 6), cos, sin, False),
        "swiglu_forward": (r(3, 9), r(3, 9)),
        "swiglu_backward": (r(3, 9, grad=False), r(3, 9, grad=False), r(3, 9, grad=False)),
        "linear_cross_entropy": (r(7, 5), r(11, 5), targets, -100, True, True, True),
    }


@pytest.mark.claim("DISPATCH-004")
@pytest.mark.triton
@pytest.mark.parametrize("name", sorted(_opcheck_cases()))
def test_kernel_ops_pass_opcheck(device: torch.device, name: str) -> None:
    Kernels(dict.fromkeys(KERNEL_OPS, "triton"), device=device)  # imports the kernels, registering their ops
    args = tuple(a.detach().to(device).requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
                 for a in _opcheck_cases()[name])  # fmt: skip
    results = torch.library.opcheck(getattr(torch.ops.albor, name), args)
    assert set(results.values()) == {"SUCCESS"}, results


@pytest.mark.claim("DISPATCH-004")
@pytest.mark.triton
def test_kernels_keep_the_compiled_graph_whole(device: torch.device) -> None:
    kernels = Kernels(dict.fromkeys(KERNEL_OPS, "triton"), device=device)
    cfg = ModelConfig(name="g", n_layers=2, d_model=12, n_heads=3, n_kv_heads=1, d_ff=10, vocab_size=17, max_seq_len=16)
    torch._dynamo.reset()
    model = Decoder(cfg, kernels).to(device)
    idx = torch.randint(0, cfg.vocab_size, (2, 9), generator=torch.Generator().manual_seed(4)).to(device)
    found = torch._dynamo.explain(model)(idx, idx, reduction="sum")
    assert (found.graph_count, found.graph_break_count) == (1, 0), [b.reason for b in found.break_reasons]
    ops = {str(n.target) for g in found.graphs for n in g.graph.nodes if n.op == "call_function"}
    assert {"albor.rmsnorm_forward.default", "albor.rope.default", "albor.swiglu_forward.default"} <= ops, ops
    assert "albor.linear_cross_entropy.default" in ops, ops


@pytest.mark.claim("DISPATCH-005")
def test_each_op_of_the_table_computes_its_formula() -> None:
    # The table's methods against the formulas written out here, in float64, with arguments that tell
    # their order apart (defaults of the cross entropy included).
    import torch.nn.functional as F

    kernels, g = Kernels(), torch.Generator().manual_seed(5)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    x, w = r(2, 3, 8), 1 + r(8)
    want = x / (x.pow(2).mean(-1, keepdim=True) + 0.25).sqrt() * w
    torch.testing.assert_close(kernels.rmsnorm(x, w, 0.25), want)
    gate, up = r(3, 5), r(3, 5)
    torch.testing.assert_close(kernels.swiglu(gate, up), gate * torch.sigmoid(gate) * up)
    q, k = r(1, 4, 2, 6), r(1, 4, 1, 6)
    cos, sin = rope_tables(torch.arange(4), 6, dtype=torch.float64)

    def rotated(t: torch.Tensor) -> torch.Tensor:
        c, s = cos[None, :, None, :], sin[None, :, None, :]
        a, b = t[..., :3], t[..., 3:]
        return torch.cat([a * c - b * s, a * s + b * c], dim=-1)

    got_q, got_k = kernels.apply_rope(q, k, cos, sin)
    torch.testing.assert_close((got_q, got_k), (rotated(q), rotated(k)))
    q, k, v = r(1, 2, 5, 4), r(1, 1, 5, 4), r(1, 1, 5, 4)
    scores = q @ k.transpose(-1, -2) / 2.0 + torch.full((5, 5), float("-inf"), dtype=torch.float64).triu(1)
    torch.testing.assert_close(kernels.attention(q, k, v), scores.softmax(-1) @ v)
    hidden, weight, targets = r(6, 4), r(9, 4), torch.tensor([1, 8, -100, 3, 7, 0])
    logits = hidden @ weight.T
    torch.testing.assert_close(
        kernels.linear_cross_entropy(hidden, weight, targets), F.cross_entropy(logits, targets, ignore_index=-100)
    )
    sevens = torch.tensor([1, 8, 7, 3, 7, 0])
    torch.testing.assert_close(
        kernels.linear_cross_entropy(hidden, weight, sevens, 7, "sum"),
        F.cross_entropy(logits, sevens, ignore_index=7, reduction="sum"),
    )


CPU = torch.device("cpu")


def _recording(fn: Callable[..., Any], calls: list[tuple]) -> Callable[..., Any]:
    def recorded(*args: Any) -> Any:
        calls.append(args)
        return fn(*args)

    return recorded


class _ScaleGrad(torch.autograd.Function):
    """The identity whose backward scales the gradient: a kernel right forward and wrong backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def _with_args(fn: Callable[..., Any], index: int, change: Callable[[torch.Tensor], torch.Tensor]):
    def kernel(*args: Any) -> Any:
        return fn(*(change(a) if i == index else a for i, a in enumerate(args)))

    return kernel


def _with_outputs(fn: Callable[..., Any], change: Callable[[torch.Tensor], torch.Tensor]):
    def kernel(*args: Any) -> Any:
        out = fn(*args)
        return tuple(map(change, out)) if isinstance(out, tuple) else change(out)

    return kernel


def _odd(*sizes: int) -> bool:
    return all(n % 2 == 1 and n > 1 for n in sizes)


@pytest.mark.claim("DISPATCH-006")
@pytest.mark.parametrize("op", KERNEL_OPS)
def test_the_launch_check_gives_both_sides_the_same_small_odd_inputs(op: str) -> None:
    reference = load(op, "reference")
    kernel_calls: list[tuple] = []
    reference_calls: list[tuple] = []
    check(op, _recording(reference, kernel_calls), _recording(reference, reference_calls), CPU)  # a true kernel
    (got,), (want,) = kernel_calls, reference_calls
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        if isinstance(b, torch.Tensor) and b.is_floating_point():
            # The kernel in float32, the reference in float64, on the same values rounded once.
            assert (a.dtype, b.dtype, a.device, b.device) == (torch.float32, torch.float64, CPU, CPU)
            torch.testing.assert_close(a.detach().double(), b.detach(), rtol=1e-6, atol=1e-7)
        else:
            assert torch.equal(a, b) if isinstance(b, torch.Tensor) else a == b
    for args in (got, want):  # gradients of exactly the op's differentiable arguments, the first two
        assert [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.requires_grad] == [0, 1]
    again: list[tuple] = []
    check(op, _recording(reference, again), reference, CPU)
    assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b for a, b in zip(again[0], got, strict=True))
    # Small odd sizes, so that a kernel's masking of a partial block is tried; the model's layouts.
    if op in ("rmsnorm", "swiglu"):
        assert all(a.ndim == 3 and _odd(*a.shape) for a in got[:2] if a.ndim > 1), [a.shape for a in got[:2]]
        assert op == "swiglu" or (got[1].shape == got[0].shape[-1:] and got[2] == 1e-5)
    elif op == "apply_rope":
        (b, t, hq, d), (b2, t2, hk, d2) = got[0].shape, got[1].shape
        assert (b, t, d) == (b2, t2, d2) and b > 1 and t > 1 and got[2].shape == (t, d // 2)
        assert hq > hk and hq % hk == 0, "grouped queries: more query heads than key heads, in whole groups"
    else:
        (n, d), (v, d2), targets = got[0].shape, got[1].shape, got[2]
        assert d == d2 and _odd(n, v) and targets.shape == (n,)
        kept = targets[targets != -100]
        assert 0 < len(kept) < n and bool(((kept >= 0) & (kept < v)).all()), "some targets ignored, the rest valid"


@pytest.mark.claim("DISPATCH-006")
@pytest.mark.parametrize("op", KERNEL_OPS)
def test_the_launch_check_rejects_a_kernel_off_forward_or_backward_and_names_where(op: str) -> None:
    reference = load(op, "reference")
    check(op, _with_outputs(reference, lambda t: t * (1 + 1e-5)), reference, CPU)  # within the tolerance
    off = re.escape(f"{op} kernel output 0 differs from the reference on cpu: rel err 1.00e-03")
    with pytest.raises(RuntimeError, match=off):
        check(op, _with_outputs(reference, lambda t: t * (1 + 1e-3)), reference, CPU)
    with pytest.raises(RuntimeError, match=re.escape(f"{op} kernel output 0 differs") + ".*rel err inf"):
        check(op, _with_outputs(reference, lambda t: t + float("nan")), reference, CPU)
    for index in (0, 1):
        where = re.escape(f"{op} kernel gradient of argument {index} differs from the reference on cpu: rel err ")
        with pytest.raises(RuntimeError, match=where + "1.00e-02"):
            check(op, _with_args(reference, index, lambda t: _ScaleGrad.apply(t, 1.01)), reference, CPU)
        with pytest.raises(RuntimeError, match=where + "inf"):  # a gradient that never reaches the argument
            check(op, _with_args(reference, index, lambda t: t.detach()), reference, CPU)
    with pytest.raises(KeyError, match="no kernel check for op 'attention'"):
        check("attention", load("attention", "reference"), load("attention", "reference"), CPU)


@pytest.mark.claim("DISPATCH-006")
def test_the_launch_checks_relative_error_is_the_norm_of_the_difference_over_the_references() -> None:
    rng = np.random.default_rng(6)
    for ref in (rng.normal(size=(4, 5)), 0.1 * rng.normal(size=(3,)), np.zeros((2, 3))):
        out = ref + rng.normal(scale=1e-2, size=ref.shape)
        diff, norm = np.sqrt(((out - ref) ** 2).sum()), np.sqrt((ref**2).sum())
        want = diff / norm if norm > 0 else diff  # all zeros: the absolute norm
        got = dispatch._relative_error(torch.from_numpy(out).float(), torch.from_numpy(ref))
        assert got == pytest.approx(want, rel=1e-5), (ref.shape, norm)
    for bad in (float("nan"), float("inf")):
        out = torch.ones(3)
        out[1] = bad
        assert dispatch._relative_error(out, torch.ones(3)) == float("inf")


@pytest.mark.claim("DISPATCH-007")
def test_a_table_names_what_it_refuses_and_builds_what_it_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyError, match=re.escape(f"unknown op(s) ['nope']; ops: {sorted(OPS)}")):
        Kernels({"nope": "reference"})
    with pytest.raises(ValueError, match=re.escape("unknown backend 'fast' for op 'rmsnorm'; backends: "
                                                   "['reference', 'triton', 'compile']")):  # fmt: skip
        Kernels({"rmsnorm": "fast"})  # type: ignore[dict-item]
    table = Kernels({"swiglu": "compile"})
    assert table.backends == {op: "compile" if op == "swiglu" else "reference" for op in OPS}
    compiled, reference = table.get("swiglu"), load("swiglu", "reference")
    assert compiled is not reference and compiled.__wrapped__ is reference, "torch.compile of the reference"
    with pytest.raises(KernelUnavailable, match=r"op 'rmsnorm': the triton backend is unusable: [A-Za-z]+Error: "):
        Kernels({"rmsnorm": "triton"}, device="meta")
    # A reference that cannot load is a broken install: its own error, never a kernel's fallback.
    monkeypatch.delattr(importlib.import_module("albor.ops.rmsnorm"), "rmsnorm")
    with pytest.raises(AttributeError, match="rmsnorm"):
        Kernels()


@pytest.mark.claim("DISPATCH-007")
def test_a_kernel_is_checked_on_cuda_where_present_else_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("triton", reason="the Triton kernels need triton (pip install 'albor[gpu]')")
    seen: list[tuple[str, torch.device]] = []
    monkeypatch.setattr(dispatch, "check", lambda op, kernel, reference, device: seen.append((op, device)))
    table = Kernels({"rmsnorm": "triton"})
    assert seen == [("rmsnorm", torch.device("cuda" if torch.cuda.is_available() else "cpu"))]
    assert table.backends["rmsnorm"] == "triton"
