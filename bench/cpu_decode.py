"""CPU decode at batch 1, random weights: Albor through llama.cpp and through its torch backends, bare
llama.cpp on the same GGUF files, and the Hugging Face peers, with the machine's read bandwidth, in one process.

For each shape (125m, 350m: vocab 32768, untied head) it measures, greedy, a prompt of random ids then
new tokens:

- ``albor llama.cpp Q8_0 / Q4_K_M``: ``albor.backend.LlamaCppBackend`` under ``albor.generate.generate``
  (what ``albor complete --backend llama.cpp`` runs) on files from ``albor.export.export_gguf``;
- ``bare llama.cpp``: the same files through llama.cpp's C API (llama_decode and its greedy sampler) alone;
- ``albor torch fp32 / int8 / int4``: the decoder (``--quant none|int8|int4``) under ``generate``;
- ``HF fp32`` and ``HF dynamic int8``: ``transformers.LlamaForCausalLM`` with its KV cache, float32 and
  after ``torch.ao.quantization.quantize_dynamic``;
- the ATen int8/int4 weight-only kernels and a float32 matrix-vector sweep over the shape's matrices alone.

Beside each: ms/token, prompt tok/s, the bytes one token reads (the GGUF file, or the weights) and those
bytes per second as a share of the read bandwidth measured in the same run. Each figure is the best of
``--repeats`` runs (the machine is shared); bare and Albor's llama.cpp runs on one file take
turns. Prints one JSON line per figure, then Markdown tables.

    python bench/cpu_decode.py --threads 2
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from albor.backend import LlamaCppBackend, llama_cpp_module
from albor.config import load_model_config
from albor.data.tokenizer import train_tokenizer
from albor.export.export_gguf import write_gguf
from albor.export.quantize import quantize_decoder, quantize_int4
from albor.generate import generate
from albor.model import Decoder

MB = 1e6


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def best(fns: list[Callable[[], tuple[float, float]]], repeats: int) -> list[tuple[float, float]]:
    """(prompt tok/s, ms/token) of each of ``fns``, each the best of ``repeats`` runs. The runs take turns,
    so that a change in the machine's load between them falls on every engine alike."""
    runs: list[list[tuple[float, float]]] = [[] for _ in fns]
    for _ in range(repeats):
        for out, fn in zip(runs, fns, strict=True):
            out.append(fn())
    return [(max(r[0] for r in out), min(r[1] for r in out)) for out in runs]


def time_stream(tokens: Iterator[int], n_prompt: int) -> tuple[float, float]:
    """Prompt tok/s (time to the first new token) and ms per later token of a token stream."""
    t0 = time.perf_counter()
    next(tokens)
    t1 = time.perf_counter()
    rest = sum(1 for _ in tokens)
    t2 = time.perf_counter()
    return n_prompt / (t1 - t0), (t2 - t1) * 1e3 / rest


def bandwidth(threads: int) -> dict[str, float]:
    """GB/s of a 256 MB read (a sum) and a 256 MB copy (bytes read), on ``threads`` threads."""
    torch.set_num_threads(threads)
    x, y = torch.rand(64 << 20), torch.empty(64 << 20)
    out = {}
    for name, fn in {"read": lambda: x.sum(), "copy": lambda: y.copy_(x)}.items():
        fn()
        t = min(_seconds(fn) for _ in range(5))
        out[name] = x.numel() * 4 / t / 1e9
    return out


