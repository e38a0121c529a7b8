"""SLERP merge of two checkpoints of one model, tensor by tensor, as mergekit does (contract ``merge``).

For tensors a and b of one name, with θ the angle between them (cos θ their directions' dot
product): slerp(a, b, t) = sin((1−t)θ)/sin θ · a + sin(tθ)/sin θ · b. When the directions are nearly
parallel (|cos θ| > ``PARALLEL_DOT``) sin θ is too small to divide by, and the merge is the linear
interpolation a + t·(b − a); a dot that rounding takes past ±1 is past ``PARALLEL_DOT`` too, so acos
never sees it. Each tensor is merged in float32 and cast back to its dtype;
t = 0 and t = 1 return a and b themselves, bitwise.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import yaml

from albor.checkpoint import CheckpointError, load_for_inference, save_checkpoint
from albor.io import write_json_atomic

PARALLEL_DOT = 0.9995  # mergekit's DOT_THRESHOLD: beyond it sin θ is too small to divide by
NORM_EPS = 1e-8


def lerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """a + t·(b − a) in float32, cast back to a's dtype (so a merge of a tensor with itself is that tensor)."""
    a32 = a.float()
    return (a32 + t * (b.float() - a32)).to(a.dtype)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of ``a`` and ``b`` at ``t`` in [0, 1]; linear when they are nearly parallel."""
    if a.shape != b.shape:
        raise ValueError(f"cannot merge tensors of shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if not 0 <= t <= 1:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    if t == 0:
        return a.clone()
    if t == 1:
        return b.clone()
    a32, b32 = a.float().flatten(), b.float().flatten()
    dot = float((a32 / (a32.norm() + NORM_EPS)) @ (b32 / (b32.norm() + NORM_EPS)))
    if abs(dot) > PARALLEL_DOT:
        return lerp(a, b, t)
    theta = math.acos(dot)
    s = math.sin(theta)
    out = math.sin((1 - t) * theta) / s * a32 + math.sin(t * theta) / s * b32
    return out.view(a.shape).to(a.dtype)


def merge_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    """SLERP of every tensor of two state dicts of one model; the names must agree."""
    if a.keys() != b.keys():
        raise ValueError(f"the models differ in tensors: {sorted(set(a) ^ set(b))[:5]}")
    return {name: slerp(a[name], b[name], t) for name in a}


def merge_checkpoints(first: Path, second: Path, t: float, out: Path, recipe: str) -> Path:
    """Write the SLERP at ``t`` of two checkpoints (or runs) of one model as a run at ``out``; first's
    tokenizer and config go with it. Models of another shape, or tokenizers that differ, are refused."""
    a, b = load_for_inference(first), load_for_inference(second)
    if a.model_config != b.model_config:
        raise CheckpointError(f"{second}: holds another model than {first}; only one model's checkpoints merge")
    if (a.path / "tokenizer.json").read_bytes() != (b.path / "tokenizer.json").read_bytes():
        raise CheckpointError(f"{second}: has another tokenizer than {first}; its token ids mean other things")
    merged = merge_state(a.model.state_dict(), b.model.state_dict(), t)
    a.model.load_state_dict(merged)
    config = yaml.safe_load((a.path / "config.yaml").read_text())
    state = {"step": 0, "data_dir": str(a.data_dir) if a.data_dir else None}
    save_checkpoint(
        out / "checkpoints",
        0,
        model=a.model,
        optimizer=torch.optim.SGD(a.model.parameters(), lr=0.0),
        state=state,
        config_yaml=yaml.safe_dump(config, sort_keys=False),
        tokenizer_path=a.path / "tokenizer.json",
    )
    write_json_atomic(out / "ladder.json", {"parents": [str(first), str(second)], "recipe": recipe})
    return out


def main(argv: list[str], prog: str = "albor merge") -> int:
    parser = argparse.ArgumentParser(prog=prog, description="merge two checkpoints of one model (SLERP per tensor)")
    parser.add_argument("--method", choices=["slerp"], default="slerp", help="how tensors are combined")
    parser.add_argument("--t", type=float, default=0.5, help="0 gives the first model, 1 the second")
    parser.add_argument("first", type=Path, help="checkpoint or run dir (t = 0)")
    parser.add_argument("second", type=Path, help="checkpoint or run dir (t = 1)")
    parser.add_argument("--out", type=Path, required=True, help="the merged model's run dir")
    args = parser.parse_args(argv)
    if not 0 <= args.t <= 1:
        parser.error(f"--t: must lie in [0, 1], got {args.t}")
    recipe = " ".join([prog, *argv])
    try:
        out = merge_checkpoints(args.first, args.second, args.t, args.out, recipe)
    except (CheckpointError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    print(f"merged {args.first} and {args.second} at t={args.t} into {out}")
    return 0
