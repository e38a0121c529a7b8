"""Falsifiers for the ``dispatch`` contract (contracts/dispatch.yaml): no kernel ever fails in silence,
and each model runs the kernels it was given.

A kernel is made unusable by asking for it on the ``meta`` device, where no Triton kernel can launch.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from albor.config import ModelConfig
from albor.model import Decoder
from albor.ops.dispatch import OPS, Kernels, KernelUnavailable, load
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
    assert any(op in str(w.message) for w in caught), "the fallback must be announced"
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
