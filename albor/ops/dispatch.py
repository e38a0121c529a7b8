"""Which implementation runs each op, chosen per model: a ``Kernels`` table that the decoder calls.

``reference`` is the pure-PyTorch op in ``albor.ops.<module>``; ``triton`` is the kernel of the
same name in ``albor.kernels.<module>``; ``compile`` is ``torch.compile`` of the reference. Two
models in one process can run different backends.

A Triton kernel that fails to import, build, launch or match the reference never runs in silence:
choosing it raises ``KernelUnavailable`` naming the op and the cause, or, where the caller allows
the fallback, runs the reference and records the cause in ``Kernels.fallbacks`` for the run's
metadata. Before a kernel is used it runs forward and backward once on a small odd input on the
run's device and must match the float64 reference there.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import torch

from albor.ops.cross_entropy import IGNORE_INDEX, Reduction
from albor.ops.rope import rope_tables

Backend = Literal["reference", "triton", "compile"]

# op name -> module under albor.ops / albor.kernels that defines a function of that name.
OPS: dict[str, str] = {
    "rmsnorm": "rmsnorm",
    "apply_rope": "rope",
    "swiglu": "swiglu",
    "attention": "attention",
    "linear_cross_entropy": "cross_entropy",
}
CHECK_TOLERANCE = 1e-4  # a float32 kernel against the float64 reference, relative

Case = tuple[list[Any], tuple[int, ...]]  # an op's arguments, and which of them get gradients


class KernelUnavailable(RuntimeError):
    """A backend other than the reference could not be imported, built, launched or trusted."""


def load(op: str, backend: Backend) -> Callable[..., Any]:
    """The function ``backend`` provides for ``op`` (imported, or compiled, on first use)."""
    package = "albor.kernels" if backend == "triton" else "albor.ops"
    fn = getattr(importlib.import_module(f"{package}.{OPS[op]}"), op)
    return torch.compile(fn, dynamic=False) if backend == "compile" else fn


class Kernels:
    """The function each op of one model runs, the backend behind it, and the fallbacks taken.

    ``backends`` names a backend per op (unnamed ops run the reference). A ``triton`` kernel is
    first checked on ``device`` (CUDA when present, else the CPU).
    """

    def __init__(
        self,
        backends: Mapping[str, Backend] | None = None,
        allow_fallback: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        unknown = sorted(set(backends or {}) - set(OPS))
        if unknown:
            raise KeyError(f"unknown op(s) {unknown}; ops: {sorted(OPS)}")
        self.backends: dict[str, Backend] = {}
        self.fallbacks: dict[str, str] = {}
        self._fns: dict[str, Callable[..., Any]] = {}
        where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        for op in OPS:
            self._choose(op, (backends or {}).get(op, "reference"), allow_fallback, where)

    def _choose(self, op: str, backend: Backend, allow_fallback: bool, device: torch.device) -> None:
        if backend not in get_args(Backend):
            raise ValueError(f"unknown backend {backend!r} for op {op!r}; backends: {list(get_args(Backend))}")
        try:
            fn = load(op, backend)
            if backend == "triton":
                check(op, fn, load(op, "reference"), device)
        except Exception as e:  # any failure to import, build, launch or match is the same verdict
            if backend == "reference":
                raise
            cause = f"{type(e).__name__}: {e}"
            if not allow_fallback:
                raise KernelUnavailable(f"op {op!r}: the {backend} backend is unusable: {cause}") from e
            warnings.warn(f"op {op!r}: the {backend} backend is unusable, running the reference: {cause}", stacklevel=3)
            self.fallbacks[op] = f"{backend}: {cause}"
            fn, backend = load(op, "reference"), "reference"
        self._fns[op], self.backends[op] = fn, backend

    def get(self, op: str) -> Callable[..., Any]:
        """The function ``op`` runs."""
        return self._fns[op]

    def rmsnorm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        """See ``albor.ops.rmsnorm``."""
        return self._fns["rmsnorm"](x, weight, eps)

    def apply_rope(
        self, q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See ``albor.ops.rope``."""
        return self._fns["apply_rope"](q, k, cos, sin)

    def swiglu(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        """See ``albor.ops.swiglu``."""
        return self._fns["swiglu"](gate, up)

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """See ``albor.ops.attention``."""
        return self._fns["attention"](q, k, v)

    def linear_cross_entropy(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int = IGNORE_INDEX,
        reduction: Reduction = "mean",
    ) -> torch.Tensor:
        """See ``albor.ops.cross_entropy``."""
        return self._fns["linear_cross_entropy"](hidden, weight, targets, ignore_index, reduction)


# --- the launch check --------------------------------------------------------------------------


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


def _relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    # The runtime's own measure (the battery keeps an independent one): NaN or Inf never passes.
    out64, ref64 = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out64).all():
        return float("inf")
    denom = ref64.norm().item()
    return (out64 - ref64).norm().item() / denom if denom > 0 else (out64 - ref64).norm().item()


def check(op: str, kernel: Callable[..., Any], reference: Callable[..., Any], device: torch.device) -> None:
    """Raise ``RuntimeError`` unless ``kernel`` matches ``reference`` on ``device``, forward and backward."""
    case = _case(op)
    got = _run(kernel, case, device, torch.float32)
    want = _run(reference, case, device, torch.float64)
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        what = f"output {i}" if i < len(got) - len(case[1]) else f"gradient of argument {case[1][i - len(got)]}"
        err = float("inf") if a is None else _relative_error(a, b)
        if not err <= CHECK_TOLERANCE:
            raise RuntimeError(f"{op} kernel {what} differs from the reference on {device}: rel err {err:.2e}")
