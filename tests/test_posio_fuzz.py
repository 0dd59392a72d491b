"""Runs the libFuzzer smoke test of the C extension: the frame decoder
(c_ext/fuzz_frame.c) and the printer raster code (c_ext/fuzz_raster.c).

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
# The total for both targets, split evenly between them (as in mk/c_ext.mk).
SMOKE_SECONDS = int(os.environ.get("FUZZ_SMOKE_SECONDS", "20"))
NO_CLANG = (
    "clang with libFuzzer is not available and could not be installed: install the "
    "Debian packages `clang` and `libclang-rt-<N>-dev` (`make -f mk/c_ext.mk fuzz-deps`)"
)
# Same flags, sources and seeds as mk/c_ext.mk, for machines without make.
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
TARGETS = {
    "frame": (["c_ext/frame.c", "c_ext/checksum.c"], "c_ext/corpus"),
    "raster": (["c_ext/raster.c"], "c_ext/corpus_raster"),
}


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 40) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


def _run_without_make(clang: str) -> list[subprocess.CompletedProcess[str]]:
    out = ROOT / "build" / "fuzz"
    share = -(-SMOKE_SECONDS // len(TARGETS))
    runs = []
    for name, (srcs, seeds) in TARGETS.items():
        (out / name / "corpus").mkdir(parents=True, exist_ok=True)
        binary = out / f"fuzz_{name}"
        built = _run([clang, *FUZZ_CFLAGS, f"c_ext/fuzz_{name}.c", *srcs, "-o", str(binary)], 240)
        assert built.returncode == 0, _tail(built)
        proc = _run(
            [
                str(binary),
                f"-max_total_time={share}",
                "-timeout=10",
                f"-artifact_prefix={out}/{name}-",
                str(out / name / "corpus"),
                seeds,
            ],
            timeout=share + 120,
        )
        runs.append(proc)
        if proc.returncode != 0:
            break
    return runs


# Installing clang may take minutes on a fresh machine; the fuzz runs
# themselves are SMOKE_SECONDS plus a few seconds of compiling.  Each target
# runs its seeds first, so a seed that trips a sanitizer fails every run
# (c_ext/corpus_raster crashed at raster.c:73 under UBSan before the fix).
@pytest.mark.timeout(900)
def test_fuzz_smoke() -> None:
    make = shutil.which("make")
    if make:
        deps = _run([make, "-f", "mk/c_ext.mk", "fuzz-deps"], timeout=840)
        if deps.returncode != 0 or not shutil.which("clang"):
            pytest.skip(f"{NO_CLANG}\n{_tail(deps, 10)}")
        smoke = [make, "-f", "mk/c_ext.mk", "fuzz-smoke", f"FUZZ_SMOKE_SECONDS={SMOKE_SECONDS}"]
        runs = [_run(smoke, timeout=SMOKE_SECONDS + 240)]
    else:
        clang = shutil.which("clang")
        if not clang:
            pytest.skip(NO_CLANG)
        runs = _run_without_make(clang)
    for proc in runs:
        assert proc.returncode == 0, f"fuzzer failed (crash input in build/fuzz/):\n{_tail(proc)}"
    # Each target really ran, not just built.
    assert sum(proc.stderr.count("Done ") for proc in runs) == len(TARGETS), _tail(runs[-1])
