"""Small synthetic corpora and a tiny tokenizer, for tests that must run in seconds."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

from tokenizers import Tokenizer

from albor.data.tokenizer import train_tokenizer

MIT_TEXT = "MIT License\n\nPermission is hereby granted, free of charge, to any person obtaining a copy\n"
GPL_TEXT = "GNU GENERAL PUBLIC LICENSE\nVersion 3, 29 June 2007\n"

# Text that has broken tokenizers before: tabs, mixed indentation, CRLF, trailing spaces, non-ASCII,
# emoji, and the literal strings of the special tokens.
TRICKY = [
    "def f(x):\n\tif x:\n\t\treturn x\n    return None  \n",
    "class A:\r\n    def g(self):\r\n\t    pass\r\n",
    "s = '<s>' + '</s>' + '<unk>' + '<pad>'  # <|fim_prefix|><|fim_suffix|><|fim_middle|>\n",
    "π = 3.14159  # café 😀 日本語\n\n\n\t \t\n",
    "x = '''\n    indented\n\tmixed\n'''\n",
]


def python_source(seed: int, n_functions: int = 6) -> str:
    """A plausible, distinct Python module drawn from ``seed`` (distinct seeds are never near-duplicates)."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))

    lines = [f'"""Module {word()} {word()}."""', "", f"import {word()}", ""]
    for _ in range(n_functions):
        args = ", ".join(word() for _ in range(rng.randint(1, 3)))
        lines += [f"def {word()}({args}):", f'    """{word().capitalize()} the {word()}."""']
        for _ in range(rng.randint(2, 6)):
            lines.append(f"    {word()} = {word()}({word()}, {rng.randint(0, 999)})")
        lines += [f"    if {word()} > {rng.randint(0, 99)}:", f"        return {word()}", f"    return {word()}", ""]
    return "\n".join(lines) + "\n"


def write_repos(root: Path, repos: dict[str, dict[str, str | bytes]], licenses: dict[str, str] | None = None) -> Path:
    """Write ``{repo: {relative path: text or bytes}}`` under ``root``, each repo with its LICENSE text."""
    for repo, files in repos.items():
        for rel, content in files.items():
            p = root / repo / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content if isinstance(content, bytes) else content.encode())
        (root / repo / "LICENSE").write_text((licenses or {}).get(repo, MIT_TEXT))
    return root


def clean_repos(n_repos: int = 6, files_per_repo: int = 4, seed: int = 0) -> dict[str, dict[str, str]]:
    """Repos of distinct synthetic modules that pass every filter."""
    return {
        f"repo{r}": {f"pkg/mod{i}.py": python_source(seed * 10_000 + r * 100 + i) for i in range(files_per_repo)}
        for r in range(n_repos)
    }


@cache
def tiny_tokenizer(vocab_size: int = 300) -> Tokenizer:
    """A ByteLevel BPE of ~300 ids trained on synthetic modules and the tricky texts (once per process)."""
    return train_tokenizer([python_source(s) for s in range(20)] + TRICKY, vocab_size)
