"""Validation perplexity of a trained checkpoint in every format it leaves Albor in, on the same windows.

Exports the checkpoint to GGUF F16, Q8_0 and Q4_K_M (``albor export gguf``) and scores each through
llama.cpp, beside Albor's own decoder in float32, int8 and int4 (``albor complete --quant``), all with
``albor.export.compare.window_perplexity`` on the run's val split. Prints one JSON line per format, then
a Markdown table with the ratios the ``export_gguf`` and ``quantize`` contracts bound.

    python bench/format_perplexity.py runs/default --windows 256
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from albor.backend import llama_cpp_module
from albor.data import load_windows
from albor.export.compare import decoder_logits, window_perplexity
from albor.export.export_gguf import TYPES, export_gguf
from albor.export.quantize import quantize_decoder
from albor.generate import load


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path, help="checkpoint dir or run dir")
    p.add_argument("--windows", type=int, help="the first N val windows (default: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quants", nargs="*", default=["float32", "int8", "int4"], help="Albor's torch formats to score")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    inference = load(args.checkpoint, "cpu")
    windows = load_windows(inference.data_dir, "val")[: args.windows]
    print(json.dumps({"checkpoint": str(inference.path), "windows": len(windows), "tokens": int(windows[:, 1:].size)}))
    ppl: dict[str, float] = {}
    llama_cpp = llama_cpp_module()
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in TYPES:
            path = export_gguf(args.checkpoint, Path(tmp) / f"model-{kind}.gguf", kind)
            sizes[kind] = path.stat().st_size
            llm = llama_cpp.Llama(model_path=str(path), n_ctx=0, n_threads=args.threads, logits_all=True, verbose=False)

            def logits_of(ids: list[int], llm: llama_cpp.Llama = llm) -> torch.Tensor:
                llm.reset()
                llm.eval(ids)
                return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))

            t0 = time.perf_counter()
            ppl[f"GGUF {kind}"] = window_perplexity(logits_of, windows).ppl
            row = {"format": f"GGUF {kind}", "ppl": ppl[f"GGUF {kind}"], "bytes": sizes[kind]}
            print(json.dumps(row | {"seconds": time.perf_counter() - t0}), flush=True)
    for quant in args.quants:
        model = load(args.checkpoint, "cpu").model
        if quant != "float32":
            quantize_decoder(model, 8 if quant == "int8" else 4)
        ppl[f"albor torch {quant}"] = window_perplexity(decoder_logits(model), windows).ppl
        print(json.dumps({"format": f"albor torch {quant}", "ppl": ppl[f"albor torch {quant}"]}), flush=True)
    f16, f32 = ppl["GGUF f16"], ppl.get("albor torch float32", float("nan"))
    print("\n| format | file MB | val ppl | × GGUF F16 | × Albor float32 |\n| --- | --- | --- | --- | --- |")
    for name, value in ppl.items():
        size = f"{sizes[name.split()[-1]] / 1e6:.1f}" if name.startswith("GGUF") else ""
        print(f"| {name} | {size} | {value:.3f} | {value / f16:.4f} | {value / f32:.4f} |")


if __name__ == "__main__":
    main()
