"""Benchmark: the terminal with its keypad and LCD as a real process.

- cold start: process start to the idle screen drawn (the app writes --idle-file at its first
  frame), 5 runs from the sources (`make run`'s way: PYTHONDONTWRITEBYTECODE, every module
  compiled at start), then 5 with compiled bytecode (a device image's way: board/image compiles
  its root at build time; here a pycache prefix tree from board/qemu/bytecode.py); plus the top
  `python -X importtime` offenders of the app's imports;
- idle: CPU time, context switches (all threads) and bytes drawn over 30 s at the idle screen;
- resident memory at idle and after 1,000 sales driven over the ECR link (the LCD shows each).
Targets: cold start < 0.5 s, idle CPU near zero (clock redraw at most once per second),
RSS < 40 MB. Prints figures; no assertions.
"""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import MID, TID, TMK, provision  # noqa: E402

from board.qemu import bytecode  # noqa: E402
from board.sim.acquirer import SimulatorThread  # noqa: E402

COLD_RUNS = 5
# The headline figures of the last main(), name -> (value, unit), for the bench infrastructure:
# cold start (median), idle CPU over the idle window, RSS at idle, after the sales, and peak.
FIGURES: dict[str, tuple[float, str]] = {}
IDLE_SECONDS = float(os.environ.get("BENCH_IDLE_SECONDS", "30"))
SALES = int(os.environ.get("BENCH_SALES", "1000"))


class Drain(threading.Thread):
    """Reads the LCD's output off the pty so the terminal never blocks on it; counts bytes."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.bytes = 0

    def run(self) -> None:
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.bytes += len(data)


def start_terminal(data: Path, module: str = "firmware.app", pycache: Path | None = None
                   ) -> tuple[subprocess.Popen[bytes], float, int, Drain]:
    """Starts the app with the board panel on a pty; returns (proc, cold start s, ECR port, drain).
    module: the firmware as a device runs it, or board.sim.firmware where the ECR names test cards;
    pycache: a prefix tree of compiled bytecode to run from (None: compile from the sources)."""
    idle_file, ready = data / "idle", data / "ready"
    for f in (idle_file, ready):
        f.unlink(missing_ok=True)
    master, slave = pty.openpty()
    drain = Drain(master)
    drain.start()
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--data", str(data), "--panel", "board",
         "--idle-file", str(idle_file), "--ready-file", str(ready), "--ecr-port", "0",
         "--printer", "", "--reader", "", "--log-level", "WARNING"],
        cwd=ROOT, stdin=slave, stdout=slave, stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPYCACHEPREFIX=str(pycache)) if pycache else None,
    )
    os.close(slave)
    deadline = time.monotonic() + 30
    while not (idle_file.exists() and idle_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the terminal did not draw its idle screen")
        time.sleep(0.002)
    cold = float(idle_file.read_text()) - started
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the terminal did not become ready")
        time.sleep(0.01)
    return proc, cold, int(ready.read_text()), drain


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def context_switches(pid: int) -> int:
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue
        total += sum(int(n) for n in re.findall(r"ctxt_switches:\s+(\d+)", text))
    return total


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    match = re.search(rf"{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def memory_split(pid: int) -> str:
    """RSS split into anonymous memory (the process's own) and file-backed pages (code and
    shared libraries: Python, OpenSSL, SQLite ...), from /proc/PID/smaps_rollup."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    kb = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
    anon = kb.get("Anonymous", 0) / 1024
    return (f"anonymous {anon:.1f} MB, file-backed {kb.get('Rss', 0) / 1024 - anon:.1f} MB, "
            f"PSS {kb.get('Pss', 0) / 1024:.1f} MB")


