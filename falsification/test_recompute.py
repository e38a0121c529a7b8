"""Falsifiers for the ``recompute`` contract (contracts/recompute.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from albor.config import ModelConfig
from albor.model import Block, Decoder
from albor.ops.dispatch import Kernels
from albor.recompute import Recompute
from falsification.backward import backward_ops, saved_bytes_per_token
from falsification.test_trainer import assert_steps_match_float64_reference

CFG = ModelConfig(
    name="recompute", n_layers=3, d_model=32, n_heads=4, n_kv_heads=2, d_ff=40, vocab_size=37, max_seq_len=16
)
BOTH = frozenset({"rmsnorm", "swiglu"})


@pytest.mark.claim("RECOMPUTE-001")
def test_recomputed_steps_match_the_float64_reference(small_data: Path, tmp_path: Path) -> None:
    assert_steps_match_float64_reference(small_data, tmp_path, "RECOMPUTE-001", recompute=sorted(BOTH))
    idx = torch.randint(0, CFG.vocab_size, (2, 11), generator=torch.Generator().manual_seed(0))
    grads = []
    for recompute in (frozenset(), BOTH):
        torch.manual_seed(0)
        model = Decoder(CFG.model_copy(update={"init_std": 0.3}), recompute=recompute).double()
        model(idx, idx.roll(-1, 1)).backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert torch.equal(g, grads[1][name]), f"{name}: the recomputed backward's gradient differs"


def _declared_bytes(cfg: ModelConfig, recompute: frozenset[Recompute]) -> int:
    """The contract's kept bytes per token of one block under bf16 compute."""
    d, h, kv, hd, ff = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.d_ff
    kept = 4 * d + 2 * (h + 2 * kv) * hd + 2 * d + 4 * h + 2 * d + 4 * ff
    if "rmsnorm" not in recompute:
        kept += 2 * d + 2 * d + 4 + 4
    if "swiglu" not in recompute:
        kept += 2 * ff
    return kept


@pytest.mark.claim("RECOMPUTE-002")
@pytest.mark.parametrize(
    "names", [(), ("rmsnorm",), ("swiglu",), ("rmsnorm", "swiglu")], ids=lambda n: "+".join(n) or "none"
)
def test_a_compiled_block_keeps_only_the_declared_bytes(device: torch.device, names: tuple[Recompute, ...]) -> None:
    recompute = frozenset(names)
    block = Block(CFG, Kernels(), recompute).to(device)
    got = saved_bytes_per_token(block, device)
    assert got == _declared_bytes(CFG, recompute), f"{sorted(recompute)}: {got} bytes a token kept"


@pytest.mark.claim("RECOMPUTE-003")
def test_the_backward_recomputes_the_elementwise_ops_and_no_matmul() -> None:
    plain, recomputed = backward_ops(CFG, frozenset()), backward_ops(CFG, BOTH)
    matmuls = ("mm", "addmm", "bmm")
    assert {m: recomputed[m] for m in matmuls} == {m: plain[m] for m in matmuls}, "a matmul ran again in the backward"
    assert plain["silu"] == 0 and recomputed["silu"] == CFG.n_layers, "SwiGLU's product: once a block"
    assert plain["rsqrt"] == 0 and recomputed["rsqrt"] == 2 * CFG.n_layers, "the norms: both, once a block"
