"""The QEMU guest's compiled bytecode (board/qemu/bytecode.py), on the host: the prefix tree is
laid out where the interpreter looks for it, a refresh compiles what changed and nothing else,
and the bytecode the interpreter runs is never older than its source where the source may change
under a running guest (the repository's packages, checked-hash).
"""

from __future__ import annotations

import os
import py_compile
import subprocess
import sys
from pathlib import Path

from board.qemu import bytecode
from board.qemu.rig import firmware_command

CHECKED = py_compile.PycInvalidationMode.CHECKED_HASH
UNCHECKED = py_compile.PycInvalidationMode.UNCHECKED_HASH


def run_python(prefix: Path, code: str, cwd: Path) -> str:
    """`code` in a fresh interpreter that reads its .pyc files from `prefix` (as the guest does:
    -X pycache_prefix, no .pyc written) and prints where it loaded its module from."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run([sys.executable, "-X", f"pycache_prefix={prefix}", "-c", code], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def package(root: Path, value: str) -> Path:
    source = root / "pkg" / "mod.py"
    source.parent.mkdir(parents=True, exist_ok=True)
    (root / "pkg" / "__init__.py").touch()
    source.write_text(f"VALUE = {value!r}\n")
    return source


def test_the_tree_is_where_the_interpreter_looks(tmp_path: Path) -> None:
    source = package(tmp_path / "src", "a")
    prefix = tmp_path / "pyc"
    looked = run_python(prefix, "import importlib.util, sys; "
                        f"print(importlib.util.cache_from_source({str(source)!r}))", tmp_path)
    assert Path(looked) == bytecode.cache_path(prefix, source)


def test_a_refresh_compiles_what_changed_and_removes_what_is_gone(tmp_path: Path) -> None:
    source = package(tmp_path / "src", "a")
    prefix = tmp_path / "pyc"
    roots = [(tmp_path / "src", UNCHECKED)]
    first = bytecode.refresh(prefix, roots)
    assert (first.sources, first.compiled) == (2, 2)
    assert bytecode.refresh(prefix, roots).compiled == 0  # nothing changed: nothing compiled
    source.write_text("VALUE = 'b'\n")
    assert bytecode.refresh(prefix, roots).compiled == 1  # the edited source only
    # Another mode for the same bytes is another .pyc (its header says how it is checked).
    assert bytecode.refresh(prefix, [(tmp_path / "src", CHECKED)]).compiled == 2
    pyc = bytecode.cache_path(prefix, source)
    assert bytecode.is_fresh(pyc, source.read_bytes(), CHECKED)
    source.unlink()
    gone = bytecode.refresh(prefix, roots)
    assert gone.removed == 1 and not pyc.exists()


def test_the_interpreter_runs_the_prefix_tree_and_never_a_stale_checked_pyc(tmp_path: Path) -> None:
    src = tmp_path / "src"
    source = package(src, "built")
    prefix = tmp_path / "pyc"
    show = "import pkg.mod as m; print(m.VALUE, m.__spec__.cached)"
    bytecode.refresh(prefix, [(src, UNCHECKED)])
    # Unchecked: the .pyc alone is read, even against a source changed since (what `refresh`
    # then catches: the standard library and the venv only change by an install).
    source.write_text("VALUE = 'edited'\n")
    value, cached = run_python(prefix, show, src).split()
    assert value == "built" and Path(cached) == bytecode.cache_path(prefix, source)
    # Checked (the repository's packages): an edit after the build runs as edited.
    source.write_text("VALUE = 'built'\n")
    bytecode.refresh(prefix, [(src, CHECKED)])
    assert run_python(prefix, show, src).split()[0] == "built"
    source.write_text("VALUE = 'edited'\n")
    assert run_python(prefix, show, src).split()[0] == "edited"


def test_the_repository_is_compiled_checked_and_the_rest_unchecked() -> None:
    roots = dict(bytecode.source_roots())
    assert all(roots[bytecode.REPO / name] is CHECKED for name in bytecode.REPO_PACKAGES)
    stdlib = Path(os.path.dirname(os.__file__))
    assert roots[stdlib] is UNCHECKED
    assert any("site-packages" in root.parts and mode is UNCHECKED for root, mode in roots.items())


def test_the_firmware_reads_the_tree_it_is_given() -> None:
    assert "pycache_prefix" not in firmware_command()
    line = firmware_command(pycache=Path("/repo/var/qemu/pycache"))
    assert "exec .venv/bin/python -X pycache_prefix=/repo/var/qemu/pycache -m board.sim.firmware" in line
