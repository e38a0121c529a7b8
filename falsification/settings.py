"""Settings shared by ``tests/`` and the battery, wherever it runs (a checkout, or an installed albor).

Hypothesis profiles: ``ci`` (the default) is derandomized with bounded examples; ``deep`` searches
harder (HYPOTHESIS_PROFILE=deep). Torch runs one intra-op thread, and without a GPU the Triton
kernels run (and are tested) through Triton's interpreter on CPU tensors.
"""

import os

import torch
from hypothesis import HealthCheck, settings

MARKERS = (
    "cuda: needs a CUDA GPU",
    "slow: longer than a few seconds; left out of the fast tier",
    "claim(id): the contract obligation this falsifier tries to break",
    "triton: runs a Triton kernel, so it needs the triton package (pip install 'albor[gpu]')",
)
TRITON_MISSING = "triton is not installed (pip install 'albor[gpu]'), so this albor cannot run the kernels"

# The tests use small tensors, for which one intra-op thread is fastest and steadiest on 2 cores.
torch.set_num_threads(1)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

settings.register_profile(
    "ci", derandomize=True, max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("deep", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
