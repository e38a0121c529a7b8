"""Falsifiers for the ``lora`` contract (contracts/lora.yaml)."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from albor.checkpoint import load_for_inference
from albor.config import ModelConfig
from albor.data import load_windows, prepare
from albor.data.corpus import read_corpus_rows
from albor.data.dedup import content_hash
from albor.data.filters import file_stats
from albor.data.schema import check_corpus_schema
from albor.data.synthetic import clean_repos, write_repos
from albor.eval.humaneval import load_problems
from albor.ladder.lora import LoraSettings, add_lora, lora_layers, merge_lora
from albor.ladder.pairs import PAIRS_FILE, Pair, function_pairs, mine_pairs, write_pairs
from albor.model import Decoder
from albor.train.config import build_config
from albor.train.trainer import Trainer
from albor.verify.contracts import tolerance
from falsification.ladder_runs import overrides, run_tree, teacher_run

pytest.importorskip("peft", reason="peft is not installed (pip install 'albor[ladder]')")

CFG = ModelConfig(name="lora", n_layers=2, d_model=40, n_heads=4, n_kv_heads=2, d_ff=56, vocab_size=97, max_seq_len=12)


def _base(seed: int = 0) -> Decoder:
    torch.manual_seed(seed)
    model = Decoder(CFG.model_copy(update={"init_std": 0.2})).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    return model


def _ids(seed: int = 1) -> torch.Tensor:
    return torch.randint(0, CFG.vocab_size, (3, CFG.max_seq_len), generator=torch.Generator().manual_seed(seed))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@pytest.mark.claim("LORA-001")
def test_zero_b_equals_base() -> None:
    base, x = _base(), _ids()
    with torch.no_grad():
        want = base(x)
    model = add_lora(base, LoraSettings(r=4, alpha=8.0))
    assert {n.split(".")[-1] for n, _ in lora_layers(model)} == {"qkv", "out", "gate_up", "down"}
    assert all(("lora_" in n) == p.requires_grad for n, p in model.named_parameters())
    with torch.no_grad():
        assert torch.equal(model(x), want)


@pytest.mark.claim("LORA-002")
@pytest.mark.parametrize(("r", "alpha"), [(2, 4.0), (5, 3.0)])
def test_merge_equals_unmerged(r: int, alpha: float) -> None:
    model, x = add_lora(_base(2), LoraSettings(r=r, alpha=alpha)), _ids(3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        unmerged = model(x)
    want = {}
    for name, layer in lora_layers(model):
        a, b = layer.lora_A["default"].weight.double(), layer.lora_B["default"].weight.double()
        want[name] = layer.get_base_layer().weight.double() + (alpha / r) * b @ a
    merge_lora(model)
    with torch.no_grad():
        merged = model(x)
    tol = tolerance("LORA-002", "float32")
    assert _rel(merged, unmerged) <= tol
    for name, w in want.items():
        got = model.get_submodule(name)
        assert type(got) is torch.nn.Linear, name
        assert _rel(got.weight, w) <= tol, name


@pytest.mark.claim("LORA-003")
def test_lora_checkpoint_loads_merged(small_data: Path, tmp_path: Path) -> None:
    base = teacher_run(small_data, tmp_path / "base")
    tree = run_tree(small_data, tmp_path / "runs")
    values = {
        "init_from": str(base),
        "data.out": str(tmp_path / "data"),
        "model.d_model": 48,
        "model.d_ff": 64,
        "lora.r": 4,
        "optim.max_steps": 3,
        "optim.lr": 3e-2,
        "eval_every": 100,
    }
    with Trainer(build_config(tree, overrides(values))) as trainer:
        trainer.fit()
        adapted = trainer.model.eval()
        windows = torch.from_numpy(load_windows(trainer.data_dir, "val")[:4][:, :-1].astype(np.int64))
        with torch.no_grad():
            want = adapted(windows)
            trained_b = sum(p.abs().sum() for n, p in adapted.named_parameters() if "lora_B" in n)
        run = trainer.run_dir
    assert trained_b > 0, "the adapters trained"
    with torch.no_grad():
        got = load_for_inference(run).model(windows)
    assert _rel(got, want) <= tolerance("LORA-003", "float32")


@pytest.fixture(scope="module")
def humaneval_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small synthetic corpus with one HumanEval problem's prompt and solution in every repository."""
    root = tmp_path_factory.mktemp("pairs")
    repos = clean_repos(n_repos=6, files_per_repo=4, seed=3)
    for i, (_, files) in enumerate(sorted(repos.items())):
        problem = load_problems()[i]
        files["pkg/task.py"] = problem.prompt + problem.canonical_solution
    return prepare(write_repos(root / "src", repos), root / "data", vocab_size=300, seq_len=16, seed=0)


