"""What the export, quantisation, backend and server falsifiers share: a code tokenizer, checkpoints of
random and of briefly trained decoders, and their exports. Each optional package the falsifiers
need (transformers, gguf, llama-cpp-python) is skipped for by name when it is missing."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
import torch
import yaml
from tokenizers import Tokenizer

from albor.checkpoint import save_checkpoint
from albor.config import ModelConfig
from albor.data.synthetic import TRICKY
from albor.data.tokenizer import save_tokenizer, train_tokenizer
from albor.eval.humaneval import load_problems
from albor.model import Decoder

CPU_EXTRA = "pip install 'albor[cpu]'"
# Source text that has broken tokenizers and exports before: special-token strings, tabs, CRLF, Unicode.
SOURCES = [
    *TRICKY,
    'import re\nassert re.match("<s>", "<s>x</s>")  # <unk> <pad>\n',
    "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n",
]
PROMPTS = ["def fib(n):", "import os\n\n", "class Stack:\n    def push(self, x):", "for i in range(10):\n\t"]
RANDOM = ModelConfig(
    name="export-test", n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=96, vocab_size=520, max_seq_len=96
)


def need(module: str) -> None:
    """Skip the calling test, naming the package, when ``module`` cannot be imported."""
    pytest.importorskip(module, reason=f"{module} is not installed ({CPU_EXTRA} and the test extra)")


@cache
def code_tokenizer() -> Tokenizer:
    """A 512-id byte-level BPE trained on HumanEval's prompts and solutions."""
    return train_tokenizer([p.prompt + p.canonical_solution for p in load_problems()], 512)


def save_run(
    root: Path, model: Decoder, tokenizer: Tokenizer, data_dir: Path | None = None, seed: int | None = None
) -> Path:
    """A run dir under ``root`` holding one verified checkpoint of ``model`` with ``tokenizer`` (and the data
    folder its state names, and the seed its config names, if any)."""
    root.mkdir(parents=True, exist_ok=True)
    tok_path = root / "tokenizer.json"
    save_tokenizer(tokenizer, tok_path)
    run = yaml.safe_dump({"model": model.cfg.model_dump(mode="json"), **({"seed": seed} if seed is not None else {})})
    save_checkpoint(
        root / "run" / "checkpoints",
        1,
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        state={"step": 1, **({"data_dir": str(data_dir)} if data_dir else {})},
        config_yaml=run,
        tokenizer_path=tok_path,
    )
    return root / "run"


def random_decoder(cfg: ModelConfig = RANDOM, seed: int = 0, std: float = 0.15) -> Decoder:
    """A decoder with N(0, std) matrices and gains drawn around 1, so that every weight matters."""
    torch.manual_seed(seed)
    model = Decoder(cfg.model_copy(update={"init_std": std})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    return model


def train_briefly(data: Path, runs: Path, steps: int = 40) -> Path:
    """A run dir of a one-layer, 256-wide decoder trained ``steps`` steps on the small corpus with the real trainer.

    Rows of 256 let llama.cpp's Q4_K and Q6_K types take every matrix (no fallback types).
    """
    from albor.train.config import build_config
    from albor.train.trainer import Trainer

    base = yaml.safe_load((Path(__file__).parent / "trainer-test.yaml").read_text())
    base["data"] |= {"out": str(data), "source": str(data.parent / "src")}
    base["runs_dir"] = str(runs)
    over = {
        "model.n_layers": 1,
        "model.d_model": 256,
        "model.d_ff": 512,
        "optim.max_steps": steps,
        "optim.warmup_steps": 4,
        "optim.lr": 3e-3,
        "micro_batch": 16,
        "eval_every": steps,
        "checkpoint_every": steps,
        "epochs": 2,
    }
    trainer = Trainer(build_config(base, [f"{k}={json.dumps(v)}" for k, v in over.items()]))
    trainer.fit()
    return trainer.run_dir
