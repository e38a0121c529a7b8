"""One dispatch point per op: the model calls ``albor.ops.<op>``, the config picks the backend.

``reference`` is the pure-PyTorch op in ``albor.ops.<module>``; ``triton`` is the kernel of the
same name in ``albor.kernels.<module>``; ``compile`` is ``torch.compile`` of the reference.

A Triton kernel that fails to import, build, launch or match the reference never runs in silence:
``set_backend`` raises ``KernelUnavailable`` naming the op and the cause, or, where the caller allows
the fallback, runs the reference and records it in ``fallbacks()`` for the run's metadata.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any, Literal, get_args

import torch

from albor.falsify import faults

Backend = Literal["reference", "triton", "compile"]

# op name -> module under albor.ops / albor.kernels that defines a function of that name.
OPS: dict[str, str] = {
    "rmsnorm": "rmsnorm",
    "apply_rope": "rope",
    "swiglu": "swiglu",
    "attention": "attention",
    "cross_entropy": "cross_entropy",
    "linear_cross_entropy": "cross_entropy",
}

_impl: dict[str, Callable[..., Any]] = {}
_backend: dict[str, Backend] = {}
_fallbacks: dict[str, str] = {}


class KernelUnavailable(RuntimeError):
    """A backend other than the reference could not be imported, built, launched or trusted."""


def _load(op: str, backend: Backend) -> Callable[..., Any]:
    package = "albor.kernels" if backend == "triton" else "albor.ops"
    fn = getattr(importlib.import_module(f"{package}.{OPS[op]}"), op)
    return torch.compile(fn, dynamic=False) if backend == "compile" else fn


def _route(op: str, fn: Callable[..., Any], backend: Backend) -> Backend:
    _impl[op], _backend[op] = fn, backend
    return backend


def set_backend(
    op: str, backend: Backend, allow_fallback: bool = False, device: torch.device | str | None = None
) -> Backend:
    """Route ``op`` to ``backend`` and return the backend that now runs it.

    A ``triton`` kernel is first run forward and backward on a small input on ``device`` (CUDA when
    present, else CPU) and compared with the reference. When the backend cannot load or that check
    fails, this raises ``KernelUnavailable`` naming the op and the cause; with ``allow_fallback`` it
    warns, routes the op to the reference, records the cause in ``fallbacks()`` and returns
    ``"reference"``.
    """
    if op not in OPS:
        raise KeyError(f"unknown op {op!r}; ops: {sorted(OPS)}")
    if backend not in get_args(Backend):
        raise ValueError(f"unknown backend {backend!r} for op {op!r}; backends: {list(get_args(Backend))}")
    try:
        fn = _load(op, backend)
        if backend == "triton":
            from albor.kernels import selfcheck

            where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            selfcheck.check(op, fn, _load(op, "reference"), where)
    except Exception as e:  # any failure to import, build, launch or match is the same verdict
        if backend == "reference":
            raise
        cause = f"{type(e).__name__}: {e}"
        silent = faults.active("kernel_fallback_silent")  # ALB-073 re-created
        if not allow_fallback and not silent:
            raise KernelUnavailable(f"op {op!r}: the {backend} backend is unusable: {cause}") from e
        if silent or faults.active("kernel_fallback_unrecorded"):  # ALB-122 re-created
            return _route(op, _load(op, "reference"), backend)
        warnings.warn(f"op {op!r}: the {backend} backend is unusable, running the reference: {cause}", stacklevel=2)
        _fallbacks[op] = f"{backend}: {cause}"
        return _route(op, _load(op, "reference"), "reference")
    _fallbacks.pop(op, None)
    return _route(op, fn, backend)


def backend(op: str) -> Backend:
    """The backend ``op`` runs on now."""
    return _backend[op]


def backends() -> dict[str, Backend]:
    """The backend of every op, for the run's metadata."""
    return dict(_backend)


def fallbacks() -> dict[str, str]:
    """Ops that fell back to the reference since they were last routed, each with the backend and cause."""
    return dict(_fallbacks)


def get(op: str) -> Callable[..., Any]:
    """The function ``op`` runs now."""
    return _impl[op]


for _op in OPS:
    set_backend(_op, "reference")
