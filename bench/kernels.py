"""The Triton kernels on a GPU: the kernel battery, each kernel against the float64 reference, and timing.

1. The kernel falsifiers (``pytest -m "not slow"``) with JUnit XML, and the ALB-065 mutant, which only
   a GPU can show.
2. Each kernel against the float64 reference at odd shapes, float32 and bfloat16, forward and every
   gradient (relative error).
3. Forward + backward time (``triton.testing.do_bench``, median) of each kernel at the 350M shape in
   bfloat16, against the eager reference, ``torch.compile`` of the reference and Liger-Kernel; peak
   memory of the fused cross entropy.
4. Each kernel run forward and backward inside ``torch.compile``.

Prints one JSON line per measurement and a table last; writes everything under ``--out``.

    python bench/kernels.py --out DIR [--budget 280]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import triton
from triton.testing import do_bench

from albor.kernels.cross_entropy import linear_cross_entropy as k_lce
from albor.kernels.rmsnorm import rmsnorm as k_rmsnorm
from albor.kernels.rope import apply_rope as k_rope
from albor.kernels.swiglu import swiglu as k_swiglu
from albor.ops.cross_entropy import linear_cross_entropy as r_lce
from albor.ops.rmsnorm import rmsnorm as r_rmsnorm
from albor.ops.rope import apply_rope as r_rope
from albor.ops.rope import rope_tables
from albor.ops.swiglu import swiglu as r_swiglu
from albor.verify.numerics import rel_err

ROOT = Path(__file__).resolve().parents[1]
FALSIFIERS = [
    "falsification/test_rmsnorm.py",
    "falsification/test_rope.py",
    "falsification/test_swiglu.py",
    "falsification/test_cross_entropy.py",
    "falsification/test_dispatch.py",
    "falsification/test_host_copy.py",
]
# The 350M shape: 16 sequences of 1024 tokens.
B, T, D_MODEL, H, HKV, HD, FFN, VOCAB = 16, 1024, 1024, 16, 4, 64, 4096, 32768
EPS = 1e-5
START = time.monotonic()


def emit(record: dict, out: Path) -> None:
    print(json.dumps(record), flush=True)
    with (out / "kernels.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def battery(out: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow"]
    xml = out / "junit-cuda-kernels.xml"
    proc = subprocess.run([*cmd, f"--junitxml={xml}", *FALSIFIERS], cwd=ROOT, capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1:]
    emit({"section": "battery", "exit": proc.returncode, "summary": tail, "command": " ".join(cmd[1:])}, out)
    if proc.returncode:
        print(proc.stdout[-6000:], proc.stderr[-2000:], flush=True)
    # The ALB-065 mutant: with the fault on, the CUDA falsifier must fail.
    node = "falsification/test_host_copy.py::test_read_waits_for_pending_kernels"
    env = {**os.environ, "ALBOR_FAULTS": "read_scalar_no_sync"}
    proc = subprocess.run(
        [*cmd, f"--junitxml={out / 'junit-cuda-mutant-read_scalar_no_sync.xml'}", node],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    tail = proc.stdout.strip().splitlines()[-1:]
    emit({"section": "mutant", "fault": "read_scalar_no_sync", "killed": proc.returncode == 1, "summary": tail}, out)


def _grads(fn: Callable, args: list, diff: tuple[int, ...], weights: list[torch.Tensor]) -> list[torch.Tensor]:
    xs = [a.detach().clone().requires_grad_(i in diff) if i in diff else a for i, a in enumerate(args)]
    out = fn(*xs)
    outs = list(out) if isinstance(out, tuple) else [out]
    torch.autograd.backward(outs, [w.to(o.dtype) for o, w in zip(outs, weights, strict=True)])
    return [o.detach() for o in outs] + [xs[i].grad for i in diff]


# Odd shapes for the accuracy check: rows, width, heads, vocabulary none of them a power of two.
ODD = {"rows": 3 * 1031, "seq": 1031, "width": 1000, "heads": (13, 5), "ffn": 4100, "tokens": 4099, "vocab": 32771}


def accuracy(out: Path, dev: torch.device) -> None:
    g = torch.Generator(device=dev).manual_seed(0)

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g, device=dev, dtype=torch.float64) * scale

    seq, width, (hq, hk) = ODD["seq"], ODD["width"], ODD["heads"]
    cos, sin = rope_tables(torch.arange(5, 5 + seq, device=dev), HD, dtype=torch.float64)
    targets = torch.randint(0, ODD["vocab"], (ODD["tokens"],), generator=g, device=dev)
    targets[::7] = -100
    cases = {
        # op: (kernel, reference, float64 arguments, which of them are differentiated)
        "rmsnorm": (k_rmsnorm, r_rmsnorm, [r(3, seq, width) * 3 + 0.5, 1 + 0.5 * r(width), EPS], (0, 1)),
        "rope": (k_rope, r_rope, [r(3, seq, hq, HD), r(3, seq, hk, HD), cos, sin], (0, 1)),
        "swiglu": (k_swiglu, r_swiglu, [r(ODD["rows"], ODD["ffn"], scale=3), r(ODD["rows"], ODD["ffn"])], (0, 1)),
        "linear_cross_entropy": (
            k_lce,
            r_lce,
            [r(ODD["tokens"], width), r(ODD["vocab"], width, scale=0.05), targets],
            (0, 1),
        ),
    }
    for op, (kernel, reference, args, diff) in cases.items():
        probe = reference(*args)
        outs = list(probe) if isinstance(probe, tuple) else [probe]
        weights = [torch.randn(o.shape, generator=g, device=dev, dtype=torch.float64) for o in outs]
        del probe, outs
        for dtype in (torch.float32, torch.bfloat16):
            cast = [a.to(dtype) if i in diff else a for i, a in enumerate(args)]
            # The reference sees the same rounded inputs, in float64.
            want = _grads(reference, [a.double() if i in diff else a for i, a in enumerate(cast)], diff, weights)
            got = _grads(kernel, cast, diff, weights)
            names = [f"out{i}" for i in range(len(weights))] + [f"grad{i}" for i in diff]
            errs = {n: rel_err(a, b) for n, a, b in zip(names, got, want, strict=True)}
            emit({"section": "accuracy", "op": op, "dtype": str(dtype).removeprefix("torch."), **errs}, out)
            del got, want
            torch.cuda.empty_cache() if dev.type == "cuda" else None


def _liger() -> dict[str, Callable] | None:
    try:
        from liger_kernel.ops.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyFunction
        from liger_kernel.ops.rms_norm import LigerRMSNormFunction
        from liger_kernel.ops.rope import LigerRopeFunction
        from liger_kernel.ops.swiglu import LigerSiLUMulFunction
    except Exception as e:  # report and time the rest
        print(f"liger-kernel unavailable: {type(e).__name__}: {e}", flush=True)
        return None

    def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        # Liger takes (B, H, T, D) and full-width (T, D) tables.
        full_cos, full_sin = torch.cat((cos, cos), -1), torch.cat((sin, sin), -1)
        rq, rk = LigerRopeFunction.apply(q.transpose(1, 2), k.transpose(1, 2), full_cos, full_sin)
        return rq.transpose(1, 2), rk.transpose(1, 2)

    return {
        "rmsnorm": lambda x, w, eps: LigerRMSNormFunction.apply(x, w, eps, 0.0, "llama", False),
        "rope": rope,
        "swiglu": LigerSiLUMulFunction.apply,
        "linear_cross_entropy": lambda h, w, t: LigerFusedLinearCrossEntropyFunction.apply(
            h, w, t, None, None, -100, 0.0, 0.0, "mean"
        )[0],
    }


def _inputs(dev: torch.device) -> dict[str, tuple[list, tuple[int, ...]]]:
    """Leaf tensors at the 350M shape in bfloat16, laid out as the model passes them."""
    g = torch.Generator(device=dev).manual_seed(0)
    bf = torch.bfloat16

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g, device=dev) * scale).to(bf)

    n = B * T
    qkv = r(B, T, (H + 2 * HKV) * HD)
    cos, sin = rope_tables(torch.arange(T, device=dev), HD)
    gate_up = r(n, 2 * FFN)
    return {
        "rmsnorm": ([r(B, T, D_MODEL), torch.ones(D_MODEL, device=dev, dtype=bf), EPS], (0, 1)),
        "rope": ([qkv, cos, sin], (0,)),
        "swiglu": ([gate_up], (0,)),
        "linear_cross_entropy": (
            [r(n, D_MODEL), r(VOCAB, D_MODEL, scale=0.02), torch.randint(0, VOCAB, (n,), generator=g, device=dev)],
            (0, 1),
        ),
    }


def _adapt(op: str, fn: Callable) -> Callable:
    """The op as a function of its leaf inputs (rope and swiglu take slices of one fused projection)."""
    if op == "rope":

        def rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
            q, k, _ = qkv.split([H * HD, HKV * HD, HKV * HD], -1)
            return fn(q.view(B, T, H, HD), k.view(B, T, HKV, HD), cos, sin)

        return rope
    if op == "swiglu":
        return lambda gate_up: fn(*gate_up.chunk(2, -1))
    return fn


def _fwd_bwd(fn: Callable, args: list, diff: tuple[int, ...]) -> Callable[[], None]:
    leaves = [a.requires_grad_(True) if i in diff else a for i, a in enumerate(args)]
    probe = fn(*leaves)
    outs = list(probe) if isinstance(probe, tuple) else [probe]
    grads = [torch.randn_like(o) for o in outs]

    def step() -> None:
        res = fn(*leaves)
        torch.autograd.backward(list(res) if isinstance(res, tuple) else [res], grads)

    return step


def device_ms(step: Callable[[], None], iters: int = 10) -> float | None:
    """GPU time of one step: the kernels' own time from the profiler, without launch gaps."""
    try:
        step()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(iters):
                step()
            torch.cuda.synchronize()
        return sum(e.self_device_time_total for e in prof.key_averages()) / iters / 1000
    except Exception as e:  # the wall-clock median still stands
        print(f"profiler unavailable: {type(e).__name__}: {e}", flush=True)
        return None


