"""``albor data {corpus,tokenizer,pack,prepare} [field=value ...]``: the pipeline's stages.

Every ``DataConfig`` field is set with the same override grammar as ``albor train`` (there as
``data.field=value``): ``albor data prepare source=~/my-code license_policy=any vocab_size=8192``.
``out`` is by default a cache folder named by vocab_size, seq_len, seed and a hash of the rest.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from albor.config import commented_yaml
from albor.config.errors import ConfigError
from albor.config.overrides import GRAMMAR, apply_overrides, validate
from albor.data.config import DataConfig
from albor.data.corpus import build_corpus
from albor.data.packing import pack
from albor.data.prepare import default_data_dir, prepare_config, summary
from albor.data.tokenizer import build_tokenizer

STAGES = {
    "corpus": "harvest, filter, dedup and split the source into <out>/corpus",
    "tokenizer": "train the ByteLevel BPE on the train split into <out>/tokenizer.json",
    "pack": "FIM, tokenize and pack into <out>/tokens and <out>/manifest.json",
    "prepare": "all three stages, reusing an output of the same configuration",
}


def parser(prog: str) -> argparse.ArgumentParser:
    fields = commented_yaml(DataConfig())
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        epilog=f"fields (default values, and what each means):\n{fields}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("stage", choices=list(STAGES), help="; ".join(f"{k}: {v}" for k, v in STAGES.items()))
    p.add_argument("overrides", nargs="*", metavar="field=value", help=GRAMMAR)
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    return p


def main(argv: list[str] | None = None, prog: str = "python -m albor.data") -> int:
    args = parser(prog).parse_intermixed_args(argv)
    try:
        cfg = validate(DataConfig, apply_overrides({}, args.overrides))
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(commented_yaml(cfg), end="")
        return 0
    out = cfg.out or default_data_dir(cfg)
    t = time.perf_counter()
    try:
        if args.stage == "corpus":
            print(build_corpus(cfg, out).format())
        elif args.stage == "tokenizer":
            print(f"tokenizer: wrote {build_tokenizer(cfg, out)}")
        elif args.stage == "pack":
            manifest = pack(cfg, out)
            print(summary(manifest, {"pack": time.perf_counter() - t}))
        else:
            prepare_config(cfg.model_copy(update={"out": out}))
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    print(f"{args.stage}: {time.perf_counter() - t:.1f} s, output in {Path(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
