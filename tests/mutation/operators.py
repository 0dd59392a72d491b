"""The mutants of one source file: small faults of the kind a future change makes.

Each operator finds a spot in the module's syntax tree and rewrites the source text of that
node only, so a mutant's diff is one line (or one expression) and reads like a bad commit:
a flipped comparison, `and` for `or`, a number off by one, a counter dropped, a call skipped,
a member dropped from a set of states or from an SQL `IN (...)` list, `True` for `False`.

Not mutated, because a change there is either caught by the interpreter at once or says
nothing about the money: docstrings, type annotations, arguments of log calls, the message
of a raised exception, `assert` statements, `__all__`, the options of `@dataclass(...)` (`frozen=True`
forbids assignments no code makes), and lines marked `# pragma: no mutate`.

A mutant's key names it stably across unrelated edits of the file: the function it is in,
the operator, a hash of the mutated line's text and its index among equal spots, never the
line number (which moves when code above it changes).
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

LOG_NAMES = frozenset({"log", "logger", "_log", "LOG", "logging"})
SKIP_PRAGMA = "pragma: no mutate"

_COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_BINOP_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mult,
    ast.Mod: ast.FloorDiv,
}
# An SQL list of quoted values: `IN ('A', 'B')` or `NOT IN ('A', 'B')`.
_SQL_IN_LIST = re.compile(r"\bIN\s*\(((?:\s*'[^']*'\s*,)+\s*'[^']*'\s*)\)", re.IGNORECASE)


@dataclass(frozen=True)
class Mutant:
    """One fault in one file: where it is, what it does, and the whole mutated source."""

    module: str  # the file's path relative to the repository
    key: str  # stable name (see the module docstring)
    line: int
    operator: str
    description: str
    original_line: str
    mutated_source: str


@dataclass(frozen=True)
class _Edit:
    node: ast.AST
    operator: str
    description: str
    replacement: str  # new text for the node's span


def _qualname_map(tree: ast.Module) -> dict[int, str]:
    """Line -> the dotted name of the innermost function or class defining it."""
    names: dict[int, str] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}.{child.name}" if prefix else child.name
                for line in range(child.lineno, (child.end_lineno or child.lineno) + 1):
                    names[line] = name
                walk(child, name)
            else:
                walk(child, prefix)

    walk(tree, "")
    return names


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes whose whole subtree is not mutated (see the module docstring)."""
    skipped: set[int] = set()

    def skip(node: ast.AST | None) -> None:
        if node is not None:
            skipped.update(id(n) for n in ast.walk(node))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            skip(body[0])  # a docstring
        if isinstance(node, ast.AnnAssign):
            skip(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            skip(node.returns)
            for arg in [*node.args.args, *node.args.posonlyargs, *node.args.kwonlyargs,
                        node.args.vararg, node.args.kwarg]:
                if arg is not None:
                    skip(arg.annotation)
        elif isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                if _is_dataclass_options(decorator):
                    skip(decorator)  # frozen=, slots=: guards against code not yet written
        elif isinstance(node, ast.Assert | ast.JoinedStr):
            skip(node)  # an f-string's parts carry no positions of their own in 3.11
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for arg in node.exc.args:
                if isinstance(arg, ast.Constant | ast.JoinedStr):
                    skip(arg)
        elif _never_mutated(node):
            skip(node)
    return skipped


def _never_mutated(node: ast.AST) -> bool:
    """A log call, `__all__`, an `if TYPE_CHECKING:` block."""
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        return _is_log_call(node.value)
    if isinstance(node, ast.Call):
        return _is_log_call(node)
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
        and node.test.id == "TYPE_CHECKING"


def _is_dataclass_options(decorator: ast.expr) -> bool:
    """`@dataclass(frozen=True, ...)`: its options only forbid what no code does (assigning to a
    field), so flipping them gives mutants only a test of the forbidden assignment could kill."""
    if not isinstance(decorator, ast.Call):
        return False
    func = decorator.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name == "dataclass"


def _is_log_call(call: ast.Call) -> bool:
    func = call.func
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) \
        and func.value.id in LOG_NAMES


def _with(node: ast.AST, **changes: object) -> ast.AST:
    """A shallow copy of node with some fields changed, unparsed later."""
    clone = type(node)(**{f: getattr(node, f) for f in node._fields})
    for name, value in changes.items():
        setattr(clone, name, value)
    return clone


