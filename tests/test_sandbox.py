"""Unit and property tests of the sandbox's harness side (albor/eval/sandbox.py)."""

from __future__ import annotations

import os
import signal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from albor.eval import sandbox
from albor.eval.sandbox import Limits


@pytest.mark.parametrize("field", ["cpu_s", "wall_s", "memory_bytes", "file_bytes", "processes", "disk_bytes"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=f"Limits.{field} must be positive"):
        Limits(**{field: 0})


@pytest.mark.parametrize(
    ("returncode", "outcome", "detail"),
    [
        (-signal.SIGXCPU, "timed out", "CPU time"),
        (128 + signal.SIGXCPU, "timed out", "CPU time"),
        (128 + signal.SIGXFSZ, "error", "file size limit"),
        (-signal.SIGSEGV, "error", "killed by SIGSEGV"),
        (0, "error", "exited with code 0 before the end"),
        (3, "error", "exited with code 3"),
    ],
)
def test_unreported_endings_never_pass(returncode: int, outcome: str, detail: str) -> None:
    got = sandbox._classify(returncode, Limits())
    assert got[0] == outcome and detail in got[1]


@given(st.lists(st.tuples(st.sampled_from(["good", "forged"]), st.sampled_from(["started", "passed", "failed"]))))
def test_status_lines_need_the_nonce(lines: list[tuple[str, str]]) -> None:
    nonce = "n" * 32
    r, w = os.pipe()
    try:
        for who, outcome in lines:
            os.write(w, f"{nonce if who == 'good' else 'x' * 32}\t{outcome}\tdetail\n".encode())
        got = sandbox._read_status(r, nonce)
    finally:
        os.close(r)
        os.close(w)
    assert got == [(o, "detail") for who, o in lines if who == "good"]


def test_missing_start_report_raises() -> None:
    with pytest.raises(sandbox.SandboxError, match="before confining"):
        sandbox._result([("passed", "")], 0, False, Limits(), "", "")


def test_unknown_mode_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        sandbox.run("pass", mode="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        sandbox.run_many(["pass"], workers=0)


@settings(max_examples=4)
@given(st.text(max_size=40), st.integers(1, 200))
def test_output_and_exit_codes_round_trip(text: str, code: int) -> None:
    ok, early = sandbox.run_many([f"print({text!r}, end='')", f"raise SystemExit({code})"], workers=2)
    assert ok.passed and ok.stdout == text
    assert early.outcome == "error" and str(code) in early.detail


def test_isolation_is_a_known_mode() -> None:
    assert sandbox.isolation() in ("namespaces", "guard")
