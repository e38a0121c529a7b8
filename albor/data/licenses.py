"""Licence names of installed distributions, normalized to SPDX-style ids, and the permissive policy."""

from __future__ import annotations

import re
from email.message import Message

UNKNOWN = "unknown"

# Licences that allow redistribution of derived models without copyleft terms.
PERMISSIVE = frozenset(
    {
        "0bsd", "apache-2.0", "bsd", "bsd-2-clause", "bsd-3-clause", "bsl-1.0", "cc0-1.0", "cnri-python", "hpnd",
        "isc", "mit", "mit-0", "mit-cmu", "psf-2.0", "public-domain", "python-2.0", "unlicense", "zlib",
    }
)  # fmt: skip

# Free-form ``License:`` values and classifier tails seen in the wild, lower-cased.
_ALIASES = {
    "mit license": "mit",
    "mit no attribution license (mit-0)": "mit-0",
    "bsd license": "bsd",
    "new bsd license": "bsd-3-clause",
    "modified bsd license": "bsd-3-clause",
    "bsd 3-clause license": "bsd-3-clause",
    "bsd 2-clause license": "bsd-2-clause",
    "3-clause bsd license": "bsd-3-clause",
    "apache": "apache-2.0",
    "apache 2.0": "apache-2.0",
    "apache 2": "apache-2.0",
    "apache license 2.0": "apache-2.0",
    "apache license, version 2.0": "apache-2.0",
    "apache software license": "apache-2.0",
    "asl 2": "apache-2.0",
    "isc license": "isc",
    "isc license (iscl)": "isc",
    "psf": "psf-2.0",
    "python software foundation license": "psf-2.0",
    "public domain": "public-domain",
    "the unlicense (unlicense)": "unlicense",
    "zlib/libpng license": "zlib",
    "mozilla public license 2.0 (mpl 2.0)": "mpl-2.0",
    "gnu general public license (gpl)": "gpl",
    "gnu general public license v2 (gplv2)": "gpl-2.0",
    "gnu general public license v3 (gplv3)": "gpl-3.0",
    "gnu lesser general public license v3 (lgplv3)": "lgpl-3.0",
    "gnu library or lesser general public license (lgpl)": "lgpl",
    "gnu affero general public license v3": "agpl-3.0",
}
_OPERATORS = ("AND", "OR", "WITH")
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_KNOWN = PERMISSIVE | set(_ALIASES.values()) | {"mpl-2.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1", "lgpl-3.0", "agpl-3.0"}


def normalize(name: str) -> str:
    """One licence name as a lower-case SPDX-style id (``MIT License`` -> ``mit``, a classifier likewise)."""
    key = " ".join(name.lower().replace("license :: osi approved :: ", "").replace("license :: ", "").split())
    if key in _ALIASES:
        return _ALIASES[key]
    key = re.sub(r"\s*\(.*\)$", "", key).removesuffix(" license")
    return _ALIASES.get(key, re.sub(r"[^\w.+-]+", "-", key))


def normalize_expression(text: str) -> str | None:
    """An SPDX-style expression with each id normalized (``MIT OR Apache-2.0`` -> ``mit OR apache-2.0``).

    None when ``text`` is not one: long text, several lines, or words that are neither ids nor operators.
    """
    if len(text) > 120 or "\n" in text or not re.fullmatch(r"[\w.+\-() ]+", text):
        return None
    tokens = _TOKEN.findall(text)
    if not any(t.upper() in _OPERATORS for t in tokens):
        return normalize(text)
    out = [t.upper() if t.upper() in _OPERATORS else t if t in "()" else normalize(t) for t in tokens]
    return " ".join(out).replace("( ", "(").replace(" )", ")")


def _ids(expression: str) -> list[str]:
    return [t for t in _TOKEN.findall(expression) if t not in "()" and t.upper() not in _OPERATORS]


def is_permissive(expression: str) -> bool:
    """Whether an SPDX-style expression is permissive: OR needs one side, AND both; WITH adds an exception.

    A malformed expression is not permissive.
    """
    tokens = _TOKEN.findall(expression)
    pos = 0

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError("expression ends early")
        pos += 1
        return tokens[pos - 1]

    def peek(*words: str) -> bool:
        return pos < len(tokens) and tokens[pos].upper() in words

    def expr() -> bool:
        ok = term()
        while peek("OR"):
            take()
            ok = term() or ok
        return ok

    def term() -> bool:
        ok = factor()
        while peek("AND"):
            take()
            ok = factor() and ok
        return ok

    def factor() -> bool:
        tok = take()
        if tok == "(":
            ok = expr()
            if take() != ")":
                raise ValueError("unbalanced parenthesis")
            return ok
        if tok in "()" or tok.upper() in _OPERATORS:
            raise ValueError(f"unexpected {tok!r}")
        if peek("WITH"):
            take()
            take()
        return normalize(tok) in PERMISSIVE

    try:
        ok = expr()
    except ValueError:
        return False
    return ok and pos == len(tokens)


def distribution_license(meta: Message) -> str:
    """The licence of an installed distribution from its metadata, or ``unknown``.

    Order: ``License-Expression``; a short ``License`` value that names a licence; the ``License ::``
    classifiers (several are read as alternatives, the way dual-licensed projects list them).
    """
    expression = normalize_expression((meta.get("License-Expression") or "").strip())
    if expression:
        return expression
    field = normalize_expression((meta.get("License") or "").strip())
    if field and all(t in _KNOWN for t in _ids(field)):
        return field
    classifiers = sorted({normalize(c) for c in meta.get_all("Classifier") or [] if c.startswith("License ::")})
    return " OR ".join(classifiers) if classifiers else UNKNOWN


# Phrases that identify a licence file's text; the first match wins.
_LICENSE_TEXTS = [
    ("gnu affero general public license", "agpl-3.0"),
    ("gnu lesser general public license", "lgpl"),
    ("gnu general public license", "gpl"),
    ("mozilla public license", "mpl-2.0"),
    ("permission is hereby granted, free of charge", "mit"),
    ("apache license", "apache-2.0"),
    ("redistribution and use in source and binary forms", "bsd"),
    ("permission to use, copy, modify, and/or distribute this software for any purpose", "isc"),
    ("this is free and unencumbered software released into the public domain", "unlicense"),
]
LICENSE_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "COPYING", "COPYING.txt")


def license_from_text(text: str) -> str:
    """The licence a LICENSE/COPYING file's text states, or ``unknown``."""
    flat = " ".join(text.lower().split())
    for phrase, name in _LICENSE_TEXTS:
        if phrase in flat:
            if name == "bsd":
                return "bsd-3-clause" if "neither the name" in flat else "bsd-2-clause"
            return name
    return UNKNOWN