def timing(out: Path, dev: torch.device, budget: float) -> list[dict]:
    liger = _liger()
    rows = []
    inputs = _inputs(dev)
    impls = {
        "rmsnorm": (k_rmsnorm, r_rmsnorm),
        "rope": (k_rope, r_rope),
        "swiglu": (k_swiglu, r_swiglu),
        "linear_cross_entropy": (k_lce, r_lce),
    }
    for op, (kernel, reference) in impls.items():
        args, diff = inputs[op]
        contenders = {"triton": kernel, "eager": reference, "compile": torch.compile(reference, dynamic=False)}
        if liger:
            contenders["liger"] = liger[op]
        row = {"section": "timing", "op": op}
        for name, fn in contenders.items():
            if time.monotonic() - START > budget:
                row[name] = None
                continue
            try:
                leaves = [a.detach().clone() if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                          for a in args]  # fmt: skip
                step = _fwd_bwd(_adapt(op, fn), leaves, diff)
                grads = [leaves[i] for i in diff]
                row[name] = do_bench(step, warmup=10, rep=60, grad_to_none=grads, return_mode="median")
                row[f"{name}_device"] = device_ms(step)
                if op == "linear_cross_entropy":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    step()
                    torch.cuda.synchronize()
                    row[f"{name}_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
            except Exception as e:  # one contender failing must not hide the others
                row[name] = None
                row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            torch.cuda.empty_cache()
        emit(row, out)
        rows.append(row)
    return rows


def under_compile(out: Path, dev: torch.device, budget: float) -> None:
    """Each kernel forward and backward inside torch.compile (the trainer may compile the model)."""
    g = torch.Generator(device=dev).manual_seed(0)
    cos, sin = rope_tables(torch.arange(37, device=dev), HD)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device=dev, generator=g)

    cases = {
        "rmsnorm": (lambda x, w: k_rmsnorm(x, w, EPS), [r(5, 37, 96), torch.ones(96, device=dev)]),
        "rope": (lambda q, k: sum(t.sum() for t in k_rope(q, k, cos, sin)), [r(5, 37, 4, HD), r(5, 37, 2, HD)]),
        "swiglu": (k_swiglu, [r(5, 37, 96), r(5, 37, 96)]),
        "linear_cross_entropy": (lambda h, w: k_lce(h, w, torch.arange(37, device=dev) % 50), [r(37, 96), r(50, 96)]),
    }
    for op, (fn, args) in cases.items():
        if time.monotonic() - START > budget:
            emit({"section": "under_compile", "op": op, "ok": None, "error": "out of time"}, out)
            continue
        try:
            leaves = [a.requires_grad_(True) for a in args]
            eager = fn(*leaves)
            eager.sum().backward()
            want = [leaf.grad.clone() for leaf in leaves]
            for leaf in leaves:
                leaf.grad = None
            compiled = torch.compile(fn)(*leaves)
            compiled.sum().backward()
            errs = [rel_err(leaf.grad, w) for leaf, w in zip(leaves, want, strict=True)]
            emit(
                {"section": "under_compile", "op": op, "ok": True, "out": rel_err(compiled, eager), "grads": errs}, out
            )
        except Exception as e:
            emit(
                {"section": "under_compile", "op": op, "ok": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}, out
            )


