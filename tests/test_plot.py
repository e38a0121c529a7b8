"""`albor plot RUN_DIR`: the training-log PNGs beside a run, and the metrics reader they share with the book."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from albor.plot import main, read_metrics

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(run: Path, mfu: bool) -> Path:
    run.mkdir(parents=True)
    recs = [{"kind": "train", "step": s, "loss": 5 - s / 10, "lr": 1e-3 * s, "grad_norm": 1.0 + s, "tokens": 64 * s,
             "tok_s": 100.0 + s, **({"mfu": 0.3} if mfu else {})} for s in range(1, 11)]  # fmt: skip
    recs.append({"kind": "eval", "step": 10, "val_loss": 4.0, "val_ppl": 54.6})
    # The last line is a write in progress (a run killed mid-append): it is left out, not an error.
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"kind": "tra')
    return run


@pytest.mark.parametrize("mfu", [False, True], ids=["cpu-run", "gpu-run"])
def test_plot_writes_one_png_per_panel_and_the_whole_log(tmp_path: Path, mfu: bool, capsys) -> None:
    run = _metrics(tmp_path / "runs" / "demo", mfu)
    assert main([str(run)], prog="albor plot") == 0
    panels = ["loss", "val_ppl", "lr", "grad_norm", "tok_s", *(["mfu"] if mfu else [])]
    expected = [run / "plots" / f"{name}.png" for name in ["training-log", *panels]]
    assert capsys.readouterr().out.split() == [str(p) for p in expected]
    for png in expected:
        assert png.read_bytes().startswith(PNG) and png.stat().st_size > 2000, png
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(p.name for p in expected)


def test_plot_of_a_folder_without_metrics_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)], prog="albor plot") == 2
    assert "metrics.jsonl: no metrics to plot" in capsys.readouterr().err


def test_read_metrics_skips_a_partial_last_line_and_names_bad_lines(tmp_path: Path) -> None:
    train, evals = read_metrics(_metrics(tmp_path / "run", False) / "metrics.jsonl")
    assert (len(train), len(evals), train[-1]["step"]) == (10, 1, 10)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "train", "step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_metrics(bad)
