"""Deterministic crash points for kill-and-resume tests.

``ALBOR_CRASH_AT=<point>:<step>`` makes the process SIGKILL itself when it reaches ``point`` at
``step``: ``step`` right after that optimizer step, ``checkpoint`` in the middle of writing that
step's checkpoint (after the weights, before the rename), ``link`` after the rename and before
``latest`` points at it. Unset, a crash point is one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV_VAR = "ALBOR_CRASH_AT"
POINTS = ("step", "checkpoint", "link")


def _parse(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    point, _, step = value.partition(":")
    if point not in POINTS or not step.isdigit():
        raise ValueError(f"{ENV_VAR}={value!r}: expected one of {', '.join(f'{p}:<n>' for p in POINTS)}")
    return point, int(step)


_target = _parse(os.environ.get(ENV_VAR, ""))


def crash_point(point: str, step: int) -> None:
    """Kill this process with SIGKILL if the crash target is (point, step)."""
    if _target == (point, step):
        os.kill(os.getpid(), signal.SIGKILL)
