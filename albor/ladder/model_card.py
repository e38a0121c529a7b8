"""``MODEL_CARD.md`` for every variant of the ladder, in Hugging Face's card format, and the ladder table.

A card is YAML metadata between ``---`` lines (``license``, ``library_name``, ``tags``, ``base_model``,
a ``model-index`` with the val perplexity, and an ``albor`` block with every measured field), then a
Markdown body that says the same for a reader. ``albor card`` measures a variant and writes its card:
a checkpoint or run dir (val_ppl on a data folder's val split, CPU ms/token of a greedy decode in
float32) or a GGUF file (the same through llama.cpp). The ladder table is made from cards only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from albor.backend import llama_cpp_module
from albor.checkpoint import CheckpointError, load_for_inference, resolve
from albor.data.corpus import corpus_dir
from albor.data.packing import check_same_tokenizer, load_manifest, load_windows
from albor.eval.perplexity import evaluate_perplexity
from albor.export.compare import window_perplexity
from albor.generate import generate
from albor.io import write_text_atomic

CARD = "MODEL_CARD.md"
DECODE_TOKENS = 32
COLUMNS = (
    ("variant", "variant"),
    ("parent", "parent"),
    ("params", "params"),
    ("tokens_seen", "tokens seen"),
    ("val_ppl", "val ppl"),
    ("val_bits_per_byte", "val bits/byte"),
    ("humaneval_pass_at_1", "HumanEval pass@1"),
    ("size_on_disk_bytes", "size on disk"),
    ("cpu_ms_per_token", "CPU ms/token"),
    ("battery", "battery"),
    ("recipe", "recipe"),
)


def data_facts(data_dir: Path) -> dict[str, Any]:
    """The data a variant was measured on: folder, licences kept, train tokens, and val tokens per byte."""
    manifest = load_manifest(data_dir)
    meta = json.loads((corpus_dir(data_dir) / "corpus.json").read_text())
    licenses = {k: v["files"] for k, v in meta["report"]["licenses"].items() if v["kept"]}
    val = manifest.splits["val"]
    return {
        "folder": str(data_dir),
        "source": meta["report"]["source"],
        "licenses": licenses,
        "train_tokens": manifest.splits["train"].tokens,
        "val_tokens_per_byte": val.tokens / max(val.source_bytes, 1),
    }


def bits_per_byte(loss_nats: float, tokens_per_byte: float) -> float:
    """Nats per token to bits per source byte."""
    return loss_nats * tokens_per_byte / math.log(2)


def _battery(run: Path) -> dict[str, Any] | None:
    pre = run / "preflight.json"
    if not pre.is_file():
        return None
    p = json.loads(pre.read_text())
    return {"device": p.get("device"), "card": p.get("card"), "status": p.get("status")}


def _humaneval(run: Path) -> float | None:
    files = sorted((run / "eval").glob("humaneval-*.jsonl")) if (run / "eval").is_dir() else []
    if not files:
        return None
    passed = [json.loads(line).get("passed") for line in files[-1].read_text().splitlines() if line.strip()]
    return sum(map(bool, passed)) / len(passed) if passed else None


def _ms_per_token(step: Any, first: int, n: int) -> float:
    """Milliseconds per token of ``n`` greedy steps; ``step(token) -> next token``."""
    token = first
    t0 = time.perf_counter()
    for _ in range(n):
        token = step(token)
    return (time.perf_counter() - t0) * 1000 / n


def measure_checkpoint(path: Path, data_dir: Path | None) -> dict[str, Any]:
    """Params, tokens seen, val loss, size and CPU speed of a checkpoint (or a run's latest that verifies)."""
    inf = load_for_inference(path)
    data_dir = data_dir or inf.data_dir
    if data_dir is None:
        raise CheckpointError(f"{inf.path}: names no data folder; pass --data")
    check_same_tokenizer(data_dir, inf.path / "tokenizer.json")
    windows = load_windows(data_dir, "val")
    res = evaluate_perplexity(inf.model, windows, 16, "cpu")
    state = json.loads((inf.path / "state.json").read_text())
    ids = [int(windows[0][0])]
    list(generate(inf.model, ids, 2, temperature=0.0, seed=0, eos_id=None))  # warm-up
    n = min(DECODE_TOKENS, inf.model_config.max_seq_len - 2)
    t0 = time.perf_counter()
    list(generate(inf.model, ids, n, temperature=0.0, seed=0, eos_id=None))
    ms = (time.perf_counter() - t0) * 1000 / n
    return {
        "params": sum(p.numel() for p in inf.model.parameters()),
        "tokens_seen": state.get("tokens_seen"),
        "val_loss": res.loss,
        "size_on_disk_bytes": (inf.path / "model.safetensors").stat().st_size,
        "cpu_ms_per_token": ms,
        "data_dir": data_dir,
    }


def measure_gguf(path: Path, data_dir: Path) -> dict[str, Any]:
    """Val loss, size and CPU speed of a GGUF file through llama.cpp, on ``data_dir``'s val split."""
    llama_cpp = llama_cpp_module()
    windows = load_windows(data_dir, "val")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=0, n_threads=2, logits_all=True, verbose=False)

    def logits_of(ids: list[int]) -> torch.Tensor:
        llm.reset()
        llm.eval(ids)
        return torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32))

    res = window_perplexity(logits_of, windows)

    def step(token: int) -> int:
        llm.eval([token])
        return int(np.argmax(llm.scores[llm.n_tokens - 1]))

    llm.reset()
    return {
        "params": None,
        "tokens_seen": None,
        "val_loss": res.loss,
        "size_on_disk_bytes": path.stat().st_size,
        # The context the model was trained for holds the first token and the decoded ones.
        "cpu_ms_per_token": _ms_per_token(step, int(windows[0][0]), min(DECODE_TOKENS, windows.shape[1] - 2)),
        "data_dir": data_dir,
    }


