"""The QEMU guest's compiled bytecode: a pycache prefix tree (PYTHONPYCACHEPREFIX) of .pyc files
for every module the guest's Python can import, built on the host and read by the guest.

Why: the guest runs the host's / read-only over 9p with PYTHONDONTWRITEBYTECODE, and the
repository's own modules have no .pyc on the host (the Makefile exports PYTHONDONTWRITEBYTECODE
too), so every boot compiled the firmware afresh under TCG: seconds of its boot. A prefix tree
is read instead of the __pycache__ folders beside the sources, so the source tree stays free of
.pyc files and every .pyc the guest reads comes from here.

Freshness (stale bytecode must never run):
- the repository's packages (firmware, drivers, board, c_ext: the sources a developer edits
  while a guest runs) are compiled `checked-hash`: the guest hashes each source it imports and
  compiles afresh in memory any whose hash differs from the .pyc's, so an edit made after the
  build is seen at once, at the price of reading those sources (a few hundred small files);
- the interpreter's standard library and the venv's site-packages (installed from the hashed
  locks, changed only by an install, never while a guest runs) are compiled `unchecked-hash`:
  the guest reads the .pyc alone. `refresh` keeps them fresh: it hashes every source and
  recompiles each whose .pyc carries another hash (the hash in an unchecked .pyc's header is
  the source's, taken when it was compiled), so each build of the image (image.build, at the
  start of every test session, bench and `make qemu-run`) recompiles what an install changed.

The compiling runs in the guest's own interpreter (the repository's .venv/bin/python, over the
same paths the guest sees): the same magic number, the same source paths, the same prefix
layout (importlib's cache_from_source). `python -m board.qemu.bytecode PREFIX` does it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import py_compile
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GUEST_PYTHON = REPO / ".venv" / "bin" / "python"  # what the guest runs (board/qemu/rig.py)
# The repository's packages the guest imports from its working directory (the repo root).
REPO_PACKAGES = ("firmware", "drivers", "board", "c_ext")
# Never imported by the firmware: not worth compiling (an import of one compiles in memory).
SKIPPED_DIRS = frozenset({"__pycache__", "test", "tests", "idle_test", "idlelib", "tkinter",
                          "turtledemo", "lib2to3", "ensurepip", "site-packages"})
_HASH_FLAGS = {  # the .pyc header's flags word (PEP 552): bit 0 hash-based, bit 1 check source
    py_compile.PycInvalidationMode.CHECKED_HASH: 0b11,
    py_compile.PycInvalidationMode.UNCHECKED_HASH: 0b01,
}


@dataclass
class Refreshed:
    """What one refresh did: sources looked at, compiled now, that would not compile, stale
    .pyc files removed (their source gone), and its seconds."""

    sources: int = 0
    compiled: int = 0
    failed: int = 0
    removed: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return (f"{self.sources} sources, {self.compiled} compiled, {self.failed} would not "
                f"compile, {self.removed} stale removed: {self.seconds:.1f} s")


def cache_path(prefix: Path, source: Path) -> Path:
    """Where the interpreter looks for `source`'s .pyc under a pycache prefix (CPython's
    importlib._bootstrap_external.cache_from_source with sys.pycache_prefix set)."""
    head, tail = os.path.split(os.path.abspath(source))
    name = f"{tail.rpartition('.')[0]}.{sys.implementation.cache_tag}.pyc"
    return prefix / head.lstrip(os.sep) / name


def source_roots() -> list[tuple[Path, py_compile.PycInvalidationMode]]:
    """The trees to compile and how: this interpreter's standard library and site-packages
    (unchecked), the repository's packages (checked). Run in the guest's interpreter."""
    unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
    roots: list[tuple[Path, py_compile.PycInvalidationMode]] = []
    for entry in sys.path:
        path = Path(entry)
        if entry and path.is_dir() and path.resolve() != REPO and "site-packages" in path.parts:
            roots.append((path, unchecked))
    roots.append((Path(os.path.dirname(os.__file__)), unchecked))  # the standard library
    roots += [(REPO / name, py_compile.PycInvalidationMode.CHECKED_HASH) for name in REPO_PACKAGES]
    return roots


def _sources(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".py"):
                yield Path(folder) / name


def is_fresh(pyc: Path, source: bytes, mode: py_compile.PycInvalidationMode) -> bool:
    """Whether `pyc` was compiled by this interpreter, in `mode`, from exactly `source`."""
    try:
        with open(pyc, "rb") as handle:
            header = handle.read(16)
    except OSError:
        return False
    expected = (importlib.util.MAGIC_NUMBER + _HASH_FLAGS[mode].to_bytes(4, "little")
                + importlib.util.source_hash(source))
    return header == expected


def refresh(prefix: Path, roots: list[tuple[Path, py_compile.PycInvalidationMode]]) -> Refreshed:
    """Compiles into `prefix` every source of `roots` whose .pyc is missing or was compiled from
    other bytes (or in another mode), and removes the .pyc files of sources that are gone."""
    started = time.monotonic()
    done = Refreshed()
    for root, mode in roots:
        if not root.is_dir():
            continue
        for source in _sources(root):
            done.sources += 1
            pyc = cache_path(prefix, source)
            try:
                data = source.read_bytes()
            except OSError:
                continue
            if is_fresh(pyc, data, mode):
                continue
            try:
                py_compile.compile(str(source), cfile=str(pyc), doraise=True,
                                   invalidation_mode=mode)
                done.compiled += 1
            except (py_compile.PyCompileError, OSError, ValueError):
                done.failed += 1  # not Python 3.11 (a template, a test fixture): never imported
    done.removed = _remove_orphans(prefix)
    done.seconds = time.monotonic() - started
    return done


def _remove_orphans(prefix: Path) -> int:
    """Removes the .pyc files whose source no longer exists (a module deleted or renamed)."""
    removed = 0
    suffix = f".{sys.implementation.cache_tag}.pyc"
    for folder, _dirs, files in os.walk(prefix):
        for name in files:
            if not name.endswith(suffix):
                continue
            pyc = Path(folder) / name
            source = Path(os.sep) / pyc.parent.relative_to(prefix) / (name[:-len(suffix)] + ".py")
            if not source.exists():
                pyc.unlink()
                removed += 1
    return removed


def build(prefix: Path, python: Path = GUEST_PYTHON, timeout: float = 900.0) -> str:
    """Refreshes the prefix tree in the guest's interpreter; returns its one-line summary.
    RuntimeError in words if it could not run."""
    try:
        done = subprocess.run(
            [str(python), "-m", "board.qemu.bytecode", str(prefix)], cwd=REPO,
            capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"compiling the guest's bytecode failed: {exc}") from None
    if done.returncode != 0:
        raise RuntimeError(f"compiling the guest's bytecode failed ({done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m board.qemu.bytecode", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prefix", type=Path, help="the pycache prefix tree to refresh")
    args = parser.parse_args(argv)
    print(refresh(args.prefix.resolve(), source_roots()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