def floors() -> dict[str, dict[str, float]]:
    """Bytes that must move and flops that must run, fwd + bwd in bfloat16 at the 350M shape."""
    n, e = B * T, 2
    nd, nq, nk, nf = n * D_MODEL, n * H * HD, n * HKV * HD, n * FFN
    return {
        "rmsnorm": {"bytes": e * nd * 5, "flops": 0},  # fwd: x in, y out; bwd: x, dy in, dx out
        "rope": {"bytes": e * (nq + nk) * 4, "flops": 0},  # q, k in and out, both passes
        "swiglu": {"bytes": e * nf * 8, "flops": 0},  # fwd: 2 in 1 out; bwd: 3 in 2 out
        "linear_cross_entropy": {
            "bytes": e * (nd * 2 + VOCAB * D_MODEL * 2),  # h, W in; dh, dW out
            "flops": 3 * 2 * n * D_MODEL * VOCAB,  # logits, dh, dW
        },
    }


def table(rows: list[dict]) -> str:
    """Wall-clock medians (do_bench) with the GPU's own kernel time in brackets, in µs."""
    fl = floors()
    names = ["triton", "eager", "compile", "liger"]
    lines = [
        "| op | floor | " + " | ".join(names) + " | triton vs compile | triton vs liger |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: |",
    ]

    def cell(row: dict, name: str) -> str:
        wall, gpu = row.get(name), row.get(f"{name}_device")
        if wall is None:
            return "—"
        return f"{wall * 1000:.0f}" + ("" if gpu is None else f" ({gpu * 1000:.0f})")

    def ratio(row: dict, other: str) -> str:
        a, b = row.get("triton"), row.get(other)
        return "—" if a is None or b is None else f"{b / a:.2f}×"

    for row in rows:
        f = fl[row["op"]]
        floor = max(f["bytes"] / 3.0e12, f["flops"] / 800e12) * 1e6  # µs
        cells = " | ".join(cell(row, n) for n in names)
        lines.append(f"| {row['op']} | {floor:.0f} | {cells} | {ratio(row, 'compile')} | {ratio(row, 'liger')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget", type=float, default=280.0, help="seconds after which timing stops")
    ap.add_argument("--skip-battery", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    emit(
        {
            "section": "env",
            "card": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "triton": triton.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
        args.out,
    )
    if not args.skip_battery:
        battery(args.out)
    accuracy(args.out, dev)
    rows = timing(args.out, dev, args.budget)
    emit({"section": "floors", **floors()}, args.out)
    text = table(rows)
    (args.out / "kernels-table.md").write_text(text + "\n")
    print(text, flush=True)
    under_compile(args.out, dev, args.budget + 30)


if __name__ == "__main__":
    main()
