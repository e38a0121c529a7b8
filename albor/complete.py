"""``python -m albor.complete``: stream a completion from a checkpoint to the terminal.

    python -m albor.complete --checkpoint runs/default "def fib(n):"
    python -m albor.complete --checkpoint runs/default --prefix "def add(a, b):\\n    " --suffix "\\n"

Only the completion is written, as it is generated. ``--checkpoint`` is a checkpoint dir or a run
dir (its latest checkpoint that verifies); the tokenizer is the checkpoint's own. A prompt longer
than the context keeps its last tokens, with a warning; a FIM prompt that does not fit is refused.
Errors (a missing or corrupt checkpoint, a bad argument) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from albor.checkpoint import CheckpointError
from albor.generate import Sampling, default_device, encode, fim_prompt, load, stream_text


def parse_args(argv: list[str] | None, prog: str = "python -m albor.complete") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("prompt", nargs="?", help="text to complete (leave out with --prefix/--suffix)")
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint dir or run dir")
    p.add_argument("--prefix", help="FIM: the code before the hole")
    p.add_argument("--suffix", help="FIM: the code after the hole")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, help="seed for sampling (default: random)")
    p.add_argument("--stop", action="append", default=[], help="stop before this string (repeatable)")
    p.add_argument("--device", default=default_device())
    args = p.parse_args(argv)
    fim = args.prefix is not None or args.suffix is not None
    if fim == (args.prompt is not None):
        p.error("give either a prompt or --prefix/--suffix")
    return args


def main(argv: list[str] | None = None, prog: str = "python -m albor.complete") -> int:
    args = parse_args(argv, prog)
    warnings.formatwarning = lambda message, *_a, **_k: f"warning: {message}\n"
    try:
        sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
        inference = load(args.checkpoint, args.device)
        tokenizer, max_seq_len = inference.tokenizer, inference.model_config.max_seq_len
        if args.prompt is None:
            ids = fim_prompt(tokenizer, args.prefix or "", args.suffix or "", args.max_new_tokens, max_seq_len)
        else:
            ids = encode(tokenizer, args.prompt)
        for piece in stream_text(inference.model, tokenizer, ids, args.max_new_tokens, args.stop, sampling):
            sys.stdout.write(piece)
            sys.stdout.flush()
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
