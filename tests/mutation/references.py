"""Where a module-level name is read: the lines whose tests speak for a table's mutant.

A mutant in a table, a set of states or an enum member runs at import, before any test, so
coverage cannot say which tests depend on it. The tests that do are those that run a line
reading the name: `if state in UNRESOLVED` in a function, `TxnKind.VOID` in a builder. A
name read by another module-level line (`CODES = {... for ... in _TABLE}`) passes its readers
on to the name that line defines, a few levels deep.
"""

from __future__ import annotations

import ast
from pathlib import Path

_DEPTH = 3


def _function_lines(tree: ast.Module) -> set[int]:
    return {line for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            for line in range(n.body[0].lineno, (n.end_lineno or n.lineno) + 1)}


def defined_names(tree: ast.Module) -> dict[int, set[str]]:
    """Line of a module-level (or class-level) statement -> the names it defines."""
    out: dict[int, set[str]] = {}

    def record(stmt: ast.stmt, names: set[str]) -> None:
        for line in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1):
            out.setdefault(line, set()).update(names)

    def targets(stmt: ast.stmt) -> set[str]:
        found: set[str] = set()
        nodes = stmt.targets if isinstance(stmt, ast.Assign) else \
            [stmt.target] if isinstance(stmt, ast.AnnAssign | ast.AugAssign) else []
        for node in nodes:
            found |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        return found

    for stmt in tree.body:
        if isinstance(stmt, ast.ClassDef):
            # The decorators and the class line define the class (`@dataclass(frozen=True)`).
            first = min((d.lineno for d in stmt.decorator_list), default=stmt.lineno)
            for line in range(first, stmt.body[0].lineno):
                out.setdefault(line, set()).add(stmt.name)
            for inner in stmt.body:
                if not isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef):
                    record(inner, targets(inner))  # read as Class.NAME
        elif not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            record(stmt, targets(stmt))
    return out


class ReferenceIndex:
    """Every read of every name in a tree of files, split by whether it runs in a function."""

    def __init__(self, root: Path, package: str = "firmware") -> None:
        self.in_functions: dict[str, set[tuple[str, int]]] = {}
        self.at_import: dict[str, set[tuple[str, int]]] = {}
        self.defines: dict[str, dict[int, set[str]]] = {}
        for path in sorted((root / package).rglob("*.py")):
            module = str(path.relative_to(root))
            tree = ast.parse(path.read_text())
            inside = _function_lines(tree)
            self.defines[module] = defined_names(tree)
            for node in ast.walk(tree):
                name = node.id if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) \
                    else node.attr if isinstance(node, ast.Attribute) else None
                if name is None:
                    continue
                where = self.in_functions if node.lineno in inside else self.at_import
                where.setdefault(name, set()).add((module, node.lineno))
        # Test functions that read a name themselves (a test pinning a table to the docs).
        self.test_reads: dict[str, set[str]] = {}
        for path in sorted((root / "tests").glob("test_*.py")) if (root / "tests").is_dir() else ():
            test_module = str(path.relative_to(root))
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) \
                        and node.name.startswith("test"):
                    for inner in ast.walk(node):
                        name = inner.id if isinstance(inner, ast.Name) \
                            else inner.attr if isinstance(inner, ast.Attribute) else None
                        if name is not None:
                            self.test_reads.setdefault(name, set()).add(
                                f"{test_module}::{node.name}")

    def tests_naming(self, names: set[str]) -> set[str]:
        """"tests/test_x.py::test_y" of every test function that reads one of `names` itself."""
        return {t for name in names for t in self.test_reads.get(name, set())}

    def names_behind(self, module: str, line: int) -> set[str]:
        """The names `module`'s `line` defines, and those of the tables built from them."""
        names = set(self.defines.get(module, {}).get(line, set()))
        for _ in range(_DEPTH):
            more = {n for name in names for other, other_line in self.at_import.get(name, set())
                    for n in self.defines.get(other, {}).get(other_line, set())}
            if more <= names:
                break
            names |= more
        return names

    def reading_lines(self, module: str, line: int) -> set[tuple[str, int]]:
        """(file, line) of every function line that reads what `module`'s `line` defines."""
        names = set(self.defines.get(module, {}).get(line, set()))
        seen: set[str] = set()
        found: set[tuple[str, int]] = set()
        for _ in range(_DEPTH):
            fresh = names - seen
            if not fresh:
                break
            seen |= fresh
            for name in fresh:
                found |= self.in_functions.get(name, set())
                for other, other_line in self.at_import.get(name, set()):
                    names |= self.defines.get(other, {}).get(other_line, set())
        return found

