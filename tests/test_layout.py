"""The app layer stays a house a newcomer can read (issue 15): no import circle among the files
of firmware/, nothing imported from board/, no module imported by a name the graph cannot see;
README's layout table is the tree, and its "may import" column is the layering rule every import
of firmware/, drivers/, c_ext/ and board/ keeps; every package of firmware/ says what it owns.

The allow-lists below are ratchets: they hold exactly what is left today and are compared with
`==`, so a fix that removes a circle or an import must shrink them in the same commit, and nothing
new can slip in. Issue 15's plan empties the first two for good; `python -m tests.importgraph`
prints the counts and names the arrows to cut.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.importgraph import (
    REPO,
    arrows,
    circles,
    imports,
    imports_by_name,
    imports_from,
    modules,
    resolve,
    shortest_cycle,
)

ALLOWED_CIRCLES: set[frozenset[str]] = set()  # empty, for good

ALLOWED_BOARD_IMPORTS: set[tuple[str, str]] = set()  # empty, for good

# Files that call importlib.import_module / __import__: buildinfo loads the C extension by its
# name (c_ext is not in firmware/, the call hides no arrow of the graph).
IMPORTS_BY_NAME: set[str] = {"firmware/diag/buildinfo.py"}


def test_no_import_circle_among_the_files_of_firmware() -> None:
    graph = arrows()
    found = {frozenset(c) for c in circles(graph)}
    new = "\n".join(" -> ".join(shortest_cycle(graph, sorted(c))) for c in found - ALLOWED_CIRCLES)
    assert not new, f"a new import circle (cut one arrow of its shortest cycle):\n{new}"
    assert found == ALLOWED_CIRCLES, (
        "a circle is gone: take it out of ALLOWED_CIRCLES so it cannot come back:\n"
        + "\n".join(", ".join(sorted(c)) for c in ALLOWED_CIRCLES - found)
    )


def test_firmware_imports_nothing_from_board() -> None:
    found = imports_from("board")
    assert {(i.path, i.module) for i in found} == ALLOWED_BOARD_IMPORTS, "\n".join(
        f"{i.path}:{i.line} ({i.kind}) imports {i.target}" for i in found
    )


def test_no_firmware_module_is_imported_by_a_name_in_a_string() -> None:
    found = imports_by_name()
    assert {call.path for call in found} == IMPORTS_BY_NAME, "\n".join(
        f"{call.path}:{call.line} {call.call}" for call in found
    )


def _plant(root: Path, files: dict[str, str]) -> None:
    package = root / "plant"
    package.mkdir()
    for name, text in files.items():
        (package / name).write_text(text, encoding="utf-8")


def test_the_graph_sees_what_it_must(tmp_path: Path) -> None:
    """The checker itself, on a planted package: a circle through a lazy import, one through a
    TYPE_CHECKING import and a relative import, an import from board/, an importlib call."""
    _plant(tmp_path, {
        "__init__.py": '"""A planted package."""\n',
        "a.py": "from plant import b\n",
        "b.py": "def f():\n    from plant import a\n    return a\n",
        "c.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from plant.d import Thing\n"
            "else:\n"
            "    import json\n"
        ),
        "d.py": "from . import c\nclass Thing: ...\n",
        "e.py": (
            "import importlib\n"
            "import board.x\n"
            "def load(name):\n"
            "    return importlib.import_module(name)\n"
        ),
    })
    found = imports(tmp_path, "plant")
    kinds = {(i.source, i.target): i.kind for i in found}
    assert kinds[("plant.a", "plant.b")] == "top"
    assert kinds[("plant.b", "plant.a")] == "lazy"
    assert kinds[("plant.c", "plant.d.Thing")] == "typing"
    assert kinds[("plant.c", "json")] == "top"  # the else branch of TYPE_CHECKING runs
    assert kinds[("plant.d", "plant.c")] == "top"  # `from . import c`, made absolute

    graph = arrows(tmp_path, "plant")
    assert graph["plant.c"] == {"plant.d"}  # plant.d.Thing resolves to its file
    assert circles(graph) == [["plant.a", "plant.b"], ["plant.c", "plant.d"]]
    assert shortest_cycle(graph, ["plant.a", "plant.b"]) == ["plant.a", "plant.b", "plant.a"]
    assert circles(arrows(tmp_path, "plant", ("top",))) == []  # both circles need a lazy or typing arrow

    board = imports_from("board", tmp_path, "plant")
    assert [(i.path, i.module, i.line, i.kind) for i in board] == [("plant/e.py", "board.x", 2, "top")]
    by_name = imports_by_name(tmp_path, "plant")
    assert [(c.path, c.line, c.call) for c in by_name] == [("plant/e.py", 4, "importlib.import_module")]


def test_circles_finds_a_long_cycle_and_leaves_a_chain_alone() -> None:
    chain = {f"m{i}": {f"m{i + 1}"} for i in range(3000)} | {"m3000": set()}
    assert circles(chain) == []  # deep, and no recursion limit to hit
    ring = {**chain, "m3000": {"m0"}}
    assert [len(c) for c in circles(ring)] == [3001]


def test_python_m_firmware_app_runs() -> None:
    """The public command line stays under test even where the suite runs another entry point."""
    done = subprocess.run(
        [sys.executable, "-m", "firmware.app", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--board" in done.stdout


# ------------------------------------------------------------------ README's layout table

LIBRARIES = "the libraries above"  # in a "may import" cell: every row above the first firmware/app row
ANYTHING = "anything"  # in a "may import" cell: not checked (tests/)
TOP_FILES = "firmware/*.py"  # the row of the files directly in firmware/
NOT_ALLOWED = " may not import (README's layout table)"


@dataclass(frozen=True)
class Row:
    """One row of README's "## Layout" table: | `path` ... | owns | may import |."""

    path: str  # "firmware/engine", "firmware/*.py", "drivers/"
    may_import: str  # the third cell as written


