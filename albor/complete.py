"""``python -m albor.complete``: stream a completion to the terminal, from a checkpoint or a GGUF.

    albor complete --checkpoint runs/default "def fib(n):"
    albor complete --checkpoint runs/default --prefix "def add(a, b):\\n    " --suffix "\\n"
    albor complete --checkpoint runs/default --quant int8 --threads 2 "def fib(n):"
    albor complete --backend llama.cpp --checkpoint model-q4_k_m.gguf "def fib(n):"

Only the completion is written, as it is generated. The ``torch`` backend (the default) runs
Albor's decoder from a checkpoint dir or a run dir (its latest checkpoint that verifies), in float32
or with int8/int4 weights (``--quant``); the ``llama.cpp`` backend runs a GGUF from ``albor export
gguf``. The tokenizer is the checkpoint's, or the GGUF's, own. A prompt longer than the context keeps
its last tokens, with a warning; a FIM prompt that does not fit is refused. Errors (a missing or
corrupt checkpoint, a bad argument) print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import get_args

from albor.backend import BackendName, LlamaCppBackend, Quant, TorchBackend, open_backend
from albor.checkpoint import CheckpointError
from albor.generate import Sampling, default_device, encode, fim_prompt, stream_text


def parse_args(argv: list[str] | None, prog: str = "python -m albor.complete") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("prompt", nargs="?", help="text to complete (leave out with --prefix/--suffix)")
    p.add_argument("--checkpoint", type=Path, required=True, help="checkpoint or run dir (torch); a GGUF (llama.cpp)")
    p.add_argument("--backend", choices=get_args(BackendName), default="torch", help="what runs the model")
    p.add_argument(
        "--quant",
        choices=get_args(Quant),
        default="none",
        help="torch backend: weight-only int8/int4 (4-5x less memory, slower than float32 on x86: bench/RESULTS.md)",
    )
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's and llama.cpp's own choice)")
    p.add_argument("--prefix", help="FIM: the code before the hole")
    p.add_argument("--suffix", help="FIM: the code after the hole")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most")
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, help="sample from the k likeliest tokens only")
    p.add_argument("--top-p", type=float, help="sample from the smallest set of tokens this likely")
    p.add_argument("--seed", type=int, help="seed for sampling (default: random)")
    p.add_argument("--stop", action="append", default=[], help="stop before this string (repeatable)")
    p.add_argument("--device", default=default_device(), help="torch backend: where the decoder runs")
    args = p.parse_args(argv)
    fim = args.prefix is not None or args.suffix is not None
    if fim == (args.prompt is not None):
        p.error("give either a prompt or --prefix/--suffix")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    return args


def completion(
    backend: TorchBackend | LlamaCppBackend,
    prompt: str | None = None,
    prefix: str | None = None,
    suffix: str | None = None,
    max_new_tokens: int = 128,
    stop: Sequence[str] = (),
    sampling: Sampling | None = None,
) -> Iterator[str]:
    """The completion of ``prompt``, or the infill between ``prefix`` and ``suffix``, as streamed text.

    ``backend`` is loaded once (``albor.backend.open_backend``) and serves any number of calls.
    """
    tokenizer = backend.tokenizer
    if prompt is None:
        ids = fim_prompt(tokenizer, prefix or "", suffix or "", max_new_tokens, backend.max_seq_len)
    else:
        ids = encode(tokenizer, prompt)
    return stream_text(backend, tokenizer, ids, max_new_tokens, stop, sampling)


def main(argv: list[str] | None = None, prog: str = "python -m albor.complete") -> int:
    args = parse_args(argv, prog)
    warnings.formatwarning = lambda message, *_a, **_k: f"warning: {message}\n"
    try:
        sampling = Sampling(args.temperature, args.top_k, args.top_p, args.seed)
        backend = open_backend(args.backend, args.checkpoint, args.quant, args.threads, args.device)
        pieces = completion(backend, args.prompt, args.prefix, args.suffix, args.max_new_tokens, args.stop, sampling)
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
