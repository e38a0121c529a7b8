"""The Triton kernels at the 350M shape with micro-batch 32 (32,768 tokens), where the trainer step failed.

Each case runs in its own process (an illegal memory access poisons the CUDA context), with
``CUDA_LAUNCH_BLOCKING=1`` so that a fault names the launch that made it:

- ``<op>-eager``: the kernel forward and backward on random bfloat16 data, against the float32 reference;
- ``<op>-compiled``: the op in the model's own context (fused projection, views) inside ``torch.compile``
  under bf16 autocast, against the same function on the reference op;
- ``decoder-L<n>-<mode>``: the decoder with every kernel on, micro-batch 32, loss and backward, against the
  reference ops.

Prints one JSON line per case and a table last.

    python bench/kernels_large.py [--budget 220] [--cases NAME ...]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time

import torch

B, T, D, H, HKV, HD, FFN, V = 32, 1024, 1024, 16, 4, 64, 4096, 32768
MODULES = ("cross_entropy", "rmsnorm", "rope", "swiglu")
CASES = [
    "rmsnorm-eager", "rope-eager", "swiglu-eager", "lce-eager", "lce-eager-64k",
    "rmsnorm-compiled", "rope-compiled", "swiglu-compiled", "lce-compiled",
    "decoder-L2-eager", "decoder-L2-compiled", "decoder-L24-compiled",
]  # fmt: skip


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _op_fn(op: str, backend: str):
    """A function of one input tensor that uses ``op`` as the model does, and its inputs (leaves)."""
    kce, krms, krope, kswi = (importlib.import_module(f"albor.kernels.{m}") for m in MODULES)
    rce, rrms, rrope, rswi = (importlib.import_module(f"albor.ops.{m}") for m in MODULES)

    tri = backend == "triton"
    g = torch.Generator(device="cuda").manual_seed(0)

    def r(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (scale * torch.randn(*shape, generator=g, device="cuda")).requires_grad_()

    if op == "rmsnorm":
        f = krms.rmsnorm if tri else rrms.rmsnorm
        return (lambda x, w: f(x, w, 1e-5)), [r(B, T, D), (1 + r(D, scale=0.1)).detach().requires_grad_()]
    if op == "rope":
        f = krope.apply_rope if tri else rrope.apply_rope
        cos, sin = rrope.rope_tables(torch.arange(T, device="cuda"), HD)

        def rope(x: torch.Tensor, w: torch.Tensor):
            q, k, _ = (x @ w.t()).split([H * HD, HKV * HD, HKV * HD], -1)
            return f(q.view(B, T, H, HD), k.view(B, T, HKV, HD), cos, sin)

        return rope, [r(B, T, D), r((H + 2 * HKV) * HD, D, scale=0.03)]
    if op == "swiglu":
        f = kswi.swiglu if tri else rswi.swiglu

        def swi(x: torch.Tensor, w: torch.Tensor):
            return f(*(x @ w.t()).chunk(2, dim=-1))

        return swi, [r(B, T, D), r(2 * FFN, D, scale=0.03)]
    if op.startswith("lce"):
        f = kce.linear_cross_entropy if tri else rce.linear_cross_entropy
        n = B * T * (2 if op == "lce-64k" else 1)
        targets = torch.randint(0, V, (n,), generator=g, device="cuda")
        targets[::7] = -100
        return (lambda h, w: f(h, w, targets, reduction="sum")), [r(n, D), r(V, D, scale=0.03)]
    raise KeyError(op)


def _fwd_bwd(fn, args: list[torch.Tensor], compiled: bool) -> list[torch.Tensor]:
    fn = torch.compile(fn) if compiled else fn
    for a in args:
        a.grad = None
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=compiled):
        out = fn(*args)
    outs = list(out) if isinstance(out, tuple) else [out]
    g = torch.Generator(device="cuda").manual_seed(1)
    sum((o.float() * torch.randn(o.shape, generator=g, device="cuda")).sum() for o in outs).backward()
    torch.cuda.synchronize()
    return [o.detach().float() for o in outs] + [a.grad.float() for a in args]


def op_case(name: str) -> dict:
    compiled = name.endswith("compiled")
    op = "lce-64k" if name.endswith("64k") else name.split("-")[0]
    fn, args = _op_fn(op, "triton")
    if not compiled:  # eager: bfloat16 kernel against the float32 reference on the same data
        args = [a.detach().bfloat16().requires_grad_() for a in args]
    got = _fwd_bwd(fn, args, compiled)
    rfn, rargs = _op_fn(op, "reference")
    want = _fwd_bwd(rfn, rargs, compiled)
    errs = [_rel(a, b) for a, b in zip(got, want, strict=True)]
    return {"max_rel_err": max(errs), "rel_errs": [f"{e:.1e}" for e in errs]}


def decoder_case(name: str) -> dict:
    from albor.config import load_model_config
    from albor.model import Decoder
    from albor.ops.dispatch import Kernels

    _, layers, mode = name.split("-")
    cfg = load_model_config("350m").model_copy(update={"n_layers": int(layers[1:])})
    idx = torch.randint(0, V, (B, T + 1), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
    x, y = idx[:, :-1], idx[:, 1:]
    out = {}
    for backend in ("triton", "reference"):
        ops = ("rmsnorm", "apply_rope", "swiglu", "linear_cross_entropy")
        torch.manual_seed(0)  # the same weights for both backends
        model = Decoder(cfg, Kernels(dict.fromkeys(ops, backend), device="cuda")).to("cuda")
        torch._dynamo.reset()
        m = torch.compile(model) if mode == "compiled" else model
        model.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(x, y, reduction="sum") / y.numel()
        loss.backward()
        torch.cuda.synchronize()
        gn = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
        out[backend] = {"loss": float(loss), "grad_norm": float(gn), "s": round(time.perf_counter() - t0, 1)}
    out["loss_rel_err"] = abs(out["triton"]["loss"] / out["reference"]["loss"] - 1)
    out["grad_norm_rel_err"] = abs(out["triton"]["grad_norm"] / out["reference"]["grad_norm"] - 1)
    return out


def run_one(name: str) -> None:
    t0 = time.perf_counter()
    res = decoder_case(name) if name.startswith("decoder") else op_case(name)
    print("RESULT " + json.dumps({"case": name, "ok": True, **res, "s": round(time.perf_counter() - t0, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=220.0, help="seconds for all cases")
    ap.add_argument("--cases", nargs="+", default=CASES)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.one)
        return
    start, rows = time.monotonic(), []
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
    for name in args.cases:
        left = args.budget - (time.monotonic() - start)
        if left < 15:
            rows.append({"case": name, "ok": None, "why": "out of time"})
            continue
        try:
            p = subprocess.run(
                [sys.executable, __file__, "--one", name], env=env, capture_output=True, text=True, timeout=left
            )
            lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
            row = json.loads(lines[-1][7:]) if lines else {"case": name, "ok": False, "exit": p.returncode}
            if not lines:
                row["tail"] = (p.stderr or p.stdout)[-1500:]
        except subprocess.TimeoutExpired:
            row = {"case": name, "ok": None, "why": "timed out"}
        print(json.dumps(row), flush=True)
        rows.append(row)
    print(f"\n{torch.cuda.get_device_name()}  torch {torch.__version__}")
    for r in rows:
        detail = r.get("max_rel_err", r.get("loss_rel_err", r.get("why", r.get("exit"))))
        print(f"{r['case']:<22} {r['ok']!s:<6} {detail}")


if __name__ == "__main__":
    main()