def build_card(variant: Path, name: str, parent: str | None, recipe: str, data_dir: Path | None) -> dict[str, Any]:
    """The card's ``albor`` metadata of the variant at ``variant`` (a run dir, checkpoint or GGUF file)."""
    if variant.suffix == ".gguf":
        if data_dir is None:
            raise CheckpointError(f"{variant}: a GGUF names no data folder; pass --data")
        m = measure_gguf(variant, data_dir)
        run = variant.parent
    else:
        m = measure_checkpoint(variant, data_dir)
        found = resolve(variant)
        run = found.parent.parent if found.parent.name == "checkpoints" else found.parent
    facts = data_facts(m["data_dir"])
    return {
        "variant": name,
        "parent": parent,
        "params": m["params"],
        "data": facts,
        "tokens_seen": m["tokens_seen"],
        "recipe": recipe,
        "val_loss": m["val_loss"],
        "val_ppl": math.exp(m["val_loss"]),
        "val_bits_per_byte": bits_per_byte(m["val_loss"], facts["val_tokens_per_byte"]),
        "humaneval_pass_at_1": _humaneval(run),
        "size_on_disk_bytes": m["size_on_disk_bytes"],
        "cpu_ms_per_token": m["cpu_ms_per_token"],
        "battery": _battery(run),
    }


def _cell(key: str, meta: dict[str, Any]) -> str:
    v = meta.get(key)
    if v is None:
        return "not measured" if key in ("humaneval_pass_at_1", "battery", "tokens_seen") else "—"
    if key == "battery":
        return f"{v['status']} on {v['device']} ({v['card']})"
    if key in ("val_ppl", "cpu_ms_per_token"):
        return f"{v:.2f}"
    if key == "val_bits_per_byte":
        return f"{v:.3f}"
    if key == "humaneval_pass_at_1":
        return f"{v:.1%}"
    if key == "size_on_disk_bytes":
        return f"{v / 1e6:.2f} MB"
    if key in ("params", "tokens_seen"):
        return f"{v:,}"
    if key == "recipe":
        return f"`{v}`"
    return str(v)


