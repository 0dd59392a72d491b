"""Runs the libFuzzer smoke test of the frame decoder (c_ext/fuzz_frame.c).

Uses `make -f mk/c_ext.mk fuzz-smoke` (which installs clang if it can), or
clang directly when make is absent; skips only if clang cannot be had at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE_SECONDS = int(os.environ.get("FUZZ_SMOKE_SECONDS", "20"))
NO_CLANG = (
    "clang with libFuzzer is not available and could not be installed: install the "
    "Debian packages `clang` and `libclang-rt-<N>-dev` (`make -f mk/c_ext.mk fuzz-deps`)"
)
# Same flags as mk/c_ext.mk, for machines without make.
FUZZ_CFLAGS = [
    "-g",
    "-O1",
    "-std=c11",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-fsanitize=fuzzer,address,undefined",
    "-fno-sanitize-recover=all",
    "-Ic_ext",
]
FUZZ_SRCS = ["c_ext/fuzz_frame.c", "c_ext/frame.c", "c_ext/checksum.c"]


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


# Installing clang may take minutes on a fresh machine; the fuzz run itself
# is SMOKE_SECONDS plus a few seconds of compiling.
@pytest.mark.timeout(900)
def test_fuzz_smoke() -> None:
    make = shutil.which("make")
    if make:
        deps = _run([make, "-f", "mk/c_ext.mk", "fuzz-deps"], timeout=840)
        if deps.returncode != 0 or not shutil.which("clang"):
            pytest.skip(f"{NO_CLANG}\n{_tail(deps, 10)}")
        proc = _run(
            [make, "-f", "mk/c_ext.mk", "fuzz-smoke", f"FUZZ_SMOKE_SECONDS={SMOKE_SECONDS}"],
            timeout=SMOKE_SECONDS + 240,
        )
    else:
        clang = shutil.which("clang")
        if not clang:
            pytest.skip(NO_CLANG)
        out = ROOT / "build" / "fuzz"
        (out / "corpus").mkdir(parents=True, exist_ok=True)
        built = _run([clang, *FUZZ_CFLAGS, *FUZZ_SRCS, "-o", str(out / "fuzz_frame")], 240)
        assert built.returncode == 0, _tail(built)
        proc = _run(
            [
                str(out / "fuzz_frame"),
                f"-max_total_time={SMOKE_SECONDS}",
                "-timeout=10",
                f"-artifact_prefix={out}/",
                str(out / "corpus"),
                "c_ext/corpus",
            ],
            timeout=SMOKE_SECONDS + 120,
        )
    assert proc.returncode == 0, f"fuzzer failed (crash input in build/fuzz/):\n{_tail(proc)}"
    assert "Done " in proc.stderr, _tail(proc)  # it really ran, not just built
