"""Generation speed at batch 1 with random weights: KV-cache decoding against a full recompute.

Each preset is timed through the real path, ``albor.generate.generate`` (prefill the prompt once,
then one cached single-position forward per token, greedy). The peer, in the same process on the
same device, is decoding without a cache: a full forward over the whole sequence for every token.
Prints one JSON line per measurement and a Markdown table last.

    python bench/generate_speed.py --presets tiny 350m --device cpu
    python bench/generate_speed.py --presets tiny 350m --device cuda --dtype float32 bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from albor.config import load_model_config
from albor.generate import generate
from albor.model import Decoder

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_cached(model: Decoder, prompt: list[int], new_tokens: int, device: torch.device) -> tuple[float, float]:
    """(prefill + first token in ms, ms per later token) for one greedy generation."""
    sync(device)
    t0 = time.perf_counter()
    tokens = generate(model, prompt, new_tokens, eos_id=None)
    next(tokens)
    t1 = time.perf_counter()
    rest = sum(1 for _ in tokens)
    sync(device)
    t2 = time.perf_counter()
    return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / rest


@torch.no_grad()
def time_recompute(model: Decoder, prompt: list[int], new_tokens: int, device: torch.device) -> float:
    """ms per token when every token costs a full forward over the sequence so far (no cache)."""
    ids = torch.tensor([prompt], device=device)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        nxt = model(ids)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    sync(device)
    return (time.perf_counter() - t0) * 1e3 / new_tokens


def measure(preset: str, dtype: str, args: argparse.Namespace) -> dict:
    device = torch.device(args.device)
    cfg = load_model_config(preset)
    torch.manual_seed(0)
    model = Decoder(cfg).to(device, DTYPES[dtype]).eval()
    prompt = torch.randint(7, cfg.vocab_size, (args.prompt_tokens,)).tolist()
    list(generate(model, prompt, 4, eos_id=None))  # warm-up
    runs = [time_cached(model, prompt, args.new_tokens, device) for _ in range(args.repeats)]
    prefill_ms = statistics.median(r[0] for r in runs)
    ms = statistics.median(r[1] for r in runs)
    row = {
        "preset": preset,
        "params": cfg.n_params(),
        "device": device_name(device),
        "dtype": dtype,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "prefill_ms": round(prefill_ms, 2),
        "decode_ms_per_token": round(ms, 2),
        "tokens_per_s": round(1e3 / ms, 1),
    }
    if args.recompute_tokens:
        peer = time_recompute(model, prompt, args.recompute_tokens, device)
        row["recompute_ms_per_token"] = round(peer, 2)
        row["cache_speedup"] = round(peer / ms, 2)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", nargs="+", default=["tiny", "350m"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", nargs="+", default=["float32"], choices=sorted(DTYPES))
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--recompute-tokens", type=int, default=16, help="tokens timed for the no-cache peer; 0 skips it")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    rows = []
    for preset in args.presets:
        for dtype in args.dtype:
            rows.append(measure(preset, dtype, args))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| preset | device | dtype | prefill ms | ms/token | tokens/s | no-cache ms/token | cache speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['preset']} | {r['device']} | {r['dtype']} | {r['prefill_ms']} | {r['decode_ms_per_token']} "
            f"| {r['tokens_per_s']} | {r.get('recompute_ms_per_token', '-')} | {r.get('cache_speedup', '-')} |"
        )


if __name__ == "__main__":
    main()
