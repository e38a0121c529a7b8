"""Corpora in the shapes real ones have, for the data falsifiers.

The small synthetic corpus (``albor.data.synthetic.clean_repos``) is one folder per repository, whose
files differ from their first line. Real corpora are not like that: repositories hold several
top-level packages in nested folders and loose files at their root; whole projects open every file
with the same long licence header; forks and vendored copies differ from the original only near
the end; source holds the special tokens' text; and the standard library is one repository of
independent packages.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from albor.data.schema import CORPUS_SCHEMA
from albor.data.sources import STDLIB_LICENSE
from albor.data.split import STDLIB_REPO
from albor.data.synthetic import TRICKY, python_source

# Contributors, as the headers of long-lived projects list them.
AUTHORS = [f"{first} {last} <{first.lower()}.{last.lower()}@example.org>" for first, last in zip(
    ("Ada", "Brian", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ivan", "Jun", "Kofi", "Lena", "Mateo",
     "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tomoko", "Uma", "Viktor", "Wen", "Yusuf"),
    ("Lovelace", "Kernighan", "Wei", "Scott", "Okafor", "Haddad", "Novak", "Sato", "Petrov", "Tanaka", "Mensah",
     "Fischer", "Garcia", "Rahman", "Aziz", "Iyer", "Byrne", "Diaz", "Larsen", "Mori", "Patel", "Horvat", "Zhao",
     "Demir"),
    strict=True,
)]  # fmt: skip
# A project's header, as long as real ones get: a full BSD-3 text and its contributors (2.7 KB).
LICENSE_HEADER = "".join(
    f"# {line}\n"
    for line in [
        "Copyright (c) 2014-2024, The Acme Project Developers.",
        "Copyright (c) 2012-2013, Jane Roe and Richard Doe.",
        "All rights reserved.",
        "",
        "Redistribution and use in source and binary forms, with or without modification, are permitted",
        "provided that the following conditions are met:",
        "",
        "1. Redistributions of source code must retain the above copyright notice, this list of conditions",
        "   and the following disclaimer.",
        "2. Redistributions in binary form must reproduce the above copyright notice, this list of",
        "   conditions and the following disclaimer in the documentation and/or other materials provided",
        "   with the distribution.",
        "3. Neither the name of the copyright holder nor the names of its contributors may be used to",
        "   endorse or promote products derived from this software without specific prior written permission.",
        "",
        "THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS 'AS IS' AND ANY EXPRESS OR",
        "IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED WARRANTIES OF MERCHANTABILITY AND",
        "FITNESS FOR A PARTICULAR PURPOSE ARE DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR",
        "CONTRIBUTORS BE LIABLE FOR ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL",
        "DAMAGES (INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS OF USE,",
        "DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY THEORY OF LIABILITY, WHETHER",
        "IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT",
        "OF THE USE OF THIS SOFTWARE, EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.",
        "",
        "Contributors:",
        *(f"    {a}" for a in AUTHORS),
    ]
)
# Each repository: several top-level packages, nested folders, loose files at its root.
LAYOUT = (
    "setup.py",
    "src/{name}/__init__.py",
    "src/{name}/core/engine.py",
    "src/{name}/core/util/text.py",
    "src/{name}_cli/main.py",
    "tests/test_engine.py",
    "tests/unit/test_text.py",
    "docs/conf.py",
)
SPECIAL_TEXT = "".join(TRICKY)


def nested_repos(n_repos: int = 8) -> dict[str, dict[str, str]]:
    """Repositories laid out as ``LAYOUT``, every file opening with ``LICENSE_HEADER`` and differing only after it.

    ``project1`` also holds the special tokens' text, and ``project2/vendor/engine.py`` is a copy of
    ``project0``'s engine that differs only in its last lines (a near-duplicate that differs late).
    """
    repos = {
        f"project{r}": {
            rel.format(name=f"pkg{r}"): LICENSE_HEADER + python_source(50_000 + 100 * r + i, n_functions=5)
            for i, rel in enumerate(LAYOUT)
        }
        for r in range(n_repos)
    }
    repos["project1"]["src/pkg1/core/tokens.py"] = LICENSE_HEADER + SPECIAL_TEXT + python_source(777)
    original = repos["project0"]["src/pkg0/core/engine.py"]
    lines = original.splitlines(keepends=True)
    repos["project2"]["vendor/engine.py"] = "".join([*lines[:-3], "    return patched_locally\n", *lines[-2:]])
    return repos


def true_repository(repos: dict[str, dict[str, str]]) -> dict[str, str]:
    """Each file's content → the repository it was written into (what the split must keep whole)."""
    return {content: repo for repo, files in repos.items() for content in files.values()}


# Real standard-library source: packages with subpackages, single modules, and files that hold the
# special tokens' text (zoneinfo).
STDLIB_PARTS = ("json", "concurrent", "zoneinfo", "importlib/metadata", "textwrap.py", "colorsys.py", "keyword.py")


def stdlib_sample() -> dict[str, str]:
    """Standard-library path → source for ``STDLIB_PARTS`` of the running interpreter."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files: dict[str, str] = {}
    for part in STDLIB_PARTS:
        found = [root / part] if part.endswith(".py") else sorted((root / part).rglob("*.py"))
        # A distribution may split a module off its standard library (Debian's lib2to3): say which.
        if not found or not found[0].is_file():
            raise FileNotFoundError(f"{root / part}: not in this interpreter's standard library")
        for path in found:
            files[path.relative_to(root).as_posix()] = path.read_text(encoding="utf-8")
    return files


def parquet_source(path: Path, files: dict[tuple[str, str], str]) -> Path:
    """``{(repo, path): content}`` as one codeparrot-clean Parquet file (the statistics columns left at zero;
    the corpus stage computes its own), the standard library's rows under its own name and licence."""
    keys = list(files)
    n = len(keys)
    cols = {
        "repo_name": [repo for repo, _ in keys],
        "path": [p for _, p in keys],
        "copies": ["1"] * n,
        "size": [str(len(files[k].encode())) for k in keys],
        "content": [files[k] for k in keys],
        "license": [STDLIB_LICENSE if repo == STDLIB_REPO else "mit" for repo, _ in keys],
        "hash": [0] * n,
        "line_mean": [0.0] * n,
        "line_max": [0] * n,
        "alpha_frac": [0.0] * n,
        "autogenerated": [False] * n,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols, schema=CORPUS_SCHEMA), path)
    return path
