"""Hypothesis profiles shared by ``tests/`` and ``falsification/``.

``ci`` (the default) is derandomized with bounded examples; ``deep`` searches harder. Pick one with
HYPOTHESIS_PROFILE=deep.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("deep", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