def render_card(meta: dict[str, Any]) -> str:
    """The card as text: Hugging Face's YAML metadata, then the body."""
    licenses = sorted(meta["data"]["licenses"])
    front = {
        "license": licenses[0] if len(licenses) == 1 else "other",
        "library_name": "albor",
        "tags": ["code", "python", "albor"],
        **({"base_model": meta["parent"]} if meta["parent"] else {}),
        "model-index": [
            {
                "name": meta["variant"],
                "results": [
                    {
                        "task": {"type": "text-generation"},
                        "dataset": {"name": "albor val split", "type": meta["data"]["source"]},
                        "metrics": [{"type": "perplexity", "value": meta["val_ppl"]}],
                    }
                ],
            }
        ],
        "albor": meta,
    }
    rows = "\n".join(f"| {title} | {_cell(key, meta)} |" for key, title in COLUMNS)
    lic = ", ".join(f"{k} ({n} files)" for k, n in meta["data"]["licenses"].items())
    return (
        f"---\n{yaml.safe_dump(front, sort_keys=False, allow_unicode=True)}---\n\n# {meta['variant']}\n\n"
        f"An Albor variant{' made from ' + meta['parent'] if meta['parent'] else ''}. Data: "
        f"{meta['data']['source']}, licences {lic}; val figures on `{meta['data']['folder']}`.\n\n"
        f"| field | value |\n| --- | --- |\n{rows}\n"
    )


def read_card(path: Path) -> dict[str, Any]:
    """The ``albor`` metadata of a card; errors name the file."""
    text = path.read_text()
    head, sep, _ = text.removeprefix("---\n").partition("\n---\n")
    if not text.startswith("---\n") or not sep:
        raise ValueError(f"{path}: not a model card: no YAML metadata between --- lines")
    meta = yaml.safe_load(head)
    if not isinstance(meta, dict) or not isinstance(meta.get("albor"), dict):
        raise ValueError(f"{path}: the card's metadata has no albor block")
    return meta["albor"]


def ladder_table(cards: Sequence[dict[str, Any]]) -> str:
    """One Markdown row per card, the card fields as columns."""
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "| " + " | ".join("---" for _ in COLUMNS) + " |"
    rows = ["| " + " | ".join(_cell(key, c) for key, _ in COLUMNS) + " |" for c in cards]
    return "\n".join([head, rule, *rows]) + "\n"


def card_path(variant: Path) -> Path:
    """Where a variant's card goes: beside a GGUF as ``<file>.MODEL_CARD.md``, else in its run dir."""
    return variant.with_name(f"{variant.name}.{CARD}") if variant.suffix == ".gguf" else variant / CARD


def main(argv: list[str] | None = None, prog: str = "albor card") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("variant", type=Path, help="a run dir or a GGUF file")
    parser.add_argument("--name", help="the variant's name (default: the folder's or file's)")
    parser.add_argument("--parent", help="the variant it was made from (default: ladder.json's, when there is one)")
    parser.add_argument("--recipe", help="the command that made it (default: ladder.json's)")
    parser.add_argument("--data", type=Path, help="the data folder whose val split is measured (default: the run's)")
    args = parser.parse_args(argv)
    ladder = args.variant / "ladder.json"
    made = json.loads(ladder.read_text()) if ladder.is_file() else {}
    parent = args.parent or ", ".join(Path(p).name for p in made.get("parents", [])) or None
    recipe = args.recipe or made.get("recipe")
    if recipe is None:
        parser.error("--recipe: the variant has no ladder.json; say which command made it")
    try:
        meta = build_card(args.variant, args.name or args.variant.name, parent, recipe, args.data)
    except (CheckpointError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    out = card_path(args.variant)
    write_text_atomic(out, render_card(meta))
    print(f"wrote {out}: val_ppl {meta['val_ppl']:.2f}, {meta['val_bits_per_byte']:.3f} bits/byte")
    return 0
