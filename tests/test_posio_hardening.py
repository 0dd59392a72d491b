"""Checks that the built C extension _posio is hardened: full RELRO (a GNU_RELRO
segment and BIND_NOW), stack canaries and _FORTIFY_SOURCE=2 as compiled, read
from the .so itself with readelf (Debian package binutils) and its build record.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from c_ext import posio  # noqa: E402

MODULE = Path(posio.BUILD_INFO["module"])
READELF = shutil.which("readelf")
needs_readelf = pytest.mark.skipif(
    READELF is None, reason="readelf is missing: install the Debian package `binutils`"
)


def _readelf(*options: str) -> str:
    assert READELF is not None
    proc = subprocess.run(
        [READELF, "--wide", *options, str(MODULE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@needs_readelf
def test_full_relro() -> None:
    # GNU_RELRO: the loader makes the GOT read-only after relocation; BIND_NOW
    # makes it relocate everything at load, so nothing stays writable later.
    assert re.search(r"^\s*GNU_RELRO\s", _readelf("--program-headers"), re.MULTILINE)
    dynamic = _readelf("--dynamic")
    flags = re.findall(r"\((FLAGS|FLAGS_1)\)\s+(.*)$", dynamic, re.MULTILINE)
    assert any(
        (tag == "FLAGS" and "BIND_NOW" in value.split())
        or (tag == "FLAGS_1" and "NOW" in value.split())
        for tag, value in flags
    ), dynamic


@needs_readelf
def test_stack_protector_in_the_code() -> None:
    # The pump's pollfd array and the checksum's local words get canaries
    # under -fstack-protector-strong; a smashed canary calls __stack_chk_fail.
    symbols = _readelf("--dyn-syms")
    assert re.search(r"\bUND __stack_chk_fail\b", symbols), symbols


def test_build_record_names_the_hardening() -> None:
    flags = posio.BUILD_INFO["flags"].split()
    for flag in ("-fstack-protector-strong", "-D_FORTIFY_SOURCE=2", "-Wl,-z,relro,-z,now"):
        assert flag in flags
    # Not the flags asked for but what the compiler applied: glibc sets its
    # fortify level only when optimising, so a later -O0 or -U_FORTIFY_SOURCE
    # in Python's or the user's CFLAGS would read "no fortify" here.  (No
    # __*_chk symbol to look for: each copy, read and poll in _posio either
    # targets a caller's pointer of unknown size or is proven in bounds at
    # compile time, so glibc needs no run-time check there.)
    assert posio.BUILD_INFO["hardening"] == "stack-protector-strong fortify-2"


def test_diagnostics_shows_the_hardening() -> None:
    from firmware.diag.buildinfo import version_info

    lines = version_info("sim", "en").lines
    assert f"_posio hardening: {posio.BUILD_INFO['hardening']}" in lines
