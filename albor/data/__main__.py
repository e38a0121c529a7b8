"""``python -m albor.data {corpus,tokenizer,pack,prepare}``: the pipeline's stages from the command line.

Every ``DataConfig`` field is a flag (``--vocab-size 8192``); ``--out`` defaults to ``default_data_dir``.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from albor.data.config import DataConfig
from albor.data.corpus import build_corpus
from albor.data.packing import pack
from albor.data.prepare import default_data_dir, prepare_config, summary
from albor.data.tokenizer import build_tokenizer


def _parse(annotation: Any) -> Any:
    """An argparse ``type`` for a field annotation; ``none`` reads as None where the field allows it."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1
    base = args[0] if optional else annotation
    if typing.get_origin(base) is typing.Literal:
        base = str

    def convert(text: str) -> Any:
        return None if optional and text.lower() == "none" else base(text)

    return convert


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m albor.data", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="stage", required=True)
    help_of = {
        "corpus": "harvest, filter, dedup and split the source into <out>/corpus",
        "tokenizer": "train the ByteLevel BPE on the train split into <out>/tokenizer.json",
        "pack": "FIM, tokenize and pack into <out>/tokens and <out>/manifest.json",
        "prepare": "all three stages, reusing an output of the same configuration",
    }
    for stage, text in help_of.items():
        sp = sub.add_parser(stage, help=text, description=text)
        for name, field in DataConfig.model_fields.items():
            flag = "--" + name.replace("_", "-")
            kind = (
                {"action": argparse.BooleanOptionalAction}
                if field.annotation is bool
                else {"type": _parse(field.annotation)}
            )
            sp.add_argument(flag, default=argparse.SUPPRESS, help=field.description, **kind)
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(parser().parse_args(argv))
    stage = args.pop("stage")
    try:
        cfg = DataConfig(**args)
    except ValidationError as e:
        print(f"error: invalid option:\n{e}", file=sys.stderr)
        return 2
    out = cfg.out or default_data_dir(cfg.vocab_size, cfg.seq_len, cfg.seed)
    t = time.perf_counter()
    try:
        if stage == "corpus":
            print(build_corpus(cfg, out).format())
        elif stage == "tokenizer":
            print(f"tokenizer: wrote {build_tokenizer(cfg, out)}")
        elif stage == "pack":
            manifest = pack(cfg, out)
            print(summary(manifest, {"pack": time.perf_counter() - t}))
        else:
            prepare_config(cfg.model_copy(update={"out": out}))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{stage}: {time.perf_counter() - t:.1f} s, output in {Path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
