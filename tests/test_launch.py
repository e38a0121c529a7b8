"""Unit and property tests of the falsifiers' launcher: the command it starts for a plain run and for ranks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from falsification import launch


@given(st.integers(1, 64))
def test_ranks_start_under_torchrun_standalone(ranks: int) -> None:
    cmd = launch._launcher(ranks)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and f"--nproc_per_node={ranks}" in cmd


def test_a_plain_run_is_one_interpreter() -> None:
    assert launch._launcher(None) == [sys.executable]


def test_a_plain_run_reports_its_status_and_stderr(tmp_path: Path) -> None:
    code, stderr = launch._run([sys.executable, "-c", "import sys; sys.exit('no: ' + 'words')"], tmp_path, {})
    assert (code, stderr.strip()) == (1, "no: words")


def test_a_plain_run_past_the_limit_fails_saying_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(launch, "HANG_S", 1.0)
    with pytest.raises(AssertionError, match="did not end within 1 s"):
        launch._run([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, {})
