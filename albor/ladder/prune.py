"""WANDA pruning: zero the weights of least |W|·‖X‖ in each output row, layer by layer (contract ``prune``).

Sun et al. 2023 score weight W_ij of a linear layer by |W_ij|·‖X_j‖₂, where ‖X_j‖₂ is the L2 norm of
input feature j over every calibration token, and compare scores within each output row i. With
``sparsity`` s each row keeps all but its ⌊s·d_in⌋ lowest-scored weights; with the 2:4 pattern each
row keeps the two highest-scored of every group of four consecutive inputs. The calibration windows
come from the train split; blocks are pruned in order, each one's input norms measured through the
blocks already pruned, so a block sees the activations it will see after pruning. The calibration
loss before and after is reported.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from albor.checkpoint import CheckpointError, load_for_inference, save_checkpoint
from albor.data.cursor import epoch_order
from albor.data.packing import load_windows
from albor.io import write_json_atomic
from albor.model import Decoder

MAX_LOSS_INCREASE = 0.05  # nats on the battery's trained model at 50% or 2:4 (contract prune, PRUNE-005)


@dataclass(frozen=True)
class PruneResult:
    """Calibration loss (token-mean CE, nats) before and after, and the share of pruned-layer weights now zero."""

    loss_before: float
    loss_after: float
    sparsity: float

    @property
    def loss_increase(self) -> float:
        return self.loss_after - self.loss_before


def wanda_scores(weight: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|W_ij|·‖X_j‖₂ for a weight (out, in) and the input feature norms (in,)."""
    return weight.abs().float() * input_norm.float()[None, :]


def prune_mask(
    scores: torch.Tensor, sparsity: float | None = None, pattern: tuple[int, int] | None = None
) -> torch.Tensor:
    """The weights to keep (True), per output row: all but the ⌊s·d_in⌋ lowest scores, or n of every m.

    Ties are broken by position (the lower index is pruned first), so the count is exact.
    """
    out_f, in_f = scores.shape
    if pattern is not None:
        n, m = pattern
        if in_f % m:
            raise ValueError(f"a {n}:{m} pattern needs inputs in groups of {m}; this layer has {in_f}")
        groups = scores.reshape(out_f, in_f // m, m)
        drop = torch.argsort(groups, dim=-1, stable=True)[..., : m - n]
        keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, drop, False)
        return keep.reshape(out_f, in_f)
    assert sparsity is not None
    k = int(sparsity * in_f)
    drop = torch.argsort(scores, dim=-1, stable=True)[:, :k]
    return torch.ones_like(scores, dtype=torch.bool).scatter_(-1, drop, False)


def _linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}


def _calibration_loss(model: Decoder, windows: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model(windows[:, :-1], windows[:, 1:]))


def input_norms(model: Decoder, block: nn.Module, windows: torch.Tensor) -> dict[str, torch.Tensor]:
    """‖X_j‖₂ over every calibration token of the input of each linear layer of ``block``."""
    sq: dict[str, torch.Tensor] = {}
    hooks = []
    for name, layer in _linears(block).items():

        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], name: str = name) -> None:
            x = args[0].detach().double().flatten(0, -2)
            sq[name] = sq.get(name, 0) + (x * x).sum(0)

        hooks.append(layer.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            model(windows[:, :-1])
    finally:
        for h in hooks:
            h.remove()
    return {name: s.sqrt() for name, s in sq.items()}


def wanda_prune(
    model: Decoder, windows: torch.Tensor, sparsity: float | None = None, pattern: tuple[int, int] | None = None
) -> PruneResult:
    """Prune every block's linear layers of ``model`` in place; ``windows`` (n, seq_len + 1) calibrate."""
    if (sparsity is None) == (pattern is None):
        raise ValueError("give a sparsity or a pattern, not both")
    if sparsity is not None and not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    model.eval()
    before = _calibration_loss(model, windows)
    zeros = total = 0
    for block in model.blocks:
        norms = input_norms(model, block, windows)
        for name, layer in _linears(block).items():
            keep = prune_mask(wanda_scores(layer.weight, norms[name]), sparsity, pattern)
            with torch.no_grad():
                layer.weight.mul_(keep.to(layer.weight.dtype))
            zeros += int((layer.weight == 0).sum())
            total += layer.weight.numel()
    return PruneResult(before, _calibration_loss(model, windows), zeros / total)


def calibration_windows(data_dir: Path, n: int, seed: int) -> torch.Tensor:
    """The first ``n`` train windows of epoch 0's order (the trainer's), as int64."""
    train = load_windows(data_dir, "train")
    idx = np.sort(epoch_order(len(train), seed, 0)[: min(n, len(train))])
    return torch.from_numpy(train[idx].astype(np.int64))


def parse_pattern(text: str) -> tuple[int, int]:
    """``"2:4"`` as (2, 4): keep n of every m."""
    n, sep, m = text.partition(":")
    if not (sep and n.isdigit() and m.isdigit() and 0 < int(n) < int(m)):
        raise ValueError(f"--pattern: {text!r} is not N:M with 0 < N < M, like 2:4")
    return int(n), int(m)


def main(argv: list[str], prog: str = "albor prune") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="checkpoint or run dir to prune")
    parser.add_argument("--out", type=Path, required=True, help="the pruned model's run dir")
    parser.add_argument("--method", choices=["wanda"], default="wanda", help="how weights are scored")
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--sparsity", type=float, help="share of each row's weights to zero, in [0, 1)")
    how.add_argument("--pattern", help="N:M structured sparsity, keep N of every M inputs (2:4)")
    parser.add_argument("--calibration-windows", type=int, default=32, help="train windows the norms are measured on")
    args = parser.parse_args(argv)
    recipe = " ".join([prog, *argv])
    try:
        pattern = parse_pattern(args.pattern) if args.pattern else None
        inf = load_for_inference(args.checkpoint)
        if inf.data_dir is None:
            raise CheckpointError(f"{inf.path}: names no data folder to take calibration windows from")
        config = yaml.safe_load((inf.path / "config.yaml").read_text())
        windows = calibration_windows(inf.data_dir, args.calibration_windows, config.get("seed", 0))
        result = wanda_prune(inf.model, windows, args.sparsity, pattern)
    except (CheckpointError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    state = {"step": 0, "data_dir": str(inf.data_dir)}
    save_checkpoint(
        args.out / "checkpoints",
        0,
        model=inf.model,
        optimizer=torch.optim.SGD(inf.model.parameters(), lr=0.0),
        state=state,
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        tokenizer_path=inf.path / "tokenizer.json",
    )
    report = {
        "calibration_windows": len(windows),
        "loss_before": result.loss_before,
        "loss_after": result.loss_after,
        "loss_increase": result.loss_increase,
        "sparsity": result.sparsity,
    }
    write_json_atomic(args.out / "ladder.json", {"parents": [str(args.checkpoint)], "recipe": recipe, "prune": report})
    print(
        f"pruned {inf.path} into {args.out}: {result.sparsity:.1%} of the block weights zero, calibration loss "
        f"{result.loss_before:.4f} -> {result.loss_after:.4f} (+{result.loss_increase:.4f} nats)"
    )
    return 0
