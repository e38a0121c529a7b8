"""The mutation engine: mutmut's mutation operators, applied one at a time to one source file.

mutmut's own runner rewrites every function into trampolines that switch between mutants at run
time, and leaves out decorated functions (properties, ``lru_cache`` helpers, Triton kernels) and
module-level code. Albor runs each mutant as a whole mutated file instead, against a copy of the
tree, so the same operators apply everywhere except where a mutant cannot be a bug: type
annotations, decorators, imports, docstrings, and the arguments of ``len`` and ``isinstance``
(mutmut's own exclusions).
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

import libcst as cst
from libcst.metadata import MetadataWrapper, PositionProvider, WhitespaceInclusivePositionProvider
from mutmut.mutation.mutators import mutation_operators

SKIPPED_NODES = (cst.Annotation, cst.Decorator, cst.Import, cst.ImportFrom)
SKIPPED_CALLS = {"len", "isinstance"}


@dataclass(frozen=True)
class Mutation:
    """One mutant of a file: where it is, which operator made it, and the whole mutated source."""

    id: str
    file: str
    line: int
    end_line: int
    function: str
    operator: str
    source: str
    diff: str


class _Sites(cst.CSTVisitor):
    """Every (node, replacement) the operators offer, with its lines and enclosing definition."""

    METADATA_DEPENDENCIES = (PositionProvider, WhitespaceInclusivePositionProvider)

    def __init__(self) -> None:
        super().__init__()
        self.scope: list[str] = []
        self.found: list[tuple[cst.CSTNode, cst.CSTNode, str, int, int, str]] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        if isinstance(node, SKIPPED_NODES):
            return False
        if isinstance(node, cst.Call) and isinstance(node.func, cst.Name) and node.func.value in SKIPPED_CALLS:
            return False
        # A default that is not a plain value runs at definition time: mutating it breaks the import.
        plain = cst.Name | cst.BaseNumber | cst.BaseString
        if isinstance(node, cst.Param) and node.default is not None and not isinstance(node.default, plain):
            return False
        pos = self.get_metadata(PositionProvider, node, None)
        if pos is not None:
            for kind, operator in mutation_operators:
                if isinstance(node, kind):
                    for new in operator(node):
                        where = ".".join(self.scope) or "<module>"
                        self.found.append((node, new, operator.__name__, pos.start.line, pos.end.line, where))
        if isinstance(node, cst.FunctionDef | cst.ClassDef):
            self.scope.append(node.name.value)
        return True

    def on_leave(self, original_node: cst.CSTNode) -> None:
        if isinstance(original_node, cst.FunctionDef | cst.ClassDef):
            self.scope.pop()


def unified_diff(file: str, before: str, after: str) -> str:
    """A ``git apply``-able diff of ``file`` from ``before`` to ``after``."""
    lines = difflib.unified_diff(
        before.splitlines(keepends=True), after.splitlines(keepends=True), f"a/{file}", f"b/{file}", n=2
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def _key(file: str, function: str, operator: str, diff: str) -> str:
    changed = [line[0] + line[1:].strip() for line in diff.splitlines()[2:] if line[:1] in "+-"]
    text = "\x00".join([file, function, operator, *changed])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class _Splicer:
    """Writes a replacement node into the source text where the original node stands.

    Rendering the whole module for every mutant takes seconds per file; the replacement is rendered
    alone and spliced in. libcst renders a node's continuation lines without the indentation of the
    block around it, which is put back; where that cannot be done exactly the module is rendered.
    """

    def __init__(self, wrapper: MetadataWrapper, source: str) -> None:
        self.wrapper, self.source = wrapper, source
        self.ranges = wrapper.resolve(WhitespaceInclusivePositionProvider)
        self.starts = [0]
        for line in source.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))

    def __call__(self, old: cst.CSTNode, new: cst.CSTNode) -> str:
        r = self.ranges[old]
        a, b = self.starts[r.start.line - 1] + r.start.column, self.starts[r.end.line - 1] + r.end.column
        code = self.wrapper.module.code_for_node
        original, rendered, replacement = self.source[a:b], code(old).split("\n"), code(new).split("\n")
        lines = original.split("\n")
        indent = lines[1][: len(lines[1]) - len(rendered[1])] if len(lines) > 1 and len(rendered) > 1 else ""
        if "\n".join(rendered[:1] + [indent + x if x else x for x in rendered[1:]]) != original:
            module = self.wrapper.module.deep_replace(old, new)
            assert isinstance(module, cst.Module)
            return module.code
        text = "\n".join(replacement[:1] + [indent + x if x else x for x in replacement[1:]])
        return self.source[:a] + text + self.source[b:]


def mutations(file: str, source: str) -> list[Mutation]:
    """Every mutant of ``source`` (the text of repository file ``file``), in source order.

    A mutant's id is stable while its function and the changed lines stay as they are, wherever
    the lines move; two mutants with the same text in one function are told apart by a counter.
    """
    wrapper = MetadataWrapper(cst.parse_module(source))
    sites = _Sites()
    wrapper.visit(sites)
    splice = _Splicer(wrapper, source)
    seen: set[str] = {source}
    out: list[Mutation] = []
    counts: dict[str, int] = {}
    for old, new, operator, line, end, function in sites.found:
        text = splice(old, new)
        if text in seen:
            continue
        seen.add(text)
        try:
            compile(text, file, "exec")
        except SyntaxError:
            continue
        diff = unified_diff(file, source, text)
        key = _key(file, function, operator, diff)
        n = counts[key] = counts.get(key, 0) + 1
        out.append(Mutation(key if n == 1 else f"{key}-{n}", file, line, end, function, operator, text, diff))
    return out
