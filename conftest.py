"""Settings shared by ``tests/`` and ``falsification/``: Hypothesis profiles and torch threads.

``ci`` (the default) is derandomized with bounded examples; ``deep`` searches harder. Pick one with
HYPOTHESIS_PROFILE=deep.
"""

import os

import torch
from hypothesis import HealthCheck, settings

# The tests use small tensors, for which one intra-op thread is fastest and steadiest on 2 cores.
torch.set_num_threads(1)
# Without a GPU, Triton kernels run (and are tested) through Triton's interpreter on CPU tensors.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

settings.register_profile(
    "ci", derandomize=True, max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("deep", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
