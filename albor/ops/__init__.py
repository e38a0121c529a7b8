"""The model's ops in pure PyTorch: the references every kernel is checked against.

A model runs each op through its own ``albor.ops.dispatch.Kernels``, which may route it to a Triton
kernel or a compiled reference; the functions here are always the references.
"""

from albor.ops.attention import attention
from albor.ops.cross_entropy import IGNORE_INDEX, Reduction, cross_entropy, linear_cross_entropy
from albor.ops.rmsnorm import rmsnorm
from albor.ops.rope import apply_rope, rope_tables
from albor.ops.swiglu import swiglu

__all__ = [
    "IGNORE_INDEX",
    "Reduction",
    "apply_rope",
    "attention",
    "cross_entropy",
    "linear_cross_entropy",
    "rmsnorm",
    "rope_tables",
    "swiglu",
]
