"""The whole ladder at tiny scale on the CPU, made with `albor` commands: every rung, its card, the book's table."""

from __future__ import annotations

from pathlib import Path

import pytest

from albor.ladder.model_card import card_path, read_card
from albor.verify.book.generate import ladder_page
from albor.verify.book.layout import Layout
from falsification.ladder_runs import build_ladder

pytest.importorskip("peft", reason="the instruct rung needs peft (pip install 'albor[ladder]')")


@pytest.mark.slow
def test_the_ladder_end_to_end(tmp_path: Path) -> None:
    variants = build_ladder(tmp_path)
    assert {"teacher", "distilled", "student-no-teacher", "instruct", "merged", "pruned"} <= set(variants)
    cards = {name: read_card(card_path(path)) for name, path in variants.items()}
    for name, meta in cards.items():
        assert meta["variant"] == name and meta["val_ppl"] > 1 and meta["size_on_disk_bytes"] > 0, meta
        assert meta["recipe"].startswith("albor "), meta
    assert cards["distilled"]["parent"] == "teacher" and cards["pruned"]["parent"] == "merged"
    assert cards["distilled"]["params"] == cards["student-no-teacher"]["params"] < cards["teacher"]["params"]
    page = ladder_page(Layout(root=tmp_path))
    rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith(("| variant", "| ---"))]
    assert len(rows) == len(variants)
    for name, meta in cards.items():
        row = next(r for r in rows if r.startswith(f"| {name} |"))
        assert f"{meta['val_ppl']:.2f}" in row and f"{meta['val_bits_per_byte']:.3f}" in row, (name, row)
