"""Small MyST writers: escaped text, tables, cross-references, status badges and math blocks."""

from __future__ import annotations

import re
from collections.abc import Sequence

_PUNCT = re.compile(r"([!-/:-@\[-`{-~])")


def esc(text: object) -> str:
    """``text`` as literal MyST: every ASCII punctuation mark escaped, whitespace folded to one line."""
    return _PUNCT.sub(r"\\\1", " ".join(str(text).split()))


def code(text: str) -> str:
    """An inline code span that survives backticks in ``text``."""
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def ref(label: str, text: str | None = None) -> str:
    """A cross-reference to a ``(label)=`` target anywhere in the book (role text is literal, not MyST)."""
    if not text:
        return f"{{ref}}`{label}`"
    text = " ".join(text.replace("`", "'").replace("<", "‹").replace(">", "›").split())
    return f"{{ref}}`{text} <{label.lower()}>`"


def target(label: str) -> str:
    """A ``(label)=`` target line; labels are lower case, as Sphinx stores them."""
    return f"({label.lower()})="


def badge(status: str, text: str | None = None) -> str:
    """A status word styled by the book's CSS (``.status-passed``, ``.status-failed`` …)."""
    return f"[{esc(text or status.replace('-', ' '))}]{{.status-{status}}}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A pipe table; cells are MyST already (use ``esc`` for plain text)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c.replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def facts(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column table of name and value, without a header row."""
    lines = ["```{list-table}", ":class: facts", ""]
    for name, value in rows:
        lines += [f"* - {esc(name)}", f"  - {value}"]
    return "\n".join([*lines, "```"])


def fenced(text: str, language: str) -> str:
    """A fenced code block whose fence is longer than any backtick run inside ``text``."""
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"


def math(latex: str, label: str) -> str:
    """A numbered display equation."""
    return "\n".join(["```{math}", f":label: {label.lower()}", latex.strip(), "```"])


def percent(x: float) -> str:
    return f"{100 * x:.1f} %"
