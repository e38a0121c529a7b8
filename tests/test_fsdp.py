"""Unit tests of FSDP2 sharding and sharded checkpoints on a process group of one (gloo, CPU)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from albor import checkpoint as ckpt
from albor.config import ModelConfig, OptimConfig
from albor.dcp_checkpoint import begin_save, full_state, is_sharded
from albor.model import Decoder
from albor.optim.adamw import build_optimizer
from albor.train import distributed, fsdp
from albor.train.distributed import Dist

CFG = ModelConfig(name="t", n_layers=2, d_model=16, n_heads=2, n_kv_heads=1, d_ff=24, vocab_size=37, max_seq_len=8)


def _group_of_one() -> Dist:
    return distributed.init("cpu", sharded=True)


def test_every_block_and_the_root_are_sharded_and_accumulation_without_sync_adds_up() -> None:
    d = _group_of_one()
    try:
        torch.manual_seed(0)
        plain = Decoder(CFG)
        model = Decoder(CFG)
        model.load_state_dict(plain.state_dict())
        fsdp.shard(model, model.blocks, torch.device("cpu"), bf16=False)
        assert isinstance(model, FSDPModule) and all(isinstance(b, FSDPModule) for b in model.blocks)
        assert all(isinstance(p, DTensor) for p in model.parameters())
        x = torch.randint(0, CFG.vocab_size, (4, 7), generator=torch.Generator().manual_seed(1))
        with fsdp.no_gradient_sync(model):  # the first micro-batch: no reduce-scatter, gradients kept
            model(x[:2], x[:2], reduction="sum").backward()
        model(x[2:], x[2:], reduction="sum").backward()
        plain(x, x, reduction="sum").backward()
        for (name, p), q in zip(model.named_parameters(), plain.parameters(), strict=True):
            assert torch.allclose(p.grad.full_tensor(), q.grad, rtol=1e-5, atol=1e-6), name
    finally:
        distributed.shutdown(d)


def test_a_sharded_save_round_trips_through_full_state(tmp_path: Path) -> None:
    d = _group_of_one()
    try:
        torch.manual_seed(0)
        model = Decoder(CFG)
        expected = {k: v.clone() for k, v in model.state_dict().items()}
        fsdp.shard(model, model.blocks, torch.device("cpu"), bf16=False)
        opt = build_optimizer(model, OptimConfig(warmup_steps=1, max_steps=2))
        tok = tmp_path / "tokenizer.json"
        tok.write_text("{}")
        root = tmp_path / "ckpts"
        tmp = ckpt.new_checkpoint_dir(root, 1)

        def complete(t: Path) -> None:
            ckpt.complete(t, 1, {"step": 1}, "model: t\n", tok)

        pending = begin_save(
            tmp, 1, model, opt, complete, True, lambda: None, torch.distributed.new_group(backend="gloo")
        )
        assert not (root / ckpt.step_dir_name(1)).exists(), "a background save is not visible before it completes"
        path = pending.finish()
        assert path == root / ckpt.step_dir_name(1) and is_sharded(path)
        ckpt.verify(path)
        full = full_state(path)["model"]
        assert full.keys() == expected.keys() and all(torch.equal(full[k], expected[k]) for k in full)
    finally:
        distributed.shutdown(d)
