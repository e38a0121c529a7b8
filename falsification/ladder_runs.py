"""What the distillation and ladder falsifiers share: a teacher checkpoint on the small corpus's tokenizer,
trainer configs of seconds-long runs on that corpus, and the whole ladder made with the ``albor`` command."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class LadderScale:
    """How big the ladder is: the corpus, the teacher, the student, and the steps of each stage."""

    synthetic: bool = True  # the synthetic corpus of albor.data.synthetic; False: the embedded default source
    max_source_bytes: int = 2_000_000  # of the default source, when not synthetic
    repos: int = 6
    files_per_repo: int = 4
    vocab_size: int = 300
    seq_len: int = 16
    teacher: dict[str, int] = field(default_factory=lambda: {"n_layers": 2, "d_model": 64, "d_ff": 128})
    student: dict[str, int] = field(default_factory=lambda: {"n_layers": 1, "d_model": 32, "d_ff": 64})
    teacher_steps: int = 60
    student_steps: int = 40
    finetune_steps: int = 10
    micro_batch: int = 8
    lr: float = 3e-3  # teacher and students alike
    distill_mode: str = "offline"
    top_k: int = 16


def _albor(argv: list[str]) -> None:
    """Run ``albor ARGV`` in a fresh process, as a user would; its stderr's tail when it fails."""
    proc = subprocess.run([sys.executable, "-m", "albor", *argv], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"albor {' '.join(argv)} failed: {proc.stderr[-3000:]}"


def build_ladder(root: Path, scale: LadderScale = LadderScale()) -> dict[str, Path]:
    """Make every rung with the ``albor`` command, as a user would, under ``root``, and write each card.

    Teacher (``albor train``), a distilled student (``albor distill``, offline top-k by default) and a student of the
    same shape and steps without the teacher, an instruct LoRA (``albor finetune --lora``), the SLERP of
    teacher and instruct (``albor merge``), the merge pruned 2:4 (``albor prune``) and, where llama.cpp is
    installed, the pruned model's Q4_K_M GGUF. Returns each variant's path (run dir or GGUF file).
    """
    from albor.data.synthetic import clean_repos, write_repos

    if scale.synthetic:
        source = [f"data.source={write_repos(root / 'src', clean_repos(scale.repos, scale.files_per_repo, seed=7))}"]
    else:
        source = [f"data.max_source_bytes={scale.max_source_bytes}"]
    runs, data = root / "runs", root / "data"
    common = [
        f"runs_dir={runs}",
        *source,
        f"data.out={data}",
        f"data.vocab_size={scale.vocab_size}",
        f"data.seq_len={scale.seq_len}",
        f"micro_batch={scale.micro_batch}",
        "device=cpu",
        "eval_windows=32",
        "eval_sample_tokens=0",
        "epochs=20",
    ]

    def steps(n: int) -> list[str]:
        return [
            f"optim.max_steps={n}",
            f"optim.warmup_steps={max(1, n // 10)}",
            f"eval_every={n}",
            f"checkpoint_every={n}",
        ]

    def shape(fields: dict[str, int]) -> list[str]:
        heads = max(2, fields["d_model"] // 16)
        return [f"model.{k}={v}" for k, v in fields.items()] + [f"model.n_heads={heads}", f"model.n_kv_heads={heads}"]

    recipes: dict[str, tuple[list[str], str | None]] = {}

    def run(name: str, parent: str | None, argv: list[str]) -> None:
        _albor(argv)
        recipes[name] = (argv, parent)

    model = ["--config", "default", "--preflight", "off", *common, f"optim.lr={scale.lr}"]
    run("teacher", None, ["train", *model, "--name", "teacher", *shape(scale.teacher), *steps(scale.teacher_steps)])
    student = [*shape(scale.student), *steps(scale.student_steps)]
    run("student-no-teacher", None, ["train", *model, "--name", "student-no-teacher", *student])
    distill = [
        f"distill.teacher={runs / 'teacher'}",
        f"distill.mode={scale.distill_mode}",
        f"distill.top_k={scale.top_k}",
    ]
    run("distilled", "teacher", ["distill", *model, "--name", "distilled", *student, *distill])
    tune = ["--preflight", "off", *common, f"data.out={root / 'data-pairs'}", "data.val_fraction=0.2"]
    run("instruct", "teacher", ["finetune", "--lora", str(runs / "teacher"), *tune, *steps(scale.finetune_steps)])
    run(
        "merged",
        "teacher, instruct",
        ["merge", "--t", "0.5", str(runs / "teacher"), str(runs / "instruct"), "--out", str(runs / "merged")],
    )
    run("pruned", "merged", ["prune", str(runs / "merged"), "--pattern", "2:4", "--out", str(runs / "pruned")])
    variants = {name: runs / name for name in recipes}
    if importlib.util.find_spec("llama_cpp") is not None:
        gguf = runs / "pruned-q4_k_m.gguf"
        run("pruned-q4_k_m", "pruned", ["export", "gguf", str(runs / "pruned"), str(gguf), "--type", "q4_k_m"])
        variants["pruned-q4_k_m"] = gguf
    for name, (argv, parent) in recipes.items():
        card = ["card", str(variants[name]), "--name", name, "--recipe", "albor " + " ".join(argv), "--data", str(data)]
        _albor(card + (["--parent", parent] if parent else []))
    return variants
