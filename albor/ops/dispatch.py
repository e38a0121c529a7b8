"""One dispatch point per op: the model calls ``albor.ops.<op>``, the config picks the backend.

``reference`` is the pure-PyTorch op in ``albor.ops.<module>``; ``triton`` is the kernel of the
same name in ``albor.kernels.<module>``; ``compile`` is ``torch.compile`` of the reference.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

import torch

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


def _load(op: str, backend: Backend) -> Callable[..., Any]:
    package = "albor.kernels" if backend == "triton" else "albor.ops"
    fn = getattr(importlib.import_module(f"{package}.{OPS[op]}"), op)
    return torch.compile(fn, dynamic=False) if backend == "compile" else fn


def set_backend(op: str, backend: Backend) -> None:
    """Route ``op`` to ``backend``; raises if the op is unknown or the backend cannot load."""
    if op not in OPS:
        raise KeyError(f"unknown op {op!r}; ops: {sorted(OPS)}")
    _impl[op] = _load(op, backend)
    _backend[op] = backend


def backend(op: str) -> Backend:
    """The backend ``op`` runs on now."""
    return _backend[op]


def get(op: str) -> Callable[..., Any]:
    """The function ``op`` runs now."""
    return _impl[op]


for _op in OPS:
    set_backend(_op, "reference")