def _edits(tree: ast.Module) -> Iterator[_Edit]:
    skipped = _skipped_nodes(tree)
    members = _enum_members(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Set | ast.Tuple | ast.List | ast.Dict):
            # A row inside a table is mutated as a whole (dropped), not element by element.
            for row in getattr(node, "elts", None) or getattr(node, "values", []):
                if isinstance(row, ast.Tuple):
                    skipped.add(id(row))
        yield from _node_edits(node)
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) \
                and isinstance(node.value, ast.Name) and node.attr.isupper():
            siblings = members.get(node.value.id, [])
            if len(siblings) >= 2:
                other = siblings[(siblings.index(node.attr) + 1) % len(siblings)]
                yield _Edit(node, "enum", f"{node.value.id}.{node.attr} -> {node.value.id}.{other}",
                            f"{node.value.id}.{other}")


def _enum_members(tree: ast.Module) -> dict[str, list[str]]:
    """Name -> the UPPER_CASE attributes the module reads from it (S.PENDING, TxnKind.SALE)."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.attr.isupper() and node.value.id[:1].isupper():
            found.setdefault(node.value.id, set()).add(node.attr)
    return {name: sorted(attrs) for name, attrs in found.items()}


def _node_edits(node: ast.AST) -> Iterator[_Edit]:
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            swapped = _COMPARE_SWAP.get(type(op))
            if swapped is not None:
                ops = list(node.ops)
                ops[i] = swapped()
                yield _Edit(node, "compare", f"{_op_text(op)} -> {_op_text(swapped())}",
                            ast.unparse(_with(node, ops=ops)))
    elif isinstance(node, ast.BoolOp):
        other = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        yield _Edit(node, "boolean", f"{_op_text(node.op)} -> {_op_text(other)}",
                    ast.unparse(_with(node, op=other)))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        yield _Edit(node, "not", "not dropped", ast.unparse(node.operand))
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAP \
            and not _is_text_formatting(node):
        other = _BINOP_SWAP[type(node.op)]()
        yield _Edit(node, "arithmetic", f"{_op_text(node.op)} -> {_op_text(other)}",
                    ast.unparse(_with(node, op=other)))
    elif isinstance(node, ast.AugAssign) and type(node.op) in (ast.Add, ast.Sub):
        other = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
        yield _Edit(node, "counter", f"{_op_text(node.op)}= -> {_op_text(other)}=",
                    ast.unparse(_with(node, op=other)))
        yield _Edit(node, "counter", "update dropped", "pass")
    elif isinstance(node, ast.Constant):
        yield from _constant_edits(node)
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call | ast.Await):
        yield _Edit(node, "call", "call dropped", "pass")
    elif isinstance(node, ast.Return) and node.value is not None \
            and not (isinstance(node.value, ast.Constant) and node.value.value is None):
        yield _Edit(node, "return", "returns None", "return None")
    elif isinstance(node, ast.Break):
        yield _Edit(node, "loop", "break -> continue", "continue")
    elif isinstance(node, ast.Continue):
        yield _Edit(node, "loop", "continue -> break", "break")
    elif isinstance(node, ast.Set | ast.Tuple | ast.List) and len(node.elts) >= 2 \
            and all(_is_table_value(e) for e in node.elts) \
            and not isinstance(getattr(node, "ctx", None), ast.Store):
        for i, element in enumerate(node.elts):
            rest = node.elts[:i] + node.elts[i + 1:]
            yield _Edit(node, "member", f"{ast.unparse(element)} dropped from the collection",
                        ast.unparse(_with(node, elts=rest)))
    elif isinstance(node, ast.Dict) and len(node.keys) >= 2 \
            and all(k is not None and _is_table_value(k) for k in node.keys) \
            and all(_is_table_value(v) for v in node.values):
        yield from _table_edits(node)


def _is_table_value(node: ast.AST) -> bool:
    """A constant, an enum member (`S.PENDING`), or a tuple of them: what tables are made of."""
    if isinstance(node, ast.Tuple):
        return all(_is_table_value(e) for e in node.elts)
    return isinstance(node, ast.Constant) or (
        isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name))


def _table_edits(node: ast.Dict) -> Iterator[_Edit]:
    """A row dropped from a table, and a row given another row's result."""
    keys, values = node.keys, node.values
    for i, key in enumerate(keys):
        rest_keys, rest_values = keys[:i] + keys[i + 1:], values[:i] + values[i + 1:]
        yield _Edit(node, "table", f"row {ast.unparse(key)} dropped",
                    ast.unparse(_with(node, keys=rest_keys, values=rest_values)))
        mine = ast.unparse(values[i])
        other = next((v for v in values[i + 1:] + values[:i] if ast.unparse(v) != mine), None)
        if other is not None:
            swapped = [*values[:i], other, *values[i + 1:]]
            yield _Edit(node, "table", f"row {ast.unparse(key)} gives {ast.unparse(other)}",
                        ast.unparse(_with(node, values=swapped)))


