"""The import graph of firmware/ from its source (ast): which file imports which, and the circles.

`python -m tests.importgraph` prints the counts issue 15 asks for: files, arrows, circles, then
every circle by its shortest cycle, the imports from board/ and the imports by a name in a string.
tests/test_layout.py holds the rules these counts are checked against.

How it counts: a node is a `.py` file under firmware/ (a package's `__init__.py` is the package).
An arrow is an ordered pair of files (A imports B), counted once however many import lines make
it. `import x.y`, `from x.y import z` (z a module or a name) and relative imports resolve to the
longest prefix that is a file in firmware/. Imports inside functions ("lazy") and under
`if TYPE_CHECKING:` ("typing") count like the module-level ones ("top"): a reader follows them
too. `importlib.import_module(name)` is not an import statement, so the graph cannot see it;
`imports_by_name()` lists those calls instead.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "firmware"

Kind = Literal["top", "lazy", "typing"]
KINDS: tuple[Kind, ...] = ("top", "lazy", "typing")
Graph = dict[str, set[str]]


@dataclass(frozen=True)
class Import:
    """One name brought in by one import statement."""

    source: str  # module of the importing file, e.g. "firmware.ui.results"
    path: str  # its file, relative to the root, e.g. "firmware/ui/results.py"
    target: str  # what is imported, dotted: "firmware.ui.core", "board.sim.cards.CARDS"
    module: str  # the module the statement names: "board.sim.cards" for `from board.sim.cards import X`
    line: int
    kind: Kind


@dataclass(frozen=True)
class ByName:
    """A call that imports a module named by a string, an arrow the graph cannot see."""

    path: str  # the calling file, relative to the root
    line: int
    call: str  # "importlib.import_module", "import_module" or "__import__"


def modules(root: Path = REPO, package: str = PACKAGE) -> dict[str, Path]:
    """Every file of the package by its dotted module name (a package by its folder's name)."""
    found: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Visitor(ast.NodeVisitor):
    """Collects one file's import statements with the kind each one is."""

    def __init__(self, module: str, is_package: bool) -> None:
        self.module = module
        self.is_package = is_package
        self.depth = 0  # functions we are inside of
        self.typing = 0  # `if TYPE_CHECKING:` bodies we are inside of
        self.found: list[tuple[str, str, int, Kind]] = []  # (dotted name, module named, line, kind)

    def _kind(self) -> Kind:
        if self.typing:
            return "typing"
        return "lazy" if self.depth else "top"

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.typing += 1
        for stmt in node.body:
            self.visit(stmt)
        self.typing -= 1
        for stmt in node.orelse:  # the `else:` of TYPE_CHECKING is what runs
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, alias.name, node.lineno, self._kind()))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        prefix = self._absolute(node)
        for alias in node.names:
            # `from x import y`: y may be a module (x.y) or a name in x; resolve() tells which
            self.found.append((f"{prefix}.{alias.name}", prefix, node.lineno, self._kind()))

    def _absolute(self, node: ast.ImportFrom) -> str:
        """The module a `from ... import` names, relative imports made absolute."""
        if not node.level:
            return node.module or ""
        base = self.module.split(".")
        if not self.is_package:
            base = base[:-1]  # a module's `.` is its package
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def imports(root: Path = REPO, package: str = PACKAGE) -> list[Import]:
    """Every import statement of the package's files, one entry per imported name."""
    out: list[Import] = []
    for module, path in modules(root, package).items():
        visitor = _Visitor(module, path.name == "__init__.py")
        visitor.visit(_parse(path))
        rel = path.relative_to(root).as_posix()
        for dotted, named, line, kind in visitor.found:
            out.append(Import(module, rel, dotted, named, line, kind))
    return out


