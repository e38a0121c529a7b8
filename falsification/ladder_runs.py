"""What the distillation and ladder falsifiers share: a teacher checkpoint on the small corpus's tokenizer, and
trainer configs of seconds-long runs on that corpus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from albor.checkpoint import save_checkpoint
from albor.config import ModelConfig
from albor.model import Decoder

TRAINER_TEST = Path(__file__).parent / "trainer-test.yaml"


def teacher_run(data: Path, root: Path, seed: int = 1) -> Path:
    """A run dir with one checkpoint of a random 2-layer decoder on ``data``'s tokenizer (vocab 300, context 16)."""
    cfg = ModelConfig(
        name="teacher", n_layers=2, d_model=48, n_heads=4, n_kv_heads=2, d_ff=64, vocab_size=300, max_seq_len=16
    )
    torch.manual_seed(seed)
    model = Decoder(cfg.model_copy(update={"init_std": 0.1})).eval()
    save_checkpoint(
        root / "checkpoints",
        1,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        state={"step": 1, "tokens_seen": 0, "data_dir": str(data)},
        config_yaml=yaml.safe_dump({"model": cfg.model_dump(mode="json")}),
        tokenizer_path=data / "tokenizer.json",
    )
    return root


def run_tree(data: Path, runs: Path) -> dict[str, Any]:
    """The battery's trainer config (trainer-test.yaml) on the small corpus ``data``, runs under ``runs``."""
    base = yaml.safe_load(TRAINER_TEST.read_text())
    base["data"] |= {"out": str(data), "source": str(data.parent / "src")}
    base["runs_dir"] = str(runs)
    base["eval_sample_tokens"] = 0
    return base


def overrides(values: dict[str, Any]) -> list[str]:
    """``field=value`` overrides of ``values``, each value as JSON (which the override grammar reads as YAML)."""
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in values.items()]
