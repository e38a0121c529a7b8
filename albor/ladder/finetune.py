"""``albor finetune``: instruct fine-tuning of a trained model on docstring-conditioned pairs from its train split.

It mines the pairs of the base checkpoint's train split (``albor.ladder.pairs``) into
``runs_dir/name/pairs.parquet``, then trains the ``finetune`` preset (or ``--config``) from the base's
weights, shape and tokenizer on them, with LoRA adapters through peft when ``--lora`` is given. A
LoRA run's checkpoints hold the base and the adapters; every command that loads one for use merges them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from albor import checkpoint as ckpt
from albor.ladder.pairs import PAIRS_FILE, mine_pairs, write_pairs
from albor.train.__main__ import add_run_arguments, run_command
from albor.train.config import DERIVED


def _prepare(args: argparse.Namespace) -> list[str]:
    """Mine the pairs (not on a resume) and return the overrides that put the run on them and on the base."""
    base = ckpt.resolve(args.base)
    state = json.loads((base / "state.json").read_text())
    if not state.get("data_dir"):
        raise ValueError(f"{base}: names no data folder to mine pairs from")
    if args.config is None:
        args.config = "finetune"
    args.name = args.name or "instruct"
    runs_dir = next((Path(o.partition("=")[2]) for o in args.overrides if o.startswith("runs_dir=")), Path("runs"))
    pairs_path = runs_dir / args.name / PAIRS_FILE
    if not args.resume:
        pairs = mine_pairs(Path(state["data_dir"]))
        write_pairs(pairs, pairs_path)
        print(f"{len(pairs)} docstring-conditioned pairs from the train split of {state['data_dir']}")
    config = yaml.safe_load((base / "config.yaml").read_text())
    model = {k: v for k, v in config["model"].items() if k not in DERIVED}
    shape = [f"data.{k}={config['data'][k]}" for k in ("vocab_size", "seq_len")]
    return [f"init_from={base}", f"data.source={pairs_path}", f"model={json.dumps(model)}", *shape] + (
        ["lora={}"] if args.lora else []
    )


def main(argv: list[str] | None = None, prog: str = "albor finetune") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("base", type=Path, help="the trained model's checkpoint or run dir")
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters (lora.r, lora.alpha) on a frozen base")
    add_run_arguments(parser)
    return run_command(parser, argv, prog, prepare=_prepare)


if __name__ == "__main__":
    sys.exit(main())