@pytest.mark.claim("LORA-004")
def test_pairs_from_train_split_only(humaneval_corpus: Path) -> None:
    pairs = mine_pairs(humaneval_corpus)
    cols = ["repo_name", "path", "content"]
    train, val = (read_corpus_rows(humaneval_corpus, s, cols) for s in ("train", "val"))
    train_docs = {(r, p): c for r, p, c in zip(*(train[k] for k in cols), strict=True)}
    val_files = set(zip(val["repo_name"], val["path"], strict=True))
    assert pairs and val_files
    for pair in pairs:
        assert (pair.repo_name, pair.path) in train_docs and (pair.repo_name, pair.path) not in val_files, pair
        assert pair.prompt.splitlines()[-1].strip() in train_docs[(pair.repo_name, pair.path)]
    problems = load_problems()
    defs = set()
    for problem in problems:
        tree = ast.parse(problem.prompt)
        defs |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    in_train = [doc for doc in train_docs.values() if any(f"def {d}(" in doc for d in defs)]
    assert in_train, "the train split holds HumanEval functions, so the filter is exercised"
    for pair in pairs:
        first = pair.prompt.splitlines()[[line.startswith("def ") for line in pair.prompt.splitlines()].index(True)]
        leaked = [p.task_id for p in problems if first.strip() in p.prompt]
        assert not leaked, (pair.prompt, leaked)


# Every shape function_pairs meets, with the pairs written out by hand: a decorated function, a nested
# and an async one, a method, a function that is only a docstring (no pair), one without a docstring
# (no pair, with one statement or two) and a last body with no newline at the end of the file, in
# ast.walk's order (breadth first).
SOURCE = '''import functools


@functools.cache
def area(r):
    """Area of a circle."""
    return 3.14 * r * r


def outer(x):
    """Outer doc."""

    def inner(y):
        """Inner doc."""
        return y + 1

    return inner(x)


class Box:
    def size(self):
        """The size."""
        return 1


async def fetch(u):
    """Fetch u."""
    return u


def only_doc():
    """Nothing after me."""


def no_doc(x):
    return x


def no_doc_two(x):
    y = x
    return y


def last(z):
    """Last one."""
    return z'''
PAIRS = [
    ('@functools.cache\ndef area(r):\n    """Area of a circle."""\n', "    return 3.14 * r * r\n"),
    (
        'def outer(x):\n    """Outer doc."""\n',
        '\n    def inner(y):\n        """Inner doc."""\n        return y + 1\n\n    return inner(x)\n',
    ),
    ('async def fetch(u):\n    """Fetch u."""\n', "    return u\n"),
    ('def last(z):\n    """Last one."""\n', "    return z\n"),
    ('def inner(y):\n    """Inner doc."""\n', "    return y + 1\n"),
    ('def size(self):\n    """The size."""\n', "    return 1\n"),
]


