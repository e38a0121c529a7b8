"""Which falsifiers a generated mutant runs against: those that execute its lines on the clean copy.

The probe (``albor.verify.generated``) runs each falsifier alone under coverage; a mutant then needs only
the falsifiers that passed there and ran one of its lines, fastest first, since any other cannot see it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from albor.verify.junit import Outcome

if TYPE_CHECKING:
    from albor.verify.engine import Mutation


@dataclass
class Probe:
    """The contract's falsifiers on the clean copy: outcome per case, seconds and lines run per falsifier, and
    those that compiled a frame with torch.compile, whose lines coverage did not see (ALB-309)."""

    outcomes: dict[str, Outcome]
    seconds: dict[str, float]
    covered: dict[str, dict[str, set[int]]]
    compiled: set[str] = field(default_factory=set)

    def usable(self, falsifier: str) -> bool:
        """Ran on this machine and passed: only such a falsifier can kill a mutant."""
        cases = [o for n, o in self.outcomes.items() if n == falsifier or n.startswith(falsifier + "[")]
        return "passed" in cases and "failed" not in cases


def statement_lines(source: str) -> list[tuple[int, int, set[int]]]:
    """(first line, last line, lines coverage reports it on) of every statement."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.stmt):
            lines = {node.lineno} | {d.lineno for d in getattr(node, "decorator_list", [])}
            out.append((node.lineno, node.end_lineno or node.lineno, lines))
    return out


def reported_lines(statements: list[tuple[int, int, set[int]]], line: int, end: int) -> set[int]:
    """The lines coverage reports for a mutant of lines [line, end]: the innermost statement around it,
    and every statement inside it."""
    around = [s for s in statements if s[0] <= line and end <= s[1]]
    inner = min(around, key=lambda s: s[1] - s[0], default=None)
    lines = set(inner[2]) if inner else set()
    for first, last, reported in statements:
        if line <= first and last <= end:
            lines |= reported
    return lines


def select(m: Mutation, lines: set[int], p: Probe, tests: list[str]) -> list[str]:
    """The usable falsifiers that execute the mutant's lines or compiled a frame with torch.compile (which may
    hold them, unseen by coverage), fastest first; every usable one when coverage saw no line of the mutant's
    file at all.

    A file of which no measured process ran even its definitions was never imported where coverage looks:
    it runs where coverage cannot follow (the sandbox's child, started without site-packages in a clean
    environment), or nowhere, and either way only running the falsifiers can tell.
    """
    usable = [t for t in tests if p.usable(t)]
    if any(p.covered.get(t, {}).get(m.file) for t in tests):
        usable = [t for t in usable if t in p.compiled or p.covered.get(t, {}).get(m.file, set()) & lines]
    return sorted(usable, key=lambda t: (p.seconds[t], t))
