"""A Sphinx extension for the book: long identifiers in tables may wrap at ``::``, ``/`` and ``_``.

Node ids such as ``falsification/test_rmsnorm.py::test_kernel_gradients_match_float64`` are
too wide for a table cell. A ``<wbr>`` after each separator lets the browser break there only when it
must, and copying the text still gives the id unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from sphinx.application import Sphinx

_PRE = re.compile(r'(<span class="pre">)([^<]*)(</span>)')
_SEPARATOR = re.compile(r"(::|/|_)(?=\w)")


def add_break_points(html: str) -> str:
    """``html`` with a ``<wbr>`` after every separator inside inline-code text."""
    return _PRE.sub(lambda m: m.group(1) + _SEPARATOR.sub(r"\1<wbr>", m.group(2)) + m.group(3), html)


def _page(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    if "body" in context:
        context["body"] = add_break_points(context["body"])


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", _page)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