def _is_text_formatting(node: ast.BinOp) -> bool:
    """`"..." % x` and string concatenation: a change there only alters words."""
    return any((isinstance(side, ast.Constant) and isinstance(side.value, str))
               or isinstance(side, ast.JoinedStr) for side in (node.left, node.right))


def _constant_edits(node: ast.Constant) -> Iterator[_Edit]:
    value = node.value
    if isinstance(value, bool):
        yield _Edit(node, "constant", f"{value} -> {not value}", repr(not value))
    elif isinstance(value, int):
        yield _Edit(node, "constant", f"{value} -> {value + 1}", repr(value + 1))
        if value != 0:
            yield _Edit(node, "constant", f"{value} -> {value - 1}", repr(value - 1))
    elif isinstance(value, str):
        for match in _SQL_IN_LIST.finditer(value):
            items = [item.strip() for item in match.group(1).split(",")]
            for i, item in enumerate(items):
                narrowed = ", ".join(items[:i] + items[i + 1:])
                new = value[:match.start(1)] + narrowed + value[match.end(1):]
                yield _Edit(node, "sql", f"{item} dropped from an SQL IN list", repr(new))
        if 1 <= len(value) <= 4 and value.strip() and "\n" not in value:
            yield _Edit(node, "constant", f"{value!r} -> 'XX'" if value != "XX" else "'XX' -> 'YY'",
                        repr("XX" if value != "XX" else "YY"))


def _op_text(op: ast.AST) -> str:
    return {
        ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
        ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
        ast.And: "and", ast.Or: "or", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
        ast.FloorDiv: "//", ast.Mod: "%",
    }[type(op)]


def _line_offsets(source: str) -> list[int]:
    offsets, total = [0], 0
    for line in source.splitlines(keepends=True):
        total += len(line.encode())
        offsets.append(total)
    return offsets


def _replace_span(source: bytes, offsets: list[int], node: ast.AST, text: str) -> bytes:
    # ast columns are UTF-8 byte offsets, so the splice is done on bytes.
    start = offsets[node.lineno - 1] + node.col_offset
    end = offsets[node.end_lineno - 1] + node.end_col_offset
    replacement = text
    if "\n" in source[start:end].decode() or (start != end and _needs_parens(node)):
        replacement = f"({text})" if not isinstance(node, ast.stmt) else text
    return source[:start] + replacement.encode() + source[end:]


def _needs_parens(node: ast.AST) -> bool:
    """An expression replaced inside a larger one keeps its own precedence."""
    return isinstance(node, ast.BoolOp | ast.BinOp | ast.Compare | ast.UnaryOp)


def mutants(module: str, source: str) -> list[Mutant]:
    """Every mutant of one file, in source order."""
    tree = ast.parse(source)
    lines = source.splitlines()
    qualnames = _qualname_map(tree)
    offsets = _line_offsets(source)
    raw = source.encode()
    found: list[Mutant] = []
    seen: dict[str, int] = {}
    produced: set[str] = set()
    edits = sorted(_edits(tree), key=lambda e: (e.node.lineno, e.node.col_offset, e.operator))
    for edit in edits:
        line_text = lines[edit.node.lineno - 1]
        if SKIP_PRAGMA in line_text:
            continue
        mutated = _replace_span(raw, offsets, edit.node, edit.replacement).decode()
        if mutated == source or mutated in produced:
            continue  # the same fault reached by two operators is one mutant
        produced.add(mutated)
        try:
            ast.parse(mutated)
        except SyntaxError:
            continue
        where = qualnames.get(edit.node.lineno, "<module>")
        digest = hashlib.sha1(f"{line_text.strip()}|{edit.description}".encode()).hexdigest()[:8]
        base = f"{module}::{where}::{edit.operator}::{digest}"
        index = seen.get(base, 0)
        seen[base] = index + 1
        found.append(Mutant(module, f"{base}::{index}", edit.node.lineno, edit.operator,
                            edit.description, line_text.strip(), mutated))
    return found


def diff(mutant: Mutant, original: str) -> str:
    """The mutant as a unified diff against the original file."""
    import difflib

    return "".join(difflib.unified_diff(
        original.splitlines(keepends=True), mutant.mutated_source.splitlines(keepends=True),
        fromfile=f"a/{mutant.module}", tofile=f"b/{mutant.module}", n=1))
