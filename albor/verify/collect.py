"""Collect test node ids and their claim markers with pytest, without running anything."""

from __future__ import annotations

import contextlib
import io
import os

import pytest

from albor.verify.contracts import ROOT

TEST_DIRS = ("falsification", "tests")


class _Collector:
    def __init__(self) -> None:
        self.claims: dict[str, list[str]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            self.claims[item.nodeid] = [m.args[0] for m in item.iter_markers("claim")]


def collect(dirs: tuple[str, ...] = TEST_DIRS) -> dict[str, list[str]]:
    """Claim ids per collected node id under ``dirs`` (relative to the repository root)."""
    collector = _Collector()
    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out):
            rc = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *dirs], plugins=[collector])
    finally:
        os.chdir(cwd)
    if rc not in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        raise RuntimeError(f"pytest could not collect {dirs} (exit {int(rc)}):\n{out.getvalue()[-3000:]}")
    return collector.claims