def resolve(dotted: str, mods: Collection[str]) -> str | None:
    """The longest prefix of a dotted name that is a module of the package, or None."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in mods:
            return candidate
    return None


def arrows(root: Path = REPO, package: str = PACKAGE, kinds: Collection[Kind] = KINDS) -> Graph:
    """The graph: every file of the package and the files it imports (only imports of `kinds`)."""
    mods = modules(root, package)
    graph: Graph = {m: set() for m in mods}
    for imp in imports(root, package):
        if imp.kind not in kinds:
            continue
        target = resolve(imp.target, mods)
        if target is not None and target != imp.source:
            graph[imp.source].add(target)
    return graph


def circles(graph: Mapping[str, Collection[str]]) -> list[list[str]]:
    """The strongly connected components with more than one file, each sorted (Tarjan's
    algorithm, with an explicit stack so the depth of the graph does not matter)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def enter(v: str) -> Iterator[str]:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        return iter(sorted(graph.get(v, ())))

    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, enter(start))]
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    work.append((w, enter(w)))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:  # every child seen: v is done
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
                if low[v] == index[v]:
                    component: list[str] = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def shortest_cycle(graph: Mapping[str, Collection[str]], component: Collection[str]) -> list[str]:
    """A shortest cycle inside one component, first file repeated at the end (a -> b -> a);
    of equally short ones, the first found from the files in sorted order."""
    members = set(component)
    best: list[str] | None = None
    for start in sorted(members):
        prev: dict[str, str | None] = {start: None}
        queue = deque([start])
        last: str | None = None
        while queue and last is None:
            v = queue.popleft()
            for w in sorted(set(graph.get(v, ())) & members):
                if w == start:
                    last = v
                    break
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        if last is None:
            continue
        path = [last]
        while (before := prev[path[-1]]) is not None:
            path.append(before)
        cycle = [*reversed(path), start]
        if best is None or len(cycle) < len(best):
            best = cycle
    return best or []


def _call_name(func: ast.expr) -> str | None:
    """The name of a call that imports by a string, or None for any other call."""
    if isinstance(func, ast.Name) and func.id in ("import_module", "__import__"):
        return func.id
    if isinstance(func, ast.Attribute) and func.attr in ("import_module", "__import__"):
        owner = func.value.id if isinstance(func.value, ast.Name) else "?"
        return f"{owner}.{func.attr}"
    return None


def imports_by_name(root: Path = REPO, package: str = PACKAGE) -> list[ByName]:
    """Every call to import_module / __import__ in the package, whatever its argument (a name
    from a tuple hides the arrow as well as a literal does)."""
    out: list[ByName] = []
    for path in modules(root, package).values():
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Call) and (name := _call_name(node.func)):
                out.append(ByName(rel, node.lineno, name))
    return sorted(out, key=lambda b: (b.path, b.line))


def imports_from(top: str, root: Path = REPO, package: str = PACKAGE) -> list[Import]:
    """The imports of the package's files from another top-level package (board/ by default)."""
    return [i for i in imports(root, package) if i.module.split(".")[0] == top]


def report(root: Path = REPO, package: str = PACKAGE) -> str:
    """What `python -m tests.importgraph` prints."""
    graph = arrows(root, package)
    found = circles(graph)
    lines = [f"files {len(graph)}, arrows {sum(map(len, graph.values()))}, circles {len(found)}"]
    for kinds in (("top",), ("top", "lazy")):
        partial = arrows(root, package, kinds)
        lines.append(
            f"  {' + '.join(kinds)} only: arrows {sum(map(len, partial.values()))},"
            f" circles {len(circles(partial))}"
        )
    for component in found:
        lines.append(f"circle of {len(component)} files: {' -> '.join(shortest_cycle(graph, component))}")
        lines.append(f"  {', '.join(component)}")
    named: dict[tuple[str, int, str, str], list[str]] = {}
    for imp in imports_from("board", root, package):
        name = imp.target.removeprefix(f"{imp.module}.")
        named.setdefault((imp.path, imp.line, imp.kind, imp.module), []).append(name)
    for (path, line, kind, module), targets in named.items():
        lines.append(f"board import: {path}:{line} ({kind}) {module}: {', '.join(targets)}")
    for call in imports_by_name(root, package):
        lines.append(f"import by name: {call.path}:{call.line} {call.call}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
