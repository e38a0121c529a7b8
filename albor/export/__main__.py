"""``python -m albor.export``: a checkpoint as a Hugging Face folder or a GGUF file.

    albor export hf runs/default runs/default-hf
    albor export gguf runs/default runs/default-q4_k_m.gguf --type q4_k_m

``CKPT`` is a checkpoint dir or a run dir (its latest checkpoint that verifies). ``OUT`` must not
exist; it appears only once the export is complete. Errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from albor.checkpoint import CheckpointError
from albor.export.export_gguf import TYPES, export_gguf
from albor.export.export_hf import export_hf
from albor.export.staging import ExportError


def parse_args(argv: list[str] | None, prog: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="format", required=True)
    hf = sub.add_parser("hf", help="a folder transformers loads (config, safetensors, tokenizer)")
    gg = sub.add_parser("gguf", help="one GGUF file llama.cpp loads")
    for s in (hf, gg):
        s.add_argument("checkpoint", type=Path, help="checkpoint dir or run dir")
        s.add_argument("out", type=Path, help="the folder (hf) or file (gguf) to write; must not exist")
    gg.add_argument("--type", choices=TYPES, default="f16", help="weight type (q4_k_m through llama.cpp's quantiser)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, prog: str = "python -m albor.export") -> int:
    args = parse_args(argv, prog)
    try:
        if args.format == "hf":
            out = export_hf(args.checkpoint, args.out)
        else:
            out = export_gguf(args.checkpoint, args.out, args.type)
    except (CheckpointError, ExportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