def _seconds(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def random_model(preset: str) -> Decoder:
    cfg = load_model_config(preset).model_copy(update={"vocab_size": 32768, "max_seq_len": 1024})
    torch.manual_seed(0)
    return Decoder(cfg).eval()


def decode_bytes(model: Decoder, linear_bytes: float = 4.0) -> int:
    """Bytes one decoded token reads: every matrix of the blocks and the head at ``linear_bytes`` a weight,
    and the gains in float32; of the embedding it reads one row."""
    cfg = model.cfg
    linears = cfg.n_params() - cfg.vocab_size * cfg.d_model - (2 * cfg.n_layers + 1) * cfg.d_model
    if cfg.tie_embeddings:
        linears += cfg.vocab_size * cfg.d_model
    return int(linears * linear_bytes + (2 * cfg.n_layers + 1 + 1) * cfg.d_model * 4)


@contextmanager
def bare_llama_cpp(
    path: Path, prompt: list[int], new: int, threads: int
) -> Iterator[Callable[[], tuple[float, float]]]:
    """llama.cpp's C API alone, with its default context settings: decode the prompt, then one token at a
    time with its greedy sampler. The model and context are freed on exit."""
    L = llama_cpp_module()

    model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
    params = L.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_threads, params.n_threads_batch = 1024, 512, threads, threads
    ctx = L.llama_init_from_model(model, params)
    sampler = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    L.llama_sampler_chain_add(sampler, L.llama_sampler_init_greedy())

    def tokens() -> Iterator[int]:
        L.llama_memory_clear(L.llama_get_memory(ctx), True)
        ids = (ctypes.c_int32 * len(prompt))(*prompt)
        L.llama_decode(ctx, L.llama_batch_get_one(ids, len(prompt)))
        for _ in range(new):
            token = L.llama_sampler_sample(sampler, ctx, -1)
            yield token
            one = (ctypes.c_int32 * 1)(token)
            L.llama_decode(ctx, L.llama_batch_get_one(one, 1))

    try:
        yield lambda: time_stream(tokens(), len(prompt))
    finally:
        L.llama_sampler_free(sampler)
        L.llama_free(ctx)
        L.llama_model_free(model)


def hf_peer(model: Decoder, dynamic_int8: bool) -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    from albor.export.export_hf import hf_config, hf_state_dict

    hf = LlamaForCausalLM(LlamaConfig(**hf_config(model.cfg))).eval()
    hf.load_state_dict(hf_state_dict(model))
    if dynamic_int8:
        hf = torch.ao.quantization.quantize_dynamic(hf, {nn.Linear}, dtype=torch.qint8)
    return hf


def hf_tokens(hf: nn.Module, prompt: list[int], new: int) -> Iterator[int]:
    with torch.no_grad():
        out = hf(torch.tensor([prompt]), use_cache=True)
        for _ in range(new):
            token = int(out.logits[0, -1].argmax())
            yield token
            out = hf(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)


def kernel_sweeps(model: Decoder, repeats: int) -> dict[str, dict[str, float]]:
    """ms and GB/s of one batch-1 pass over every matrix of the decoder, per kernel."""
    mats = [m.weight.detach() for m in model.modules() if isinstance(m, nn.Linear)]
    out = {}
    f32 = [(w, torch.randn(1, w.shape[1])) for w in mats]
    i8 = []
    for w in mats:
        s = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        i8.append((torch.round(w / s[:, None]).to(torch.int8), s, torch.randn(1, w.shape[1])))
    i4 = []
    for w in mats:
        q, scale, zero = quantize_int4(w, 32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 2)
        sz = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
        i4.append((packed, sz, torch.randn(1, q.shape[1])))
    sweeps = {
        "float32 F.linear": (
            lambda: [torch.nn.functional.linear(x, w) for w, x in f32],
            sum(w.numel() * 4 for w in mats),
        ),
        "int8 _weight_int8pack_mm": (
            lambda: [torch.ops.aten._weight_int8pack_mm(x, q, s) for q, s, x in i8],
            sum(q.numel() + s.numel() * 4 for q, s, _ in i8),
        ),
        "int4 _weight_int4pack_mm_for_cpu": (
            lambda: [torch.ops.aten._weight_int4pack_mm_for_cpu(x, p, 32, sz) for p, sz, x in i4],
            sum(p.numel() + sz.numel() * 4 for p, sz, _ in i4),
        ),
    }
    for name, (fn, nbytes) in sweeps.items():
        fn()
        t = min(_seconds(fn) for _ in range(max(repeats, 3)))
        out[name] = {"ms": t * 1e3, "GB/s": nbytes / t / 1e9, "bytes": nbytes}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["125m", "350m"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt", type=int, default=64, help="prompt tokens")
    p.add_argument("--new", type=int, default=64, help="new tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip", nargs="*", default=[], help="rows to leave out: hf, torch, kernels")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    bw = bandwidth(args.threads)
    meta = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "threads": args.threads,
        "loadavg": load,
        "torch": torch.__version__,
    }
    meta["date"] = time.strftime("%Y-%m-%d %H:%M")
    meta |= {"read_GB/s": bw["read"], "copy_GB/s": bw["copy"]}
    print(json.dumps({"meta": meta}), flush=True)
    prompt = torch.randint(7, 32768, (args.prompt,), generator=torch.Generator().manual_seed(0)).tolist()
    tokenizer = train_tokenizer(["def f(x):\n    return x + 1\n"] * 16, 300)
    rows = []

    def record(preset: str, engines: dict[str, tuple[int, Callable[[], tuple[float, float]]]]) -> None:
        figures = best([fn for _, fn in engines.values()], args.repeats)
        for (engine, (nbytes, _)), (tps, ms) in zip(engines.items(), figures, strict=True):
            gbs = nbytes / (ms / 1e3) / 1e9
            row = {
                "preset": preset,
                "engine": engine,
                "ms/token": ms,
                "prompt tok/s": tps,
                "MB": nbytes / MB,
                "GB/s": gbs,
                "of read bw": gbs / bw["read"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)

    for preset in args.presets:
        model = random_model(preset)
        with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as tmp:
            for kind in ("q8_0", "q4_k_m"):
                path = write_gguf(model, tokenizer, Path(tmp) / f"{preset}-{kind}.gguf", kind)
                size = path.stat().st_size
                name = kind.upper()
                backend = LlamaCppBackend(path, threads=args.threads)
                with bare_llama_cpp(path, prompt, args.new, args.threads) as bare:
                    albor = lambda b=backend: time_stream(generate(b, prompt, args.new, eos_id=None), len(prompt))  # noqa: E731
                    record(preset, {f"bare llama.cpp {name}": (size, bare), f"albor llama.cpp {name}": (size, albor)})
                del backend
                gc.collect()
        if "torch" not in args.skip:
            for quant in ("fp32", "int8", "int4"):
                m = random_model(preset)
                if quant != "fp32":
                    quantize_decoder(m, 8 if quant == "int8" else 4)
                nbytes = decode_bytes(m, {"fp32": 4.0, "int8": 1.0, "int4": 0.5 + 8 / 32}[quant])
                decode = lambda m=m: time_stream(generate(m, prompt, args.new, eos_id=None), len(prompt))  # noqa: E731
                record(preset, {f"albor torch {quant}": (nbytes, decode)})
                del m
                gc.collect()
        if "hf" not in args.skip:
            for dyn in (False, True):
                hf = hf_peer(model, dyn)
                nbytes = decode_bytes(model, 1.0 if dyn else 4.0)
                decode = lambda hf=hf: time_stream(hf_tokens(hf, prompt, args.new), len(prompt))  # noqa: E731
                record(preset, {"HF dynamic int8" if dyn else "HF fp32": (nbytes, decode)})
                del hf
                gc.collect()
        if "kernels" not in args.skip:
            for name, k in kernel_sweeps(model, args.repeats).items():
                row = {
                    "preset": preset,
                    "kernel": name,
                    "ms": k["ms"],
                    "GB/s": k["GB/s"],
                    "MB": k["bytes"] / MB,
                    "of read bw": k["GB/s"] / bw["read"],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        del model
        gc.collect()

    print(
        f"\n{meta['cpu']}, {meta['threads']} threads, load average {load[0]:.2f} at the start, {meta['date']}; "
        f"read {bw['read']:.1f} GB/s, copy {bw['copy']:.1f} GB/s\n"
    )
    print("| shape | engine | ms/token | prompt tok/s | MB read per token | GB/s | of read bw |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "engine" in r:
            print(
                f"| {r['preset']} | {r['engine']} | {r['ms/token']:.1f} | {r['prompt tok/s']:.0f} | {r['MB']:.0f} | "
                f"{r['GB/s']:.1f} | {r['of read bw']:.0%} |"
            )
    print("\n| shape | kernel, one pass over the matrices at batch 1 | ms | MB | GB/s | of read bw |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "kernel" in r:
            print(
                f"| {r['preset']} | {r['kernel']} | {r['ms']:.1f} | {r['MB']:.0f} | {r['GB/s']:.1f} "
                f"| {r['of read bw']:.0%} |"
            )
    by = {(r["preset"], r["engine"]): r["ms/token"] for r in rows if "engine" in r}
    print("\n| shape | ratio | value |\n| --- | --- | --- |")
    for preset in args.presets:
        for kind in ("Q8_0", "Q4_K_M"):
            if (preset, f"bare llama.cpp {kind}") in by:
                ratio = by[(preset, f"albor llama.cpp {kind}")] / by[(preset, f"bare llama.cpp {kind}")]
                print(f"| {preset} | albor llama.cpp / bare llama.cpp, {kind} | {ratio:.3f} |")
        for quant, kind in (("int8", "Q8_0"), ("int4", "Q4_K_M")):
            if (preset, f"albor torch {quant}") in by:
                ratio = by[(preset, f"albor torch {quant}")] / by[(preset, f"bare llama.cpp {kind}")]
                print(f"| {preset} | albor torch {quant} / bare llama.cpp {kind} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
