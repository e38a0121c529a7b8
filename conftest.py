"""The checkout's pytest settings for ``tests/`` and ``falsification/``: they live with the battery,
which ships with albor, so that an installed battery runs under the same ones."""

import falsification.settings  # noqa: F401  (registers and loads the Hypothesis profiles)
