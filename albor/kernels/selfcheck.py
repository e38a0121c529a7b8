"""The launch check a Triton kernel passes before the dispatch point routes an op to it.

The kernel runs forward and backward once on a small odd input on the run's device and must match
the float64 reference op there. A kernel that fails to build, fails to launch, or returns wrong
numbers raises, and the dispatch point then stops the run or records the fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from albor.ops.rope import rope_tables
from albor.testing import rel_err

TOLERANCE = 1e-4  # float32 kernel against the float64 reference

Case = tuple[list[Any], tuple[int, ...]]  # the op's arguments, and which of them get gradients


def _case(op: str) -> Case:
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    if op == "rmsnorm":
        return [r(3, 5, 37), 1 + 0.5 * r(37), 1e-5], (0, 1)
    if op == "apply_rope":
        cos, sin = rope_tables(torch.arange(7, 10), 10, dtype=torch.float64)
        return [r(2, 3, 4, 10), r(2, 3, 2, 10), cos, sin], (0, 1)
    if op == "swiglu":
        return [3 * r(3, 5, 45), r(3, 5, 45)], (0, 1)
    if op == "linear_cross_entropy":
        targets = torch.randint(0, 97, (37,), generator=g)
        targets[::6] = -100
        return [r(37, 7), r(97, 7), targets], (0, 1)
    raise KeyError(f"no kernel check for op {op!r}")


def _run(fn: Callable[..., Any], case: Case, device: torch.device, dtype: torch.dtype) -> list[torch.Tensor]:
    args, diff = case
    xs = [
        a.to(device, dtype).requires_grad_(i in diff) if isinstance(a, torch.Tensor) and a.is_floating_point()
        else a.to(device) if isinstance(a, torch.Tensor) else a
        for i, a in enumerate(args)
    ]  # fmt: skip
    out = fn(*xs)
    outs = list(out) if isinstance(out, tuple) else [out]
    g = torch.Generator().manual_seed(1)
    weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(device) for o in outs]
    sum((o.double() * w).sum() for o, w in zip(outs, weights, strict=True)).backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # a faulting launch surfaces here, inside the check
    return [o.detach() for o in outs] + [xs[i].grad for i in diff]


def check(op: str, kernel: Callable[..., Any], reference: Callable[..., Any], device: torch.device) -> None:
    """Raise ``RuntimeError`` unless ``kernel`` matches ``reference`` on ``device``, forward and backward."""
    case = _case(op)
    got = _run(kernel, case, device, torch.float32)
    want = _run(reference, case, device, torch.float64)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        what = f"output {i}" if i < len(got) - len(case[1]) else f"gradient of argument {case[1][i - len(got)]}"
        err = float("inf") if a is None else rel_err(a, b)
        if not err <= TOLERANCE:
            raise RuntimeError(f"{op} kernel {what} differs from the reference on {device}: rel err {err:.2e}")