def layout_rows(readme: str) -> list[Row]:
    """The table between `## Layout` and the next `## ` heading, header and rule skipped; a row's
    path is the first backticked token of its first cell."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows: list[Row] = []
    for line in section.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == "folder":  # the header
            continue
        path = re.search(r"`([^`]+)`", cells[0])
        assert path is not None and len(cells) == 3, f"a layout row needs `path` | owns | may import: {line}"
        rows.append(Row(path.group(1), cells[2]))
    return rows


def _covers(token: str, path: str) -> bool:
    """Whether a table path (a folder, a file, or firmware/*.py) holds a file of the repository."""
    if token == TOP_FILES:
        return path.startswith("firmware/") and path.count("/") == 1
    folder = token.rstrip("/")
    return path == folder or path.startswith(f"{folder}/")


def row_of(rows: list[Row], path: str) -> Row | None:
    """The most specific row holding a file: firmware/app/core/terminal.py is `firmware/app/core`."""
    holding = [row for row in rows if _covers(row.path, path)]
    return max(holding, key=lambda row: len(row.path.rstrip("/")), default=None)


def allowed(rows: list[Row], row: Row) -> list[str] | None:
    """The paths a row's files may import (besides the row's own files); None: anything."""
    if row.may_import == ANYTHING:
        return None
    tokens = re.findall(r"`([^`]+)`", row.may_import)
    if LIBRARIES in row.may_import:
        first_app = next(i for i, r in enumerate(rows) if r.path.startswith("firmware/app"))
        tokens += [r.path for r in rows[:first_app]]
    return tokens


def _ignored(root: Path) -> set[str]:
    """Folders .gitignore names (build/, var/ ...): outputs, not the repository's layout."""
    gitignore = root / ".gitignore"
    lines = gitignore.read_text(encoding="utf-8").splitlines() if gitignore.exists() else []
    return {line.strip().strip("/") for line in lines if line.strip().endswith("/")}


def table_problems(rows: list[Row], root: Path = REPO) -> list[str]:
    """What makes the table differ from the tree, in words (empty: the table is the tree)."""
    problems: list[str] = []
    paths = [row.path for row in rows]
    problems += [f"`{p}` has two rows" for p in sorted({p for p in paths if paths.count(p) > 1})]
    for row in rows:
        there = (any((root / "firmware").glob("*.py")) if row.path == TOP_FILES
                 else (root / row.path.rstrip("/")).exists())
        if not there:
            problems.append(f"`{row.path}` has a row but is not in the tree")
        if not row.may_import and row.path != "docs/":
            problems.append(f"`{row.path}` says nothing in its may-import cell")
    packages = {f"firmware/{init.parent.relative_to(root / 'firmware').as_posix()}"
                for init in (root / "firmware").rglob("__init__.py") if init.parent != root / "firmware"}
    want = packages | {TOP_FILES}
    have = {p for p in paths if p.startswith("firmware/")}
    problems += [f"`{p}` is a package of firmware/ without a row" for p in sorted(want - have)]
    problems += [f"`{p}` has a row but is not a package of firmware/" for p in sorted(have - want)]
    ignored = _ignored(root)
    for top in sorted(root.iterdir()):
        if (top.is_dir() and top.name != "firmware" and not top.name.startswith(".")
                and top.name not in ignored and any(top.rglob("*.py")) and f"{top.name}/" not in paths):
            problems.append(f"`{top.name}/` holds Python files but has no row")
    if "docs/" not in paths:
        problems.append("`docs/` has no row")
    return problems


def forbidden_imports(rows: list[Row], root: Path = REPO) -> list[str]:
    """Every import (top, lazy or typing) of a checked row's files that its may-import cell does
    not allow, with file, line and kind. Checked: the rows whose cell is not empty or "anything",
    so firmware/, drivers/, c_ext/ and board/; imports of the same row are always allowed."""
    tops = {row.path.split("/")[0] for row in rows}
    checked = sorted({row.path.split("/")[0] for row in rows if row.may_import not in ("", ANYTHING)})
    mods: dict[str, Path] = {}
    for top in sorted(tops):
        if (root / top).is_dir():
            mods.update(modules(root, top))
    problems: list[str] = []
    for top in checked:
        for imp in imports(root, top):
            target = resolve(imp.target, mods)
            if target is None or target == imp.source:
                continue  # the standard library, a third party, or itself
            path = mods[target].relative_to(root).as_posix()
            row = row_of(rows, imp.path)
            if row is None:
                problems.append(f"{imp.path}: no row of the table holds it")
                continue
            tokens = allowed(rows, row)
            if row_of(rows, path) is row or tokens is None or any(_covers(t, path) for t in tokens):
                continue
            where = f"{imp.path}:{imp.line} ({imp.kind})"
            problems.append(f"{where} imports {path}, which `{row.path}`{NOT_ALLOWED}")
    return problems


def test_the_readme_layout_table_is_the_tree() -> None:
    rows = layout_rows((REPO / "README.md").read_text(encoding="utf-8"))
    problems = table_problems(rows)
    assert not problems, "README.md's ## Layout table and the tree differ:\n" + "\n".join(problems)


def test_each_folder_imports_only_what_the_readme_allows() -> None:
    rows = layout_rows((REPO / "README.md").read_text(encoding="utf-8"))
    problems = forbidden_imports(rows)
    assert not problems, "\n".join(problems)


def test_every_package_of_firmware_says_what_it_owns() -> None:
    """A docstring that is not a placeholder, and no import: a re-export in a package's
    __init__.py would run on every import below it and hide where a name lives."""
    problems = []
    for init in sorted((REPO / "firmware").rglob("__init__.py")):
        rel = init.relative_to(REPO).as_posix()
        tree = ast.parse(init.read_text(encoding="utf-8"), rel)
        doc = ast.get_docstring(tree)
        if not doc or "placeholder" in doc.lower():
            problems.append(f"{rel}: no docstring saying what the package owns")
        problems += [f"{rel}:{node.lineno} imports" for node in ast.walk(tree)
                     if isinstance(node, ast.Import | ast.ImportFrom)]
    assert not problems, "\n".join(problems)


PLANTED_README = """# A planted repository

## Layout

| folder | owns | may import |
|---|---|---|
| `firmware/lib` | a library | `firmware/*.py` |
| `firmware/*.py` | top files | nothing else in firmware/ |
| `firmware/app` | the app | `firmware/` |
| `firmware/app/core` | the core | the libraries above |
| `firmware/gone` | a folder that went away | `firmware/*.py` |
| `drivers/` | drivers | `firmware/ports.py` |
| `tests/` | tests | anything |

## Next
"""


def test_the_layout_checks_catch_what_they_must(tmp_path: Path) -> None:
    """The table checks on a planted tree: a row for a folder that went away, a package and a
    top-level folder without a row, no docs/ row, forbidden imports (a library importing the
    app, the core importing the app above it, a driver importing more than the ports, lazily),
    while what the cells allow passes and ignored or hidden folders are not the layout."""
    files = {
        ".gitignore": "var/\n",
        "firmware/__init__.py": '"""Planted."""\n',
        "firmware/ports.py": "",
        "firmware/lib/__init__.py": "",
        "firmware/lib/a.py": "from firmware.ports import X\nfrom firmware.app.core import c\n",
        "firmware/app/__init__.py": "",
        "firmware/app/main.py": "from firmware.app.core import c\nfrom firmware.lib import a\n",
        "firmware/app/core/__init__.py": "",
        "firmware/app/core/c.py": "from firmware.lib import a\nfrom firmware.app import main\n",
        "firmware/emv/__init__.py": "from firmware import ports\n",
        "drivers/d.py": "from firmware.ports import X\ndef f():\n    from firmware.lib import a\n",
        "tests/t.py": "from firmware.app import main\n",
        "tools/x.py": "",
        "var/junk.py": "",
        ".hidden/h.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    rows = layout_rows(PLANTED_README)
    assert [row.path for row in rows][:2] == ["firmware/lib", TOP_FILES]
    assert allowed(rows, rows[3]) == ["firmware/lib", TOP_FILES]  # the libraries above
    assert table_problems(rows, tmp_path) == [
        "`firmware/gone` has a row but is not in the tree",
        "`firmware/emv` is a package of firmware/ without a row",
        "`firmware/gone` has a row but is not a package of firmware/",
        "`tools/` holds Python files but has no row",
        "`docs/` has no row",
    ]
    assert forbidden_imports(rows, tmp_path) == [
        f"drivers/d.py:3 (lazy) imports firmware/lib/a.py, which `drivers/`{NOT_ALLOWED}",
        "firmware/app/core/c.py:2 (top) imports firmware/app/main.py,"
        f" which `firmware/app/core`{NOT_ALLOWED}",
        "firmware/emv/__init__.py: no row of the table holds it",
        f"firmware/lib/a.py:2 (top) imports firmware/app/core/c.py, which `firmware/lib`{NOT_ALLOWED}",
    ]
