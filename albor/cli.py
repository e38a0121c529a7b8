"""The ``albor`` command: one entry point over every module's command line.

``albor train …`` is ``python -m albor.train …``, and so on; each subcommand's ``--help`` is its
module's. This module sits above both layers: it dispatches to the runtime's commands and to the
verification layer's, and only ``albor/__main__.py`` imports it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

# command -> (module, function taking (argv, prog), one line of help). Modules load only when used.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("albor.train.__main__", "main", "train a model: presets, overrides, resume, preflight"),
    "data": ("albor.data.__main__", "main", "build the corpus, tokenizer and token shards"),
    "distill": (
        "albor.distill.distill",
        "main",
        "train a student on a teacher's distributions (online, or top-k shards)",
    ),
    "finetune": ("albor.ladder.finetune", "main", "instruct fine-tune on docstring pairs of the train split (--lora)"),
    "merge": ("albor.ladder.merge", "main", "SLERP-merge two checkpoints of one model"),
    "prune": ("albor.ladder.prune", "main", "WANDA-prune a checkpoint (--sparsity S or --pattern 2:4)"),
    "card": ("albor.ladder.model_card", "main", "measure a variant and write its MODEL_CARD.md"),
    "eval": ("albor.eval.__main__", "main", "val perplexity and bits/byte, HumanEval pass@k and infill, self-check"),
    "complete": ("albor.complete", "main", "complete code from a checkpoint or a GGUF, streamed to the terminal"),
    "export": ("albor.export.__main__", "main", "a checkpoint as a Hugging Face folder or a GGUF (f16, q8_0, q4_k_m)"),
    "serve": ("albor.serve", "main", "an OpenAI-compatible completions server (and /infill) for a GGUF"),
    "plot": ("albor.plot", "main", "write a run's training-log PNGs next to it"),
    "battery": ("albor.verify.battery", "main", "run the falsification battery here; record card, date and results"),
    "check": ("albor.verify.check", "main", "check contracts and gaps against the collected tests"),
    "mutants": ("albor.verify.mutants", "main", "run every registered fault: each must be killed"),
    "report": ("albor.verify.report", "main", "the graded report: battery, coverage, mutants"),
    "book": ("albor.verify.book.build", "main", "build the spec book (Sphinx + MyST) into docs/_build/html"),
}

USAGE = "usage: albor [-h] COMMAND [ARGS ...]"


def _help() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items())
    return (
        f"{USAGE}\n\nAlbor: a verified trainer for small LLaMA-style Python code models.\n\n"
        f"commands:\n{rows}\n\n"
        "`albor COMMAND --help` tells more. With no arguments, `albor train` trains the tiny default on the\n"
        "CPU; `pytest falsification/` runs the battery on this machine's device.\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_help(), end="")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"{USAGE}\nalbor: unknown command {name!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[name]
    run: Callable[[list[str], str], int] = getattr(importlib.import_module(module), function)
    return run(rest, f"albor {name}")


if __name__ == "__main__":
    sys.exit(main())
