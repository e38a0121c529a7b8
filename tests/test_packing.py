"""Unit tests of packing, manifests, prepare and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from albor.data import DataConfig, default_data_dir, load_windows, prepare
from albor.data.__main__ import main
from albor.data.packing import MANIFEST, document_order, pack_windows, token_dtype
from albor.data.synthetic import clean_repos, write_repos


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repos(tmp_path_factory.mktemp("src"), clean_repos(n_repos=5, files_per_repo=2))


def test_dtype_by_vocab() -> None:
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_exact_multiple_has_no_tail() -> None:
    windows, tail = pack_windows(np.arange(12, dtype=np.uint16), 3)
    assert windows.shape == (3, 4) and len(tail) == 0


def test_document_order_is_a_seeded_permutation() -> None:
    a = document_order(50, 1)
    assert np.array_equal(a, document_order(50, 1)) and not np.array_equal(a, document_order(50, 2))
    assert sorted(a.tolist()) == list(range(50))


def test_default_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALBOR_CACHE", str(tmp_path))
    cfg = DataConfig(vocab_size=8192, seq_len=256)
    here = default_data_dir(cfg)
    assert here.parent == tmp_path / "data" and here.name.startswith("vocab8192-seq256-seed0-")
    # Any field that shapes the data gets its own folder: one configuration never rebuilds another's.
    assert default_data_dir(cfg.model_copy(update={"fim_rate": 0.0})) != here
    assert default_data_dir(cfg.model_copy(update={"out": tmp_path})) == here
    monkeypatch.delenv("ALBOR_CACHE")
    assert default_data_dir(cfg).is_relative_to(Path.home() / ".cache" / "albor" / "data")


def test_large_vocab_stored_as_uint32(source: Path, tmp_path: Path) -> None:
    out = prepare(source, tmp_path / "big", 70_000, 31, val_fraction=0.2)
    assert load_windows(out, "train").dtype == np.uint32


def test_manifest_problems_named(source: Path, tmp_path: Path) -> None:
    out = prepare(source, tmp_path / "d", 300, 31, val_fraction=0.2)
    with pytest.raises(ValueError, match="no split 'test'"):
        load_windows(out, "test")  # type: ignore[arg-type]
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps(manifest | {"surprise": 1}))
    with pytest.raises(ValueError, match=r"manifest\.json: malformed manifest"):
        load_windows(out, "train")


def test_command_line(source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    common = [f"out={out}", "vocab_size=300", "seq_len=31", "val_fraction=0.2"]
    assert main(["prepare", f"source={source}", *common]) == 0
    printed = capsys.readouterr().out
    assert "near dedup" in printed and "tokens/byte" in printed and (out / MANIFEST).is_file()
    assert main(["pack", *common, f"source={source}"]) == 0
    assert main(["prepare", f"source={source}", *common, "fim_rate=2"]) == 2
    assert "`fim_rate`: 2 is not allowed" in capsys.readouterr().err
    assert main(["prepare", f"source={source}", "vocab_sise=300"]) == 2
    assert "did you mean `vocab_size`?" in capsys.readouterr().err
    assert main(["pack", f"out={tmp_path / 'empty'}", "vocab_size=300"]) == 1
    assert "tokenizer.json" in capsys.readouterr().err


def test_unlicensed_folder_error_names_the_switch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    own = tmp_path / "mine"
    own.mkdir()
    (own / "app.py").write_text("def main():\n    return 42\n" * 20)
    assert main(["corpus", f"source={own}", f"out={tmp_path / 'out'}"]) == 1
    assert "license_policy=any" in capsys.readouterr().err
