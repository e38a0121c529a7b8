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
from collections.abc import Callable
from typing import Any, TypeVar

from albor import checkpoint as ckpt
from albor.checkpoint import CheckpointError
from albor.config import PRESETS, load_yaml, presets
from albor.config.errors import ConfigError
from albor.config.overrides import GRAMMAR
from albor.ops.dispatch import KernelUnavailable
from albor.train.config import TrainConfig, build_config, load_config
from albor.train.distributed import Dist
from albor.train.preflight import PreflightFailed, run_preflight
from albor.train.run import RunLock, RunLocked
from albor.train.supervisor import supervise
from albor.train.trainer import Trainer, TrainingAlert, check_runnable

C = TypeVar("C", bound=TrainConfig)


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


def _config(args: argparse.Namespace, schema: type[C] = TrainConfig) -> C:
    if args.resume and args.config is None:
        # Where the run is: the default's runs_dir and name, unless --name or runs_dir=/name= say otherwise.
        place = [o for o in args.overrides if o.startswith(("runs_dir=", "name="))]
        probe = load_config("default", place + ([f"name={args.name}"] if args.name else []))
        run = probe.runs_dir / probe.name
        # The latest valid checkpoint's config is the run's config now (a resume's changes included).
        latest = ckpt.latest_valid(run / "checkpoints")
        saved = latest / "config.yaml" if latest is not None else run / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume: {saved} does not exist; name the run with --name or give --config")
        cfg = build_config(load_yaml(saved), args.overrides, schema)
    else:
        cfg = load_config(args.config or "default", args.overrides, schema)
    return cfg.model_copy(update={"name": args.name}) if args.name else cfg


def _train(cfg: TrainConfig, resume: bool, preflight: bool, trainer_cls: type[Trainer] = Trainer) -> dict[str, Any]:
    """Lock the run, run the preflight, train, and return the summary (rank 0 locks and preflights)."""
    lock = RunLock(cfg.runs_dir / cfg.name)
    rank0 = Dist.from_env().main
    if rank0:
        lock.acquire()  # before the preflight writes into the run: one writer per run
    try:
        if rank0:
            run_preflight(cfg.runs_dir / cfg.name, preflight)
        trainer = trainer_cls(cfg, resume=resume, lock=lock)
        try:
            return trainer.fit()
        finally:
            trainer.close()
    finally:
        lock.release()


def _child_argv(argv: list[str]) -> list[str]:
    """The supervised trainer's arguments: these, without --supervise."""
    return [a for a in argv if a != "--supervise"]


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of every command that trains a run: config, name, resume, preflight, print-config, overrides."""
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


def run_command(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    prog: str,
    schema: type[TrainConfig] = TrainConfig,
    trainer_cls: type[Trainer] = Trainer,
    prepare: Callable[[argparse.Namespace], list[str]] | None = None,
) -> int:
    """Parse ``argv`` with ``parser`` (given ``add_run_arguments``), build the config as ``schema`` and train it
    with ``trainer_cls``; the exit status and messages of ``albor train``. ``prepare`` runs first and returns
    overrides that go before the command line's (a ValueError from it is the command's error)."""
    parser.add_argument("overrides", nargs="*", metavar="field=value", help="override any config field")
    args = parser.parse_intermixed_args(argv)
    try:
        args.overrides = [*(prepare(args) if prepare else []), *args.overrides]
        cfg = _config(args, schema)
        if args.print_config:
            print(cfg.to_commented_yaml(), end="")
            return 0
        check_runnable(cfg)  # before the preflight: what this machine cannot run is refused in one line
    except (ConfigError, ValueError, CheckpointError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if getattr(args, "supervise", False):
        return supervise(cfg.runs_dir / cfg.name, _child_argv(argv if argv is not None else sys.argv[1:]), prog)
    rank0 = Dist.from_env().main
    try:
        summary = _train(cfg, args.resume, args.preflight == "on", trainer_cls)
    except PreflightFailed as e:
        print(f"{prog}: refusing to start: {e}", file=sys.stderr)
        return 2
    except TrainingAlert as e:
        print(f"{prog}: ALERT: {e}", file=sys.stderr)
        return 3
    except (RunLocked, ConfigError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except KernelUnavailable as e:
        print(f"{prog}: `kernels`: {e}; choose another backend or set allow_kernel_fallback=true", file=sys.stderr)
        return 2
    except (ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except CheckpointError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    if rank0:
        print(json.dumps(summary, indent=2))
        if summary["val_ppl"] is not None:
            print(
                f"val_ppl {summary['val_ppl']:.2f} after {summary['steps']} steps "
                f"({summary['tokens_seen']:,} tokens) in {summary['wall_s']} s; checkpoints in {summary['run']}"
            )
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m albor.train") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--supervise",
        action="store_true",
        help="restart the run from its last verified checkpoint when it crashes (bounded, with back-off)",
    )
    return run_command(parser, argv, prog)


if __name__ == "__main__":
    sys.exit(main())
