"""Training throughput at the 350M shape: Albor's trainer step against the plain-PyTorch peer.

Both run in this one process on the same GPU, compiled, bf16, fused AdamW, at each micro-batch.
Albor's side is the real ``Trainer.train_step`` (schedule, token-weighted accumulation, global
clipping, loss and grad-norm read back every step) on the real prepared corpus. Prints one JSON
line per measurement and a table of ratios last.

    python bench/throughput.py --micro-bs 16 32 [--kernels reference mixed triton] [--budget 0.8 0.6]
                               [--steps 30] [field=value ...]

``--kernels``: ``reference`` (every op compiled from its reference), ``triton`` (every Triton kernel),
``mixed`` (the Triton linear + cross-entropy kernel, the other ops compiled). ``--budget B...`` adds a
stack with the first kernels choice and ``activation_memory_budget=B`` for each B. ``--lift BAN...`` adds
a stack with the first kernels choice at budget 1.0 and AOTAutograd's recomputation ban
``ban_recompute_<BAN>`` lifted, for each BAN (a budget below 1 lifts all three at once). ``--recompute
SET...`` adds a stack with the first kernels choice at budget 1.0 and ``recompute`` set to each SET, a
comma-separated list of ``albor.recompute`` names (``swiglu``, ``rmsnorm,swiglu``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import sys
import time
from pathlib import Path

import torch
from torch._functorch import config as functorch_config

sys.path.insert(0, str(Path(__file__).parent))
import peer_plain_pytorch as peer

from albor.train.config import TrainConfig, load_config
from albor.train.trainer import Trainer

KERNEL_OPS = ("rmsnorm", "apply_rope", "swiglu", "linear_cross_entropy")


def peer_compiler_defaults() -> None:
    """Undo the compiler-global knob a trainer sets, so that the peer compiles with the default."""
    functorch_config.activation_memory_budget = 1.0


def albor_config(
    overrides: list[str], micro_bs: int, max_steps: int, kernels: str, budget: float, recompute: tuple[str, ...] = ()
) -> TrainConfig:
    """The pretrain-350m config of one bench stack: ``kernels`` is reference, mixed or triton."""
    ops = {"reference": (), "mixed": ("linear_cross_entropy",), "triton": KERNEL_OPS}[kernels]
    return load_config(
        "pretrain-350m",
        [
            *overrides,
            f"micro_batch={micro_bs}",
            "grad_accum=1",
            f"optim.max_steps={max_steps}",
            "optim.warmup_steps=1",
            "compile=true",
            f"activation_memory_budget={budget}",
            f"recompute=[{', '.join(recompute)}]",
            "kernels={" + ", ".join(f"{op}: triton" for op in ops) + "}",
            "name=bench",
            "runs_dir=/tmp/albor-bench-runs",
        ],
    )


def run_peer(micro_bs: int, steps: int) -> dict:
    peer_compiler_defaults()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        peer.run(True, micro_bs, steps=steps)
    torch.cuda.reset_peak_memory_stats()
    return json.loads(out.getvalue().strip().splitlines()[-1])


BANS = ("used_far_apart", "long_fusible_chains", "materialized_backward")


def lifted(ban: str | None) -> contextlib.AbstractContextManager:
    """AOTAutograd's recomputation ban ``ban`` off while the step compiles; nothing lifted for None."""
    return functorch_config.patch(f"ban_recompute_{ban}", False) if ban else contextlib.nullcontext()