def resident_files(pid: int, top: int = 6) -> str:
    """The mapped files with the most resident pages (shared libraries: Python, OpenSSL twice
    when cryptography's own is loaded beside the system's, SoftHSM ...), from /proc/PID/smaps."""
    by_file: dict[str, int] = {}
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = re.match(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$", line)
        if head:
            name = head.group(1)
        elif name.startswith("/") and (rss := re.match(r"^Rss:\s+(\d+) kB", line)):
            by_file[name] = by_file.get(name, 0) + int(rss.group(1))
    biggest = sorted(by_file.items(), key=lambda item: -item[1])[:top]
    return ", ".join(f"{Path(path).name} {kb / 1024:.1f}" for path, kb in biggest)


def importtime_offenders(top: int = 10) -> tuple[list[tuple[float, str]], list[tuple[float, str]]]:
    """(packages by cumulative ms, modules by self ms) from `python -X importtime` of the app.

    Packages: every imported top-level package other than the firmware's own (cryptography,
    asyncio, sqlite3 ...), by the cumulative time of its first import; modules: any module,
    ours included, by the time spent in its own body."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c",
         "import firmware.app.main, firmware.app.frontends.panel, firmware.ui.machine"],
        cwd=ROOT, capture_output=True, text=True, check=False)
    packages: dict[str, float] = {}
    modules: list[tuple[float, str]] = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)", line)
        if not m:
            continue
        own_us, cumulative_us, name = int(m.group(1)), int(m.group(2)), m.group(3)
        modules.append((own_us / 1000, name))
        root = name.split(".")[0]
        if root not in ("firmware", "board", "drivers", "c_ext") and "." not in name:
            packages[root] = max(packages.get(root, 0.0), cumulative_us / 1000)
    by_package = sorted(((ms, name) for name, ms in packages.items()), reverse=True)[:top]
    return by_package, sorted(modules, reverse=True)[:top]


def ecr_sales(port: int, count: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        f = sock.makefile("rwb")
        started = time.monotonic()
        for i in range(count):
            f.write((json.dumps({"op": "sale", "id": i, "amount": 100 + i % 50,
                                 "card": "cup_credit"}) + "\n").encode())
            f.flush()
            answer = json.loads(f.readline())
            if not answer.get("ok"):
                raise RuntimeError(f"sale {i} failed: {answer}")
        return time.monotonic() - started


def main() -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sim = SimulatorThread(tmp / "ledger.db", terminals=[(TID, MID, TMK)])
        sim.start()
        try:
            data = provision(tmp / "terminal", sim.port, reply_timeout=5.0)
            colds = []
            for _ in range(COLD_RUNS):
                proc, cold, _, _ = start_terminal(data)
                colds.append(cold)
                stop(proc)
            figures["cold_start_median_s"] = statistics.median(colds)
            print(f"cold start to idle screen: median {statistics.median(colds) * 1000:.0f} ms, "
                  f"min {min(colds) * 1000:.0f} ms, max {max(colds) * 1000:.0f} ms "
                  f"({COLD_RUNS} runs from the sources; target < 500 ms)")
            compiled = tmp / "pycache"
            bytecode.build(compiled)
            colds = []
            for _ in range(COLD_RUNS):
                proc, cold, _, _ = start_terminal(data, pycache=compiled)
                colds.append(cold)
                stop(proc)
            figures["cold_start_bytecode_median_s"] = statistics.median(colds)
            print(f"  with compiled bytecode: median {statistics.median(colds) * 1000:.0f} ms, "
                  f"min {min(colds) * 1000:.0f} ms, max {max(colds) * 1000:.0f} ms "
                  f"({COLD_RUNS} runs, as a device image runs it)")
            by_package, by_module = importtime_offenders()
            print("python -X importtime, top offenders (one cold import; ms):")
            print("  packages, cumulative:   " + ", ".join(f"{n} {ms:.0f}" for ms, n in by_package))
            print("  modules, own body:      " + ", ".join(f"{n} {ms:.1f}" for ms, n in by_module))

            proc, _, port, drain = start_terminal(data, "board.sim.firmware")  # the sales name test cards
            try:
                time.sleep(2.0)  # let start-up work (sign-on) finish
                cpu0, ctx0, bytes0 = cpu_seconds(proc.pid), context_switches(proc.pid), drain.bytes
                time.sleep(IDLE_SECONDS)
                cpu = cpu_seconds(proc.pid) - cpu0
                ctx = context_switches(proc.pid) - ctx0
                drawn = drain.bytes - bytes0
                figures.update(idle_cpu_s=cpu, idle_ctx_switches=ctx, idle_bytes_drawn=drawn)
                print(f"idle {IDLE_SECONDS:.0f} s: CPU {cpu * 1000:.0f} ms, {ctx} context switches "
                      f"(all threads), {drawn} bytes drawn on the LCD")
                idle_rss = rss_mb(proc.pid)
                print(f"idle memory: RSS {idle_rss:.1f} MB = {memory_split(proc.pid)}")
                print(f"  largest resident files (MB): {resident_files(proc.pid)}")
                seconds = ecr_sales(port, SALES)
                after = rss_mb(proc.pid)
                print(f"after the sales: {memory_split(proc.pid)}")
                peak = rss_mb(proc.pid, "VmHWM")
                figures.update(idle_rss_mb=idle_rss, rss_after_mb=after, peak_rss_mb=peak)
                print(f"resident memory: idle {idle_rss:.1f} MB; after {SALES} sales over ECR "
                      f"({seconds:.1f} s, {seconds / SALES * 1000:.1f} ms each, shown on the LCD) "
                      f"{after:.1f} MB, peak {peak:.1f} MB (target < 40 MB)")
            finally:
                stop(proc)
        finally:
            sim.stop()
    FIGURES.clear()
    FIGURES.update({
        "cold_start": (round(figures["cold_start_median_s"] * 1000), "ms"),
        "cold_start_bytecode": (round(figures["cold_start_bytecode_median_s"] * 1000), "ms"),
        "idle_cpu": (round(figures["idle_cpu_s"] * 1000), "ms"),
        "idle_rss": (round(figures["idle_rss_mb"], 1), "MB"),
        "rss_after_sales": (round(figures["rss_after_mb"], 1), "MB"),
        "peak_rss": (round(figures["peak_rss_mb"], 1), "MB"),
    })

    from results import emit  # the recorder beside this script: run_all collects what it emits
    emit("cold_start_ms", figures["cold_start_median_s"] * 1e3, "ms", group="bench_panel",
         target={"op": "<", "value": 500, "of": "value"},
         note=f"process start to the idle screen drawn, median of {COLD_RUNS}")
    emit("idle_cpu_ms", figures["idle_cpu_s"] * 1e3, "ms", group="bench_panel",
         note=f"CPU time over {IDLE_SECONDS:g} s at the idle screen")
    emit("idle_ctx_switches", figures["idle_ctx_switches"], "", group="bench_panel",
         note=f"over {IDLE_SECONDS:g} s at the idle screen, all threads")
    for key, note in (("idle_rss_mb", "at the idle screen"),
                      ("rss_after_mb", f"after {SALES} sales over ECR")):
        emit(key, figures[key], "MB", group="bench_panel", target={"op": "<", "value": 40, "of": "value"},
             note=note)
    emit("peak_rss_mb", figures["peak_rss_mb"], "MB", group="bench_panel", note="VmHWM")
    return figures


if __name__ == "__main__":
    main()
