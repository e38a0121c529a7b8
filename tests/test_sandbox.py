"""Unit and property tests of the sandbox (albor/eval/sandbox.py and the child's pure parts)."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from albor.eval import sandbox, sandbox_child
from albor.eval.sandbox import Limits, SandboxError

CFG = {"cpu_s": 1, "file_bytes": 1024}


def _mode() -> str:
    return "namespaces" if sandbox.namespaces_available() else "guard"


@pytest.mark.parametrize("field", ["cpu_s", "wall_s", "memory_bytes", "file_bytes", "processes", "disk_bytes"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=f"Limits.{field} must be positive"):
        Limits(**{field: 0})


def _killed(sig: int) -> int:
    return sig  # a wait status whose low 7 bits are the signal: killed by it


def _exited(code: int) -> int:
    return code << 8


@pytest.mark.parametrize(
    ("status", "cpu_s", "outcome", "detail"),
    [
        (_killed(signal.SIGXCPU), 1.0, "timed out", "CPU time over 1 s"),
        (_killed(signal.SIGKILL), 1.9, "timed out", "CPU time over 1 s"),  # it ignored SIGXCPU
        (_killed(signal.SIGKILL), 0.2, "error", "killed by SIGKILL before the end"),
        (_killed(signal.SIGXFSZ), 0.0, "error", "file size limit (1024 bytes)"),
        (_killed(signal.SIGSEGV), 0.0, "error", "killed by SIGSEGV"),
        (_killed(signal.SIGRTMIN + 3), 0.0, "error", f"killed by signal {signal.SIGRTMIN + 3}"),
        (_exited(0), 0.0, "error", "exited with code 0 before the end"),
        (_exited(3), 0.0, "error", "exited with code 3"),
    ],
)
def test_a_program_that_ends_unasked_never_passes(status: int, cpu_s: float, outcome: str, detail: str) -> None:
    got = sandbox_child.fate(status, cpu_s, CFG)
    assert got[0] == outcome and detail in got[1], got


_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.complex_numbers(allow_nan=False)
    | st.text()
    | st.binary()
)
_hashable = st.recursive(
    _scalars, lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3), max_leaves=4
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(_hashable, inner, max_size=3)
        | st.sets(_hashable, max_size=3)
        | st.frozensets(_hashable, max_size=3)
    ),
    max_leaves=12,
)


def _same(a: object, b: object) -> bool:
    """Equal, of the very same types all the way down, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return _same(list(a), list(b)) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b) and all(any(_same(x, y) for y in b) for x in a)
    return a == b


@settings(max_examples=200)
@given(_values)
def test_values_cross_as_themselves(value: object) -> None:
    wire = json.loads(json.dumps(sandbox_child.encode(value)))
    assert _same(sandbox_child.decode(wire), value)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(list("fcbdltsFx")), inner, max_size=2),
    max_leaves=10,
)
_BUILTIN = (type(None), bool, int, float, complex, str, bytes, list, tuple, dict, set, frozenset)


def _only_builtin(value: object) -> bool:
    if type(value) not in _BUILTIN:
        return False
    if isinstance(value, dict):
        return all(_only_builtin(k) and _only_builtin(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return all(map(_only_builtin, value))
    return True


@settings(max_examples=300)
@given(_json)
def test_decode_builds_nothing_but_builtin_data(data: object) -> None:
    try:
        value = sandbox_child.decode(data)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError):
        return
    assert _only_builtin(value), value


@pytest.mark.parametrize(
    ("lines", "error"),
    [
        ([], "reported 0 outcomes"),
        ([("passed", ""), ("failed", "AssertionError: ")], "reported 2 outcomes"),
        ([("setup", "unshare: Operation not permitted")], "mode='guard'"),
        ([("maybe", "")], "unknown outcome"),
    ],
)
def test_anything_but_one_outcome_is_a_broken_sandbox(lines: list[tuple[str, str]], error: str) -> None:
    with pytest.raises(SandboxError, match=error):
        sandbox._result(lines, True, 0, "namespaces", Limits(), "", "")


def test_one_outcome_is_the_result() -> None:
    r = sandbox._result([("failed", "AssertionError: x")], True, 0, "guard", Limits(), "out", "err")
    assert (r.outcome, r.detail, r.mode, r.stdout, r.stderr, r.passed) == (
        "failed",
        "AssertionError: x",
        "guard",
        "out",
        "err",
        False,
    )
    with pytest.raises(SandboxError, match="did not end within"):
        sandbox._result([], False, -9, "guard", Limits(), "", "")


def test_status_lines_split_at_the_first_tab() -> None:
    r, w = os.pipe()
    try:
        os.write(w, b"failed\tAssertionError: a\tb\nerror\t\n")
        got = sandbox._read_status(r)
    finally:
        os.close(r)
        os.close(w)
    assert got == [("failed", "AssertionError: a\tb"), ("error", "")]


def test_unknown_mode_and_bad_batches_refused() -> None:
    with pytest.raises(ValueError, match="mode"):
        sandbox.run("pass", mode="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        sandbox.run_many(["pass"], workers=0)
    with pytest.raises(ValueError, match="one check per program"):
        sandbox.run_many(["pass", "pass"], checks=["pass"])


@settings(max_examples=4, deadline=None)
@given(st.text(max_size=40), st.integers(1, 200))
def test_output_and_exit_codes_round_trip(text: str, code: int) -> None:
    ok, early = sandbox.run_many([f"print({text!r}, end='')", f"raise SystemExit({code})"], workers=2, mode=_mode())
    assert ok.passed and ok.stdout == text
    assert early.outcome == "error" and str(code) in early.detail


def test_a_check_calls_the_program_and_sees_its_exceptions() -> None:
    program = "def twice(x):\n    return x * 2\n\ndef boom():\n    raise KeyError('k')\n"
    checks = [
        "assert remote('twice')(21) == 42 and remote('twice')((1,)) == (1, 1)\n",
        "try:\n    remote('boom')()\nexcept KeyError as e:\n    assert e.args == (\"'k'\",)\n"
        "else:\n    raise AssertionError\n",
        "remote('missing')()\n",
    ]
    ok, caught, missing = sandbox.run_many([program] * 3, workers=3, mode=_mode(), checks=checks)
    assert ok.passed and caught.passed, (ok, caught)
    assert missing.outcome == "error" and "NameError" in missing.detail, missing


def _cgroups() -> list[Path]:
    """Where the sandbox makes its memory cgroups: the v2 root, or the v1 memory hierarchy's own cgroup."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    own = [line.split(":", 2)[2] for line in lines if ":memory:" in line]
    places = [Path("/sys/fs/cgroup")] + [Path(f"/sys/fs/cgroup/memory{o.rstrip('/')}") for o in own]
    return sorted(c for place in places if place.is_dir() for c in place.glob("albor-sandbox-*"))


def test_no_cgroup_outlives_its_run() -> None:
    if not sandbox.namespaces_available():
        pytest.skip("this machine cannot create the sandbox's namespaces")
    before = _cgroups()
    sandbox.run_many(["pass", "raise SystemExit(1)", "while True:\n    pass\n"], Limits(cpu_s=1, wall_s=3.0), workers=3)
    assert _cgroups() == before


def test_namespaces_available_says_yes_or_no() -> None:
    assert sandbox.namespaces_available() in (True, False)
