"""The app layer stays a house a newcomer can read (issue 15): no import circle among the files
of firmware/, nothing imported from board/, no module imported by a name the graph cannot see.

The allow-lists below are ratchets: they hold exactly what is left today and are compared with
`==`, so a fix that removes a circle or an import must shrink them in the same commit, and nothing
new can slip in. Issue 15's plan empties the first two for good; `python -m tests.importgraph`
prints the counts and names the arrows to cut.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.importgraph import (
    REPO,
    arrows,
    circles,
    imports,
    imports_by_name,
    imports_from,
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