def run_albor(
    overrides: list[str],
    micro_bs: int,
    steps: int,
    warmup: int,
    kernels: str,
    budget: float,
    ban: str | None = None,
    recompute: tuple[str, ...] = (),
) -> dict:
    cfg = albor_config(overrides, micro_bs, steps + warmup + 1, kernels, budget, recompute)
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg)
    trainer.model.train()
    with lifted(ban):  # the step compiles at its first call
        for _ in range(warmup):
            trainer.train_step()
    torch.cuda.synchronize()
    static = torch.cuda.memory_allocated()  # between steps: weights, optimizer state, nothing of a step
    t0 = time.perf_counter()
    losses = [trainer.train_step().loss for _ in range(steps)]
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    tok_s = trainer.tokens_per_step * steps / dt
    result = {
        "stack": stack_name(kernels, budget, ban, recompute),
        "micro_bs": micro_bs,
        "params": cfg.model.n_params(),
        "tok_s": round(tok_s),
        "mfu": round(trainer.mfu(tok_s)[0], 4),
        "mfu_with_head": round(trainer.mfu(tok_s)[1], 4),
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "static_gb": round(static / 2**30, 2),
        "last_loss": round(losses[-1], 4),
    }
    # Compiled per block, a trainer only dropped kept its blocks' weights on the GPU into the next stack.
    trainer.close()
    del trainer
    gc.collect()
    torch.cuda.empty_cache()
    return result


def stack_name(kernels: str, budget: float, ban: str | None, recompute: tuple[str, ...]) -> str:
    return (
        f"albor-{kernels}"
        + (f"-budget{budget}" if budget < 1 else "")
        + (f"-lift-{ban}" if ban else "")
        + (f"-recompute-{'+'.join(recompute)}" if recompute else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="pretrain-350m config overrides, e.g. data.out=DIR")
    ap.add_argument("--micro-bs", type=int, nargs="+", default=[16, 32])
    ap.add_argument(
        "--kernels", nargs="+", default=["reference", "mixed", "triton"], choices=["reference", "mixed", "triton"]
    )
    ap.add_argument(
        "--budget", type=float, nargs="+", default=[], help="also run the first kernels choice at each of these budgets"
    )
    ap.add_argument(
        "--lift", nargs="+", default=[], choices=BANS, help="also run the first kernels choice with each ban lifted"
    )
    ap.add_argument(
        "--recompute",
        nargs="+",
        default=[],
        help="also run the first kernels choice with each of these recompute sets (comma-separated names)",
    )
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=8)
    ap.add_argument("--out", type=Path, help="also write the JSON lines here")
    args = ap.parse_args()
    rows = []
    for mb in args.micro_bs:
        p = run_peer(mb, args.steps)
        print(json.dumps(p), flush=True)
        rows.append(p)
        first = args.kernels[0]
        stacks = [(k, 1.0, None, ()) for k in args.kernels] + [(first, b, None, ()) for b in args.budget]
        stacks += [(first, 1.0, ban, ()) for ban in args.lift]
        stacks += [(first, 1.0, None, tuple(r.split(","))) for r in args.recompute]
        for k, budget, ban, recompute in stacks:
            try:
                a = run_albor(args.overrides, mb, args.steps, args.warmup, k, budget, ban, recompute)
            except Exception as e:  # a failed variant is a result to report, not a reason to lose the others
                a = {"stack": stack_name(k, budget, ban, recompute), "micro_bs": mb, "error": repr(e)[:400]}
            print(json.dumps(a), flush=True)
            rows.append(a)
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}")
    print(f"{'stack':<28} {'mb':>3} {'tok/s':>9} {'MFU':>6} {'peak GiB':>9} {'× peer tok/s':>13} {'× peer mem':>11}")
    for mb in args.micro_bs:
        base = next(r for r in rows if r.get("micro_bs") == mb and r.get("stack", "").startswith("plain"))
        for r in (r for r in rows if r.get("micro_bs") == mb):
            if "error" in r:
                print(f"{r['stack']:<28} {mb:>3}  error: {r['error'][:80]}")
                continue
            print(
                f"{r['stack']:<28} {mb:>3} {r['tok_s']:>9,} {r['mfu']:>6.1%} {r['peak_mem_gb']:>9.2f} "
                f"{r['tok_s'] / base['tok_s']:>13.3f} {r['peak_mem_gb'] / base['peak_mem_gb']:>11.3f}"
            )


if __name__ == "__main__":
    main()
