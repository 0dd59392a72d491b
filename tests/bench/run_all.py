"""`make bench`: every benchmark in tests/bench, one after the other, all output printed.

bench_core runs in this process (its main() returns the figures); the others run as
subprocesses, as they are written to. Figures only: the exit status says whether each ran.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # `import firmware` (and board, c_ext) from the repo root
sys.path.insert(0, str(HERE))

import bench_core  # noqa: E402


def banner(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}", flush=True)


def run_script(path: Path) -> int:
    """Run one benchmark script with this interpreter from the repo root; its output streams through."""
    proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, check=False)
    return proc.returncode


def main() -> int:
    started = time.perf_counter()
    failures: list[str] = []
    banner("bench_core: sale, fsyncs per sale, start-up recovery, settlement totals")
    try:
        bench_core.main()
    except Exception as exc:  # keep going: the other benchmarks still have something to say
        print(f"bench_core failed: {exc!r}", flush=True)
        failures.append("bench_core")
    sys.stdout.flush()
    banner("bench_chip: a chip sale, the terminal's own time and end to end over PC/SC")
    if run_script(HERE / "bench_chip.py") != 0:
        failures.append("bench_chip")
    banner("bench_posio: the C extension against its pure-Python twin")
    if run_script(HERE / "bench_posio.py") != 0:
        failures.append("bench_posio")
    banner("bench_printer: one sale receipt, text vs raster vs python-escpos on its own")
    if run_script(HERE / "bench_printer.py") != 0:
        failures.append("bench_printer")
    banner("bench_keys: key press to display frame on ptys, and painter time")
    if run_script(HERE / "bench_keys.py") != 0:
        failures.append("bench_keys")
    banner("bench_panel: cold start to the idle screen, idle CPU, memory after 1,000 sales")
    if run_script(HERE / "bench_panel.py") != 0:
        failures.append("bench_panel")
    banner("bench_keystore: a sale's key work through PKCS#11 (SoftHSM2, p11-kit) against in-process crypto")
    if run_script(HERE / "bench_keystore.py") != 0:
        failures.append("bench_keystore")
    banner("bench_tls: TLS to the host on loopback: the handshake, the cost per message")
    if run_script(HERE / "bench_tls.py") != 0:
        failures.append("bench_tls")
    banner("bench_qemu: the firmware in a QEMU guest: power-on to idle, recovery, key to frame")
    if run_script(HERE / "bench_qemu.py") != 0:
        failures.append("bench_qemu")
    print(f"\nall benchmarks: {time.perf_counter() - started:.0f} s"
          + (f"; FAILED to run: {', '.join(failures)}" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
