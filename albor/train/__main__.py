"""``python -m albor.train [--config NAME|PATH] [--name RUN] [--resume] [--preflight on|off] [field=value ...]``

With no arguments: prepare (or reuse) the standard-library data, train the ``tiny`` preset on the
CPU for a few minutes, evaluate val_ppl and print a summary. Any config field can be overridden,
for example ``optim.lr=1e-3 micro_batch=4``. ``--resume`` continues ``runs/<name>`` from its latest
checkpoint that verifies, with the run's own config plus any overrides (e.g. ``optim.max_steps=600``).
"""

from __future__ import annotations

import argparse
import json
import sys

from albor.config import load_yaml
from albor.train.config import TrainConfig, build_config, load_config
from albor.train.distributed import Dist
from albor.train.preflight import PreflightFailed, run_preflight
from albor.train.trainer import Trainer, TrainingAlert


def _config(args: argparse.Namespace) -> TrainConfig:
    if args.resume and args.config is None:
        probe = load_config("default", [f"name={args.name}"] if args.name else [])
        saved = probe.runs_dir / probe.name / "config.yaml"
        if not saved.is_file():
            raise ValueError(f"--resume: {saved} does not exist; name the run with --name or give --config")
        cfg = build_config(load_yaml(saved), args.overrides)
    else:
        cfg = load_config(args.config or "default", args.overrides)
    return cfg.model_copy(update={"name": args.name}) if args.name else cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m albor.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="a train preset (default, pretrain-350m, …) or a YAML file")
    parser.add_argument("--name", help="run name: the run lives in runs_dir/name")
    parser.add_argument("--resume", action="store_true", help="continue the run from its latest valid checkpoint")
    parser.add_argument(
        "--preflight",
        choices=["on", "off"],
        default="on",
        help="run the battery's fast tier on this device first (off is recorded loudly)",
    )
    parser.add_argument("overrides", nargs="*", metavar="field=value")
    args = parser.parse_args(argv)
    try:
        cfg = _config(args)
    except ValueError as e:
        print(f"albor.train: {e}", file=sys.stderr)
        return 2
    rank0 = Dist.from_env().main
    try:
        if rank0:
            run_preflight(cfg.runs_dir / cfg.name, args.preflight == "on")
        trainer = Trainer(cfg, resume=args.resume)
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
    except PreflightFailed as e:
        print(f"albor.train: refusing to start: {e}", file=sys.stderr)
        return 2
    except TrainingAlert as e:
        print(f"albor.train: ALERT: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"albor.train: {e}", file=sys.stderr)
        return 2
    if rank0:
        print(json.dumps(summary, indent=2))
        if summary["val_ppl"] is not None:
            print(
                f"val_ppl {summary['val_ppl']:.2f} after {summary['steps']} steps "
                f"({summary['tokens_seen']:,} tokens) in {summary['wall_s']} s; checkpoints in {summary['run']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