@pytest.mark.claim("LORA-005")
def test_function_pairs_split_each_function_after_its_docstring(tmp_path: Path) -> None:
    assert function_pairs(SOURCE) == PAIRS
    assert function_pairs("def broken(:\n") == [] and function_pairs("") == []
    problem = load_problems()[0]
    node = next(n for n in ast.parse(problem.prompt).body if isinstance(n, ast.FunctionDef))
    doc = textwrap.indent(ast.get_docstring(node), "    ").lstrip()
    # HumanEval's def line with a docstring of its own, its docstring under another def line, then a
    # function of neither: only the last is a pair.
    banned = (
        f'{problem.prompt.splitlines()[node.lineno - 1]}\n    """Mine, not theirs."""\n    return False\n\n\n'
        f'def renamed(numbers, threshold):\n    """{doc}\n    """\n    return False\n\n\n'
        'def kept(a):\n    """Kept."""\n    return a\n'
    )
    repos = clean_repos()
    repos["repo0"]["pkg/shapes.py"] = SOURCE
    repos["repo0"]["pkg/banned.py"] = banned
    data = prepare(write_repos(tmp_path / "src", repos), tmp_path / "data", vocab_size=300, seq_len=16, seed=0)
    train = read_corpus_rows(data, "train", ["repo_name", "path", "license"])
    assert ("src/repo0", "pkg/shapes.py", "mit") in zip(*train.values(), strict=True), "shapes.py is in train"
    every = mine_pairs(data)
    assert [(p.prompt, p.body) for p in every if p.path == "pkg/banned.py"] == [
        ('def kept(a):\n    """Kept."""\n', "    return a\n")
    ]
    mined = [p for p in every if p.path == "pkg/shapes.py"]
    assert [(p.prompt, p.body) for p in mined] == PAIRS
    for p in mined:
        assert (p.repo_name, p.license, p.text) == ("src/repo0", "mit", p.prompt + p.body)


@pytest.mark.claim("LORA-006")
def test_pairs_are_written_as_a_corpus_file(tmp_path: Path) -> None:
    pairs = [
        Pair("r", "a.py", "MIT", *PAIRS[0]),
        Pair("r", "b.py", "MIT", *PAIRS[1]),
        Pair("s", "a.py", "BSD", *PAIRS[2]),
    ]
    assert PAIRS_FILE == "pairs.parquet"  # the fine-tune's data source in its run dir (contracts/lora.yaml)
    out = write_pairs(pairs, tmp_path / PAIRS_FILE)
    table = pq.read_table(out)
    check_corpus_schema(table.schema, out)
    rows = table.to_pylist()
    assert [(r["repo_name"], r["path"], r["license"]) for r in rows] == [
        ("r", "a.py#0", "MIT"), ("r", "b.py#0", "MIT"), ("s", "a.py#1", "BSD")
    ]  # fmt: skip
    for row, pair in zip(rows, pairs, strict=True):
        text = pair.prompt + pair.body
        stats = file_stats(text)
        assert row["content"] == text and row["copies"] == "1" and row["size"] == str(len(text.encode("utf-8")))
        assert row["hash"] == content_hash(text), "the corpus's hash column: sha256's first 8 bytes, little-endian"
        assert (row["line_mean"], row["line_max"], row["alpha_frac"], row["autogenerated"]) == (
            stats.line_mean, stats.line_max, stats.alpha_frac, stats.autogenerated
        )  # fmt: skip
    with pytest.raises(ValueError, match="no docstring-conditioned pairs") as refused:
        write_pairs([], tmp_path / "none.parquet")
    assert str(tmp_path / "none.parquet") in str(refused.value) and not (tmp_path / "none.parquet").exists()


@pytest.mark.claim("LORA-007")
def test_lora_settings_declare_their_defaults_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = LoraSettings()
    assert (settings.r, settings.alpha, settings.targets) == (8, 16.0, ["qkv", "out", "gate_up", "down"])
    assert LoraSettings(r=1, alpha=0.5, targets=["down"]).r == 1
    for bad, field in (({"r": 0}, "r"), ({"alpha": 0.0}, "alpha"), ({"targets": []}, "targets")):
        with pytest.raises(ValidationError) as refused:
            LoraSettings(**bad)
        assert [e["loc"] for e in refused.value.errors()] == [(field,)], refused.value
    with pytest.raises(ValidationError, match=r"targets: unknown projections \['wq'\]; choose from \['qkv', "):
        LoraSettings(targets=["down", "wq"])
    model = add_lora(_base(), LoraSettings(r=2, targets=["down"]))
    assert {name.rsplit(".", 1)[0] for name, _ in lora_layers(model)} == {"blocks.0.ffn", "blocks.1.ffn"}
    assert all(m.lora_dropout["default"].__class__ is torch.nn.Identity for _, m in lora_layers(model))
    merged = merge_lora(model)
    assert lora_layers(merged) == [] and all(p.requires_grad for p in merged.parameters())
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(ImportError, match=r"^LoRA needs peft: pip install 'albor\[ladder\]'$"):
        add_lora(_base(), LoraSettings())
