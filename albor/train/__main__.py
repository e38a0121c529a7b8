"""Train a model from a preset, a YAML file and `field=value` overrides.

With no arguments it prepares (or reuses) the standard-library data, trains the `tiny` preset on
the CPU for a few minutes, evaluates val_ppl and prints a summary. `--resume` continues
`runs/<name>` from its latest checkpoint that verifies, with the run's own config plus any
overrides (`optim.max_steps=600`). Before step 0 the battery's fast tier runs on this device.
"""

from __future__ import annotations

import argparse
import json
import sys

from albor.config import PRESETS, load_yaml, presets
from albor.config.errors import ConfigError
from albor.config.overrides import GRAMMAR
from albor.ops.dispatch import KernelUnavailable
from albor.train.config import TrainConfig, build_config, load_config
from albor.train.distributed import Dist
from albor.train.preflight import PreflightFailed, run_preflight
from albor.train.trainer import Trainer, TrainingAlert, check_runnable


def _preset_summary(kind: str) -> str:
    """One line per shipped preset: its name and the first line of its leading comment."""
    lines = []
    for name in presets(kind):
        first = (PRESETS / kind / f"{name}.yaml").read_text().splitlines()[0]
        lines.append(f"  {name:<14} {first.removeprefix('# ') if first.startswith('#') else ''}".rstrip())
    return "\n".join(lines)


EPILOG = f"""train presets (--config NAME):
{_preset_summary("train")}
model presets (model=NAME): {", ".join(presets("models"))}

Every field, its default and its meaning: `albor train --print-config [--config NAME]`.
Overrides: {GRAMMAR}.
"""


def _config(args: argparse.Namespace) -> TrainConfig:
    if args.resume and args.config is None:
        probe = load_config("default", [f"name={args.name}"] if args.name else [])
        saved = probe.runs_dir / probe.name / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} does not exist; name the run with --name or give --config")
        cfg = build_config(load_yaml(saved), args.overrides)
    else:
        cfg = load_config(args.config or "default", args.overrides)
    return cfg.model_copy(update={"name": args.name}) if args.name else cfg


def main(argv: list[str] | None = None, prog: str = "python -m albor.train") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="a train preset (see below) or a YAML file")
    parser.add_argument("--name", help="run name: the run lives in runs_dir/name")
    parser.add_argument("--resume", action="store_true", help="continue the run from its latest valid checkpoint")
    parser.add_argument(
        "--preflight",
        choices=["on", "off"],
        default="on",
        help="run the battery's fast tier on this device first (off is recorded loudly)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    parser.add_argument("overrides", nargs="*", metavar="field=value", help="override any config field")
    args = parser.parse_intermixed_args(argv)
    try:
        cfg = _config(args)
        if args.print_config:
            print(cfg.to_commented_yaml(), end="")
            return 0
        check_runnable(cfg)  # before the preflight: what this machine cannot run is refused in one line
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
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
        print(f"{prog}: refusing to start: {e}", file=sys.stderr)
        return 2
    except TrainingAlert as e:
        print(f"{prog}: ALERT: {e}", file=sys.stderr)
        return 3
    except KernelUnavailable as e:
        print(f"{prog}: `kernels`: {e}; choose another backend or set allow_kernel_fallback=true", file=sys.stderr)
        return 2
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
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
