"""Where a training step's GPU time goes, at the 350M shape: Albor's trainer step and the peer's.

For each variant: time ``--steps`` steps after ``--warmup``, then profile 3 steps and sum the GPU
kernel time by kind (matmul, attention, compiler-generated fusions, Albor's Triton kernels,
optimizer, other). The busy fraction is the union of kernel intervals over the profiled wall span:
under 1 means the GPU waited on the host. Writes one JSON line per variant and each variant's top
kernels under ``--out``; prints a table last.

    python bench/profile_step.py --out DIR [--variants peer albor-reference ...] [field=value ...]

Variants are ``peer`` or ``albor-KERNELS[-FLAG...][:MB]``. ``peer`` is the plain-PyTorch peer's model
and step, as in peer_plain_pytorch.run (``peer-fp8``: with torchao's tensorwise float8 linears).
KERNELS is ``reference``, ``triton`` (every Triton kernel) or ``mixed`` (the Triton linear +
cross-entropy kernel only). Flags: ``random`` (uniform random tokens instead of the corpus: isolates
data-dependent kernels such as the embedding backward), ``fp8`` (torchao float8 linears),
``cudagraphs`` (compiled with mode="reduce-overhead"), ``flash`` (SDPA's FlashAttention backend
instead of its default), ``budget`` (AOTAutograd's activation memory budget at 0.5). ``:MB`` sets the
micro-batch (default ``--micro-bs``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.autograd import DeviceType
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).parent))
import peer_plain_pytorch as peer
from throughput import albor_config, peer_compiler_defaults

from albor.hardware import card_name, peak_tflops
from albor.train.trainer import Trainer

KINDS = (
    ("attention", ("flash", "fmha", "sdpa", "cudnn")),
    ("matmul", ("gemm", "nvjet", "cutlass", "xmma", "sm90", "scaled_mm")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("inductor", ("triton_",)),
)


def kind_of(name: str) -> str:
    """The kind of a GPU kernel, by its name; Albor's Triton kernels are the ones named ``_<name>``."""
    low = name.lower()
    if name.startswith("_") and name.endswith("_kernel"):
        return "albor-triton"
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def profile(step: Callable[[], None], n: int = 3) -> dict:
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            step()
        torch.cuda.synchronize()
    by_name: dict[str, float] = defaultdict(float)
    spans = []
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            by_name[e.name] += e.time_range.elapsed_us()
            spans.append((e.time_range.start, e.time_range.end))
    spans.sort()
    busy, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    if cur_e is not None:
        busy += cur_e - cur_s
    wall = spans[-1][1] - spans[0][0] if spans else 0.0
    by_kind: dict[str, float] = defaultdict(float)
    for name, us in by_name.items():
        by_kind[kind_of(name)] += us
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:40]
    return {
        "ms_per_step_gpu": round(sum(by_name.values()) / n / 1e3, 2),
        "busy": round(busy / wall, 3) if wall else None,
        "by_kind_ms": {k: round(v / n / 1e3, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "top": [(name[:120], round(us / n / 1e3, 3), kind_of(name)) for name, us in top],
    }


DYNAMO_COUNTERS = ("stats", "graph_break", "recompiles")


def host_profile(step: Callable[[], None], n: int = 3) -> list[tuple[str, float, int]]:
    """The host functions that took longest over ``n`` steps: (function, own seconds per step, calls per step)."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    prof.disable()
    stats = pstats.Stats(prof).stats
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:25]
    return [(f"{Path(f).name}:{line}:{fn}", round(tt / n, 5), nc // n) for (f, line, fn), (_, nc, tt, _, _) in rows]


def timed(step: Callable[[], None], steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def peer_step(micro_bs: int, fp8: bool) -> tuple[Callable[[], None], int, float]:
    """The peer's model and step exactly as ``peer_plain_pytorch.run`` builds them."""
    peer_compiler_defaults()
    torch.manual_seed(0)
    m = peer.GPT().cuda()
    if fp8:
        from torchao.float8 import convert_to_float8_training

        convert_to_float8_training(m, module_filter_fn=lambda mod, fqn: fqn != "head")
    n_all = sum(p.numel() for p in m.parameters())
    fpt = 6 * (n_all - m.emb.weight.numel()) + 12 * 24 * 1024 * 1024
    opt = torch.optim.AdamW(m.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    f = torch.compile(m)
    x = torch.randint(0, 32768, (micro_bs, 1025), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = f(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, micro_bs * 1024, fpt


def albor_step(overrides: list[str], micro_bs: int, variant: str) -> tuple[Callable[[], None], int, float]:
    kernels = variant.split("-")[1]
    flags = set(variant.split("-")[2:])
    trainer = Trainer(albor_config(overrides, micro_bs, 100, kernels, 0.5 if "budget" in flags else 1.0))
    if "random" in flags:
        rng = np.random.default_rng(0)
        trainer.train_windows = rng.integers(0, 32768, trainer.train_windows.shape, dtype=np.int64).astype(np.uint16)
    if "fp8" in flags:
        from torchao.float8 import convert_to_float8_training

        convert_to_float8_training(trainer.model, module_filter_fn=lambda mod, fqn: fqn != "head")
    if "cudagraphs" in flags:
        trainer.train_model = torch.compile(trainer.model, mode="reduce-overhead")
    trainer.model.train()
    step = trainer.train_step
    if "flash" in flags:

        def step() -> None:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                trainer.train_step()

    return step, trainer.tokens_per_step, trainer.flops_per_token


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="pretrain-350m config overrides, e.g. data.out=DIR")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--micro-bs", type=int, default=16)
    ap.add_argument("--variants", nargs="+", default=["peer", "albor-reference", "albor-triton"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=6)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for v in args.variants:
        t0 = time.perf_counter()
        name, _, mb = v.partition(":")
        mb = int(mb or args.micro_bs)
        try:
            if name.startswith("peer"):
                step, tokens, fpt = peer_step(mb, fp8=name.endswith("fp8"))
            else:
                step, tokens, fpt = albor_step(args.overrides, mb, name)
            torch.cuda.reset_peak_memory_stats()
            dt = timed(step, args.steps, args.warmup)
            prof = profile(step)
            prof["host_top"] = host_profile(step)
            prof["dynamo"] = {k: dict(v) for k, v in torch._dynamo.utils.counters.items() if k in DYNAMO_COUNTERS}
            row = {
                "variant": v,
                "micro_bs": mb,
                "tok_s": round(tokens / dt),
                "mfu": round(tokens / dt * fpt / (peak_tflops(card_name()) * 1e12), 4),
                "ms_per_step": round(dt * 1e3, 2),
                "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                "build_and_run_s": round(time.perf_counter() - t0, 1),
                **prof,
            }
        except Exception as e:  # a failed variant is a result; the others still run
            traceback.print_exc()
            row = {"variant": v, "error": repr(e)[:600]}
        (args.out / f"profile-{name}-{mb}.json").write_text(json.dumps(row, indent=1))
        print(json.dumps({k: x for k, x in row.items() if k not in ("top", "host_top")}), flush=True)
        for fn, own_s, calls in row.get("host_top", [])[:8]:
            print(f"    host {own_s * 1e3:8.2f} ms/step {calls:6} calls  {fn}")
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        rows.append(row)
        step = None
        torch.cuda.empty_cache()
    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}")
    kinds = ["matmul", "attention", "inductor", "albor-triton", "optimizer", "other"]
    head = f"{'variant':<24} {'mb':>3} {'tok/s':>8} {'ms/step':>8} {'GPU ms':>7} {'busy':>5} {'GiB':>6} "
    print(head + " ".join(f"{k:>12}" for k in kinds))
    for r in rows:
        if "error" in r:
            print(f"{r['variant']:<24} error: {r['error'][:150]}")
            continue
        print(
            f"{r['variant']:<24} {r['micro_bs']:>3} {r['tok_s']:>8,} {r['ms_per_step']:>8} {r['ms_per_step_gpu']:>7} "
            f"{r['busy']:>5} {r['peak_mem_gb']:>6} " + " ".join(f"{r['by_kind_ms'].get(k, 0):>12}" for k in kinds)
        )


if __name__ == "__main__":
    main()
