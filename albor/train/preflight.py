"""Preflight: run the battery's fast tier on the trainer's own device before step 0.

The battery is the ``falsification`` package, shipped with albor, so an installed albor can run it
from any folder. It runs in a pytest subprocess (the trainer never imports the verification layer)
and its JUnit XML names what broke. The result is kept as ``runs/<name>/preflight.json``. A failure
stops the run and names the failed claims; a battery that cannot run says why (the missing module,
or the command and the end of its output); turning preflight off is allowed, loudly, and recorded.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from albor.hardware import card_name, device_kind
from albor.io import write_json_atomic

SKIP_WARNING = "preflight was turned off: this run was NOT checked by the falsification battery on its device"
BATTERY = "falsification"
NEEDS = ("pytest", "hypothesis", BATTERY)


# torchrun's description of the job. The battery's trainers read it, so a battery that inherited it from a
# rank would have them join the job's own process group (ALB-285).
LAUNCHER_VARS = frozenset(
    (
        *("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE"),
        *("ROLE_RANK", "ROLE_WORLD_SIZE", "ROLE_NAME", "MASTER_ADDR", "MASTER_PORT"),
    )
)


class PreflightFailed(RuntimeError):
    """The battery found a broken claim on this device, or could not run; training must not start."""


def battery_dir() -> Path:
    """Where the ``falsification`` package is installed (or checked out)."""
    spec = importlib.util.find_spec(BATTERY)
    assert spec is not None and spec.submodule_search_locations, "checked by missing_modules()"
    return Path(next(iter(spec.submodule_search_locations)))


def missing_modules() -> list[str]:
    """The modules the battery needs that this interpreter cannot import."""
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def battery_command(xml: Path, fast: bool = True) -> list[str]:
    """The pytest command that runs the installed battery (its fast tier unless ``fast`` is False)."""
    where = battery_dir()
    cmd = [sys.executable, "-m", "pytest", str(where), "-q", "-p", "no:cacheprovider", f"--rootdir={where.parent}"]
    # junit_family xunit1 keeps the claim properties in the XML (xunit2 drops record_property).
    cmd += ["-o", "junit_family=xunit1"]
    return [*cmd, f"--junitxml={xml}", *(["-m", "not slow"] if fast else [])]


def battery_env() -> dict[str, str]:
    """This process's environment without the launcher's description of a distributed job."""
    return {k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS and not k.startswith("TORCHELASTIC_")}


def _node_id(classname: str, name: str) -> str:
    # pytest writes "falsification.test_rope" (or "falsification.test_rope.TestX") as the classname.
    module, *classes = classname.split(".")[1:] or [classname]
    return "::".join([f"{BATTERY}/{module}.py", *classes, name])


def failed_claims(xml: Path) -> tuple[list[str], list[str]]:
    """Failed node ids and the claims they carry, from a battery run's JUnit XML."""
    nodes, claims = [], set()
    for case in ET.parse(xml).getroot().iter("testcase"):
        if any(child.tag in ("failure", "error") for child in case):
            nodes.append(_node_id(case.get("classname", ""), case.get("name", "")))
            claims.update(p.get("value", "") for p in case.iter("property") if p.get("name") == "claim")
    return sorted(nodes), sorted(claims)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run_preflight(run_dir: Path, enabled: bool) -> dict[str, Any]:
    """Run (or record the skipping of) the preflight; raises PreflightFailed on any failure."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"device": device_kind(), "card": card_name()}
    if not enabled:
        warnings.warn(SKIP_WARNING, stacklevel=2)
        print(f"\n!!! WARNING: {SKIP_WARNING} !!!\n", flush=True)
        record |= {"status": "skipped", "failed_claims": [], "failed_tests": [], "junit": None, "warning": SKIP_WARNING}
        write_json_atomic(run_dir / "preflight.json", record)
        return record
    missing = missing_modules()
    if missing:
        reason = (
            f"the battery cannot run: {', '.join(f'module {m!r}' for m in missing)} cannot be imported by "
            f"{sys.executable}; install albor with its dependencies (`pip install albor`, which brings pytest "
            "and hypothesis and ships the battery)"
        )
        _cannot_run(run_dir, record, reason)
    xml = (run_dir / "preflight" / f"junit-{record['device']}.xml").resolve()
    xml.parent.mkdir(parents=True, exist_ok=True)
    xml.unlink(missing_ok=True)
    cmd = battery_command(xml)
    print(f"preflight: the battery's fast tier on {record['device']} ({record['card']}) ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=run_dir, env=battery_env(), capture_output=True, text=True, check=False)
    if not xml.is_file() or proc.returncode not in (0, 1):
        reason = (
            f"the battery did not run to the end (pytest exit {proc.returncode}); command: {' '.join(cmd)}\n"
            f"its output ends:\n{_tail(proc.stdout + proc.stderr)}"
        )
        _cannot_run(run_dir, record, reason)
    nodes, claims = failed_claims(xml)
    record |= {
        "status": "failed" if nodes else "passed",
        "failed_claims": claims,
        "failed_tests": nodes,
        "junit": str(xml),
        "seconds": round(time.perf_counter() - t0, 1),
        "warning": None,
    }
    write_json_atomic(run_dir / "preflight.json", record)
    if nodes:
        raise PreflightFailed(
            f"preflight failed on {record['device']} ({record['card']}): claims {claims or '?'} broken by "
            f"{nodes}; see {xml}. Fix them, or pass --preflight off to train anyway (recorded)."
        )
    print(f"preflight: {_tail(proc.stdout, 1)}", flush=True)
    return record


def _cannot_run(run_dir: Path, record: dict[str, Any], reason: str) -> None:
    record |= {"status": "cannot-run", "failed_claims": [], "failed_tests": [], "junit": None, "reason": reason}
    write_json_atomic(run_dir / "preflight.json", record)
    raise PreflightFailed(f"preflight on {record['device']} ({record['card']}): {reason}")
