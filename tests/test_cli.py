"""The front door: the `albor` command, config errors a user can act on, and a preflight that says why."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import torch
import yaml

from albor import cli
from albor.train import preflight
from albor.train.__main__ import main as train_main
from albor.train.config import build_config, load_config
from albor.verify.layout import CHECKOUT


def _albor(*args: str, cwd: Path | None = None, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "albor.cli", *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "data", "eval", "complete", "plot", "check", "mutants", "report", "book"):
        assert f"\n  {name} " in out
    assert cli.main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_train_help_lists_presets_and_where_fields_are(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        train_main(["--help"], prog="albor train")
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: albor train")
    for preset in ("default", "finetune", "pretrain-125m", "pretrain-350m"):
        assert f"\n  {preset} " in out
    assert "--print-config" in out and "tiny" in out


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=1e-3", "`optim.lrr`: no such field; did you mean `optim.lr`?"),
        ("lr=1e-3", "`lr`: no such field; did you mean `optim.lr`?"),
        ("micro_bach=4", "`micro_batch`"),
        ("model.n_layerz=2", "did you mean `model.n_layers`?"),
    ],
)
def test_unknown_field_gets_the_closest_names(override: str, expected: str, capsys: pytest.CaptureFixture) -> None:
    assert train_main([override], prog="albor train") == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lr=-1", "`optim.lr`: -1 is not allowed: Input should be greater than 0"),
        ("device=gpu", "`device`: 'gpu' is not allowed: Input should be 'auto', 'cpu' or 'cuda'"),
        ("micro_batch=many", "`micro_batch`: 'many' is not allowed"),
        ("model=huge", "`model`: no models preset 'huge'; available:"),
    ],
)
def test_bad_value_names_field_value_and_what_is_allowed(override: str, expected: str, capsys) -> None:
    assert train_main([override], prog="albor train") == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "pydantic.dev" not in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_on_a_cpu_machine_is_refused_before_the_preflight(tmp_path: Path) -> None:
    proc = _albor("train", "device=cuda", f"runs_dir={tmp_path}")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "albor train: `device`: cuda was asked for but no CUDA GPU is visible; use device=auto or device=cpu"
    )
    assert not (tmp_path / "default" / "preflight.json").exists()


def test_print_config_is_the_resolved_config_with_comments(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--config", "pretrain-350m", "optim.lr=2e-4", "model.n_layers=3"]
    assert train_main(["--print-config", *args], prog="albor train") == 0
    printed = capsys.readouterr().out
    assert "lr: 0.0002  # peak learning rate" in printed
    expected = load_config("pretrain-350m", ["optim.lr=2e-4", "model.n_layers=3"])
    assert build_config(yaml.safe_load(printed), []) == expected


def test_data_takes_the_same_override_grammar(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["data", "prepare", "--print-config", "vocab_size=4096", "license_policy=any"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["vocab_size"] == 4096 and printed["license_policy"] == "any"
    assert cli.main(["data", "prepare", "vocab_sise=4096"]) == 2
    assert "did you mean `vocab_size`?" in capsys.readouterr().err


def test_missing_pytest_is_named_with_the_fix(tmp_path: Path) -> None:
    # sys.modules[name] = None is how an import of a missing module looks to importlib.util.find_spec.
    script = (
        "import sys; sys.modules['pytest'] = None\n"
        "from albor.train.__main__ import main\n"
        f"sys.exit(main(['runs_dir={tmp_path}'], prog='albor train'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "module 'pytest' cannot be imported" in proc.stderr and "pip install albor" in proc.stderr
    assert "junit" not in proc.stderr.lower()
    record = json.loads((tmp_path / "default" / "preflight.json").read_text())
    assert record["status"] == "cannot-run" and record["junit"] is None


def test_a_battery_that_cannot_run_shows_its_command_and_output(tmp_path: Path, monkeypatch) -> None:
    broken = [sys.executable, "-c", "import sys; print('collection blew up', file=sys.stderr); sys.exit(4)"]
    monkeypatch.setattr(preflight, "battery_command", lambda xml, fast=True: broken)
    with pytest.raises(preflight.PreflightFailed) as e:
        preflight.run_preflight(tmp_path, enabled=True)
    message = str(e.value)
    assert "pytest exit 4" in message and "collection blew up" in message and " -c " in message
    assert "junit-" not in message  # the XML was never written, so it is not pointed at


@pytest.mark.slow
def test_the_wheel_installed_elsewhere_runs_its_preflight(tmp_path: Path) -> None:
    """A built wheel, installed into a fresh venv outside the checkout, runs the battery it ships."""
    # Built from a copy, since setuptools writes its build/ folder into the source tree.
    source = tmp_path / "source"
    junk = shutil.ignore_patterns(".git", ".venv", "runs", "build", "_build", "generated", "*.egg-info", "__pycache__")
    shutil.copytree(CHECKOUT, source, symlinks=True, ignore=junk)
    wheels = tmp_path / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source)]
    subprocess.run([*build, "-w", str(wheels)], check=True, capture_output=True)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([python, "-c", purelib], text=True).strip())
    # The venv sees this environment's third-party packages (torch, pytest, …) but not its albor.
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    wheel = next(wheels.glob("albor-*.whl"))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(pip, check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = (
        "import albor, falsification, json\n"
        "from pathlib import Path\n"
        "from albor.train.preflight import run_preflight\n"
        "print(json.dumps([albor.__file__, falsification.__file__, run_preflight(Path('run'), True)]))\n"
    )
    proc = subprocess.run([python, "-c", script], cwd=work, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    albor_file, battery_file, record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(albor_file).is_relative_to(site) and Path(battery_file).is_relative_to(site)
    assert record["status"] == "passed" and Path(record["junit"]).is_file()
