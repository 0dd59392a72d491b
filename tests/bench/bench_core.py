"""Benchmarks of the terminal's core: one approved sale, fsyncs per sale, start-up recovery, totals.

Real SQLite files in a temp dir on the disk (never tmpfs); prints figures, ratios and a
PASS/MISS table (informational: nothing here is an assertion). `main()` returns the figures.
A sale is measured back to back (the journal's automatic checkpoint may land in one), after the
app's idle checkpoint (firmware/journal/wal.py: what a terminal between customers does), and
on journals of 1k, 100k and 1M records (it must not grow with the journal).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # `import firmware` from the repo root, whatever the cwd

warnings.filterwarnings("ignore", message="TripleDES has been moved")  # psec, as pyproject does

from board.sim.cards import TEST_CARDS  # noqa: E402
from drivers.keystore.memory import MemoryKeyStore  # noqa: E402
from firmware.engine import events as ev  # noqa: E402
from firmware.engine.financial import FinancialFlow, FlowContext  # noqa: E402
from firmware.engine.model import CardRead, TxnRequest, TxnResult  # noqa: E402
from firmware.host.channel import HostLink  # noqa: E402
from firmware.host.codec import Decoded, decode, encode  # noqa: E402
from firmware.host.keys import WorkingKeys, build_signon_keys, signon_entries  # noqa: E402
from firmware.host.mac import clear_mac  # noqa: E402
from firmware.host.messages import Terminal, TxnKind, response_for  # noqa: E402
from firmware.journal import wal  # noqa: E402
from firmware.journal.store import Journal  # noqa: E402
from firmware.journal.vault import CardVault  # noqa: E402

TID, MID = "12345678", "123456789012345"
TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
# Fixed, obviously fake working keys (a sign-on would install random ones).
KEYS = WorkingKeys(pik=bytes.fromhex("1111111111111111" "2222222222222222"),
                   mak=bytes.fromhex("3333333333333333" "4444444444444444"))
VAULT_KEY = bytes(range(32))

SALES, WARMUP = 500, 50
FSYNC_SALES = 1000
IDLE_FSYNC_SALES = 300
SIZES = (1_000, 100_000, 1_000_000)  # journal records under the sale (issue 19: flat)
SIZE_SALES, SIZE_WARMUP = 300, 30
RECOVERY_ROWS, RECOVERY_BATCH, RECOVERY_PENDING = 100_000, 10_000, 300
RECOVERY_RUNS = 5
TOTALS_REPEAT = 30

TARGET_RATIO, TARGET_FSYNC, TARGET_FSYNC_AMORTISED = 3.0, 2.0, 2.2
TARGET_RECOVERY_MS, TARGET_TOTALS_MS = 100.0, 20.0


# -- small helpers -----------------------------------------------------------------

def pct(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def fs_type(path: Path) -> str:
    """The filesystem type holding `path` (longest mount point prefix in /proc/mounts)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temp dir where pytest's tmp_path lives (/tmp here); refuses tmpfs (no real fsync)."""
    base = Path(tempfile.gettempdir())
    if fs_type(base) in ("tmpfs", "ramfs"):
        base = ROOT / "tests" / "bench"  # the one place we may write inside the repo
    with tempfile.TemporaryDirectory(prefix="posfw-bench-", dir=base) as name:
        yield Path(name)


def open_journal(path: Path, clock: Callable[[], float] = time.time) -> Journal:
    return Journal.open(path, CardVault(VAULT_KEY), clock=clock)


# -- a. one approved sale, as the app's executor does it, host latency excluded -----

@dataclass
class Phases:
    """Where one sale's time goes (seconds, summed over the measured sales)."""

    prologue: float = 0.0  # the journal reads the app's operation does before the flow
    begin: float = 0.0
    apply: float = 0.0
    link: float = 0.0  # HostLink.request: encode + MAC, decode + checks + verify_mac, and the host
    host: float = 0.0  # the host's part inside `link`: decode, response_for, encode + MAC

    def reset(self) -> None:
        self.prologue = self.begin = self.apply = self.link = self.host = 0.0


class LoopbackChannel:
    """Stands in for HostChannel: the host answers in-process, no socket, no simulator.

    The terminal-side work stays the real code: HostLink.request encodes and MACs the
    request, and here the reply frame is decoded and offered to its `accept` exactly as
    HostChannel's reader does; HostLink then checks the amount and verifies the MAC.
    """

    def __init__(self, mak: bytes, phases: Phases) -> None:
        self.host, self.port = "loopback", 0
        self._mac = clear_mac(mak)  # a host MACs a session's messages with one key's cipher
        self._phases = phases
        self._rrn = 0

    def answer(self, frame: bytes) -> bytes:
        """The host: decode the request, build the approval, encode it with the MAC."""
        request = decode(frame[2:]).message
        self._rrn += 1
        now = datetime.now()
        reply = response_for(request, "00", {
            "37": f"{self._rrn:012d}", "38": f"{self._rrn % 1_000_000:06d}",
            "12": now.strftime("%H%M%S"), "13": now.strftime("%m%d"),
        })
        return encode(reply, self._mac)

    async def exchange(self, frame: bytes, accept: Callable[[Decoded], bool],
                       timeout: float) -> Decoded:
        t0 = time.perf_counter()
        reply_frame = self.answer(frame)
        self._phases.host += time.perf_counter() - t0
        decoded = decode(reply_frame[2:])  # what HostChannel._read_loop does with a frame
        if not accept(decoded):
            raise RuntimeError("the loopback reply was not accepted")
        return decoded

    async def close(self) -> None:
        return None


def swiped(name: str = "cup_credit") -> CardRead:
    c = TEST_CARDS[name]
    return CardRead("swipe", c.pan, c.expiry, c.service_code, c.track2)


def signed_on_store(keys_dir: Path) -> MemoryKeyStore:
    """The development key store over `keys_dir` (TMK written 0600) holding KEYS, as a sign-on
    leaves it: the link MACs through it like the terminal does."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(keys_dir / "tmk.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, TMK.hex().encode())
    finally:
        os.close(fd)
    store = MemoryKeyStore(keys_dir)
    asyncio.run(store.install_working_keys(signon_entries(build_signon_keys(KEYS, TMK))))
    return store


def operation_reads(j: Journal) -> None:
    """What TerminalCore._financial reads of the journal before every financial operation: the
    backlog it must clear first (HostSession.clear_backlog: due reversals, stored advices,
    script advices) and an interrupted settlement (asked twice). Reads only; on a journal of a
    million records they must stay index lookups."""
    j.reversals_due()
    j.advices_due()
    j.script_advices_due()
    j.open_settlement()
    j.open_settlement()


class SaleDriver:
    """Runs sales through FinancialFlow with the executor of firmware/app/core/flows.py
    (FlowRunner._perform), after the journal reads the operation does first (operation_reads).
    Not included: the operation's own audit line (TerminalCore.operation, a commit of its own)
    and an ECR request's key (claimed and finished in commits of their own)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.phases = Phases()
        self.link = HostLink(LoopbackChannel(KEYS.mak, self.phases), Terminal(TID, MID),  # type: ignore[arg-type]
                             signed_on_store(Path(journal.path).parent / "keys"))
        self.link.sign_on_required = False
        self.card = swiped()

    async def sale(self, amount: int) -> TxnResult:
        j, ph = self.journal, self.phases
        t0 = time.perf_counter()
        operation_reads(j)
        ph.prologue += time.perf_counter() - t0
        ctx = FlowContext(term=self.link.term, batch=j.current_batch(), now=datetime.now())
        flow = FinancialFlow(TxnRequest(TxnKind.SALE, amount), ctx)
        queue: deque[ev.Action] = deque(flow.start())
        while queue:
            action = queue.popleft()
            event: object
            if isinstance(action, ev.Finish):
                return action.result
            if isinstance(action, ev.AskCard):
                event = ev.CardPresented(self.card)
            elif isinstance(action, ev.WritePending):
                t0 = time.perf_counter()
                event = ev.PendingWritten(j.begin(action.draft))
                ph.begin += time.perf_counter() - t0
            elif isinstance(action, ev.SendRequest):
                t0 = time.perf_counter()
                reply = await self.link.request(action.message, mac=action.mac, timeout=action.timeout)
                ph.link += time.perf_counter() - t0
                event = ev.ReplyReceived(reply)
            elif isinstance(action, ev.WriteOutcome):
                t0 = time.perf_counter()
                event = ev.OutcomeWritten(j.apply(action.record_id, action.event, action.result,
                                                  action.reversal_reason, action.void_of))
                ph.apply += time.perf_counter() - t0
            elif isinstance(action, ev.AuditNote):
                j.audit("01", action.action, action.detail, action.outcome)
                continue
            else:
                raise TypeError(f"a swiped sale should not ask for {action!r}")
            queue.extend(flow.handle(event))
        raise RuntimeError("the flow ended without a result")


def wal_state(shm: Path) -> tuple[int, int]:
    """(mxFrame, nBackfill) from the WAL-index (-shm) header: the journal's own reader."""
    return wal.wal_index(Path(str(shm).removesuffix("-shm")))


def checkpointed(before: tuple[int, int], after: tuple[int, int]) -> bool:
    """Did a checkpoint run between two wal_state() readings?

    Either it copied frames (nBackfill grew), or the WAL restarted (mxFrame fell) while
    frames were still un-copied before, so the copy and the restart both happened in between.
    """
    return after[1] > before[1] or (after[0] < before[0] and before[1] < before[0])


def floor_iteration(fd: int, payload: bytes) -> None:
    """The floor: two fsync'd appends, the least any write-ahead design must do."""
    os.write(fd, payload)
    os.fsync(fd)
    os.write(fd, payload)
    os.fsync(fd)


def idle_checkpoint(journal: Journal) -> Callable[[], object] | None:
    """The app's checkpoint at idle (firmware/app/core/checkpoint.py), where the firmware has one."""
    return getattr(journal, "checkpoint_at_idle", None)


def bench_sale(work: Path, sales: int = SALES, warmup: int = WARMUP, *,
               path: Path | None = None, idle: bool = False) -> dict[str, Any]:
    """Sales and floor iterations interleaved, so both see the same disk conditions.

    path: a journal to sell on (a new one in `work` if None). idle: between two sales (outside
    the timing) the journal is checkpointed as the app does when the terminal is idle; its cost
    is reported as idle_checkpoint_*."""
    path = path or work / "sale.db"
    journal = open_journal(path)
    page_size = journal._db.execute("PRAGMA page_size").fetchone()[0]
    checkpoint = idle_checkpoint(journal) if idle else None
    if idle and checkpoint is None:
        journal.close()
        return {}
    driver = SaleDriver(journal)
    shm = Path(f"{path}-shm")
    fd = os.open(work / "floor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    payload = (b"x" * 199) + b"\n"
    sale_t: list[float] = []
    floor_t: list[float] = []
    idle_t: list[float] = []
    with_ckpt: list[bool] = []

    async def run() -> None:
        for i in range(warmup):
            result = await driver.sale(100 + i)
            if result.status != "approved":
                raise RuntimeError(f"warm-up sale not approved: {result}")
            floor_iteration(fd, payload)
            if checkpoint is not None:
                checkpoint()
        driver.phases.reset()
        for i in range(sales):
            before = wal_state(shm)
            t0 = time.perf_counter()
            result = await driver.sale(1000 + i)
            sale_t.append(time.perf_counter() - t0)
            with_ckpt.append(checkpointed(before, wal_state(shm)))
            if result.status != "approved":
                raise RuntimeError(f"sale not approved: {result}")
            t0 = time.perf_counter()
            floor_iteration(fd, payload)
            floor_t.append(time.perf_counter() - t0)
            if checkpoint is not None:
                t0 = time.perf_counter()
                checkpoint()
                idle_t.append(time.perf_counter() - t0)

    try:
        asyncio.run(run())
    finally:
        os.close(fd)
        journal.close()
    ph = driver.phases
    med_sale, med_floor = statistics.median(sale_t), statistics.median(floor_t)
    mean_sale = statistics.fmean(sale_t)
    host_ms = ph.host / sales * 1e3
    ckpt_t = [t for t, c in zip(sale_t, with_ckpt, strict=True) if c]
    plain_t = [t for t, c in zip(sale_t, with_ckpt, strict=True) if not c]
    out = {
        "sales": sales,
        "journal_page_size": page_size,
        "sale_median_ms": med_sale * 1e3,
        "sale_p99_ms": pct(sale_t, 99) * 1e3,
        "sale_max_ms": max(sale_t) * 1e3,
        "floor_median_ms": med_floor * 1e3,
        "floor_p99_ms": pct(floor_t, 99) * 1e3,
        "ratio_sale_floor": med_sale / med_floor,
        # The host's share (decode request, response_for, encode reply + MAC) is inside the
        # sale figure as the brief asks; without it, only what the terminal itself does:
        "host_part_mean_ms": host_ms,
        "terminal_only_median_ms": med_sale * 1e3 - host_ms,
        "ratio_terminal_only_floor": (med_sale * 1e3 - host_ms) / (med_floor * 1e3),
        "mean_prologue_ms": ph.prologue / sales * 1e3,
        "mean_begin_ms": ph.begin / sales * 1e3,
        "mean_apply_ms": ph.apply / sales * 1e3,
        "mean_link_terminal_ms": (ph.link - ph.host) / sales * 1e3,
        "mean_engine_rest_ms": (mean_sale - (ph.prologue + ph.begin + ph.apply + ph.link) / sales) * 1e3,
        "slow_sales_over_3x_median": sum(t > 3 * med_sale for t in sale_t),
        # SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold:
        "sales_with_checkpoint": len(ckpt_t),
        "sale_with_checkpoint_median_ms": statistics.median(ckpt_t) * 1e3 if ckpt_t else None,
        "sale_without_checkpoint_median_ms": statistics.median(plain_t) * 1e3,
        "sale_without_checkpoint_p99_ms": pct(plain_t, 99) * 1e3,
    }
    if idle_t:
        out["idle_checkpoint_median_ms"] = statistics.median(idle_t) * 1e3
        out["idle_checkpoint_p99_ms"] = pct(idle_t, 99) * 1e3
    return out


def bench_sale_sizes(work: Path, pristine_100k: Path | None, sizes: tuple[int, ...] = SIZES,
                     sales: int = SIZE_SALES, warmup: int = SIZE_WARMUP) -> dict[str, Any]:
    """bench_sale on journals of each size (built like section c's; the 100k one is a copy of
    it), each with its own interleaved floor. The largest is deleted once measured."""
    by_rows: dict[str, dict[str, Any]] = {}
    out: dict[str, Any] = {"sale_sizes": by_rows}
    for rows in sizes:
        path = work / f"sale-{rows}.db"
        t0 = time.perf_counter()
        if rows == RECOVERY_ROWS and pristine_100k is not None:
            shutil.copyfile(pristine_100k, path)
        else:
            build_journal(path, rows=rows, pending=min(RECOVERY_PENDING, rows // 10))
        built = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
        f = bench_sale(work, sales, warmup, path=path)
        by_rows[str(rows)] = {
            "journal_mb": size_mb, "build_s": built, "page_size": f["journal_page_size"],
            "sale_median_ms": f["sale_median_ms"], "sale_p99_ms": f["sale_p99_ms"],
            "floor_median_ms": f["floor_median_ms"], "ratio_sale_floor": f["ratio_sale_floor"],
            "mean_prologue_ms": f["mean_prologue_ms"], "mean_begin_ms": f["mean_begin_ms"],
            "mean_apply_ms": f["mean_apply_ms"], "sales_with_checkpoint": f["sales_with_checkpoint"],
        }
        out[f"ratio_sale_floor_at_{rows}"] = f["ratio_sale_floor"]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    ratios = [v["ratio_sale_floor"] for v in by_rows.values()]
    out["ratio_sale_floor_worst_size"] = max(ratios)
    # Flat: the largest journal's sale against the smallest's (1.0 = no growth at all).
    first, last = by_rows[str(sizes[0])], by_rows[str(sizes[-1])]
    out["sale_growth_smallest_to_largest"] = last["sale_median_ms"] / first["sale_median_ms"]
    return out


def profile_sales(work: Path, sales: int = 300, top: int = 12) -> str:
    """cProfile of `sales` sales (after a warm-up): the top functions by own time."""
    import cProfile
    import io
    import pstats

    journal = open_journal(work / "profile.db")
    driver = SaleDriver(journal)
    prof = cProfile.Profile()

    async def run() -> None:
        for i in range(20):
            await driver.sale(100 + i)
        prof.enable()
        for i in range(sales):
            await driver.sale(1000 + i)
        prof.disable()

    try:
        asyncio.run(run())
    finally:
        journal.close()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    return "\n".join(lines[start:])


# -- b. fsync / fdatasync calls per sale, counted with strace -----------------------

MARK = "getppid"  # the child calls os.getppid() around its sale loop: strace sees the markers
_SYSCALL = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")


def fsync_child(work: Path, sales: int, idle: bool = False) -> None:
    """Runs under strace: open a journal, warm up, marker, `sales` sales, marker, close.
    idle: the app's idle checkpoint between sales, each sale between markers of its own (what
    the checkpoint syncs at idle is not the sale's)."""
    journal = open_journal(work / ("fsync-idle.db" if idle else "fsync.db"))
    checkpoint = idle_checkpoint(journal)
    driver = SaleDriver(journal)

    async def run() -> None:
        for i in range(10):
            await driver.sale(100 + i)
        os.getppid()
        for i in range(sales):
            if idle and checkpoint is not None:
                os.getppid()
                checkpoint()
                os.getppid()
            result = await driver.sale(1000 + i)
            if result.status != "approved":
                raise RuntimeError(f"sale not approved: {result}")
        os.getppid()

    asyncio.run(run())
    journal.close()


def _strace_cmd(out: Path, seccomp: bool) -> list[str]:
    cmd = ["strace", "-f", "-qq", "-o", str(out),
           "-e", f"trace=openat,close,fsync,fdatasync,sync_file_range,pwrite64,write,{MARK}"]
    return cmd + (["--seccomp-bpf"] if seccomp else [])


def ensure_strace() -> str | None:
    """Path of strace, installing it with apt-get if missing and we are root; None if impossible."""
    found = shutil.which("strace")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", "strace"], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    return shutil.which("strace")


@dataclass
class SyncCount:
    in_loop: Counter[str] = field(default_factory=Counter)  # call:file -> syncs between markers
    whole: Counter[str] = field(default_factory=Counter)  # the whole child process
    written: Counter[str] = field(default_factory=Counter)  # file -> bytes written between markers
    markers: int = 0  # odd: inside a measured window


def _file_kind(path: str) -> str:
    name = Path(path).name
    return "wal" if name.endswith("-wal") else "db" if name.endswith(".db") else name


def parse_trace(text: str) -> SyncCount:
    """Count sync calls per file (by fd -> path from openat/close), split at the markers."""
    fds: dict[tuple[str, int], str] = {}
    count = SyncCount()
    for line in text.splitlines():
        m = _SYSCALL.match(line)
        if m is None:
            continue
        pid, call, args, ret = m.group(1), m.group(2), m.group(3), int(m.group(4))
        if call == MARK:
            count.markers += 1
        elif call == "openat" and ret >= 0:
            path = re.search(r'"([^"]*)"', args)
            fds[(pid, ret)] = path.group(1) if path else "?"
        elif call == "close":
            fds.pop((pid, int(args.strip() or -1)), None)
        elif call in ("pwrite64", "write"):
            fd = int(args.split(",")[0])
            if count.markers % 2 == 1 and ret > 0 and (pid, fd) in fds:
                count.written[_file_kind(fds[(pid, fd)])] += ret
        elif call in ("fsync", "fdatasync", "sync_file_range"):
            fd = int(args.split(",")[0])
            key = f"{call}:{_file_kind(fds.get((pid, fd), f'fd {fd}'))}"
            count.whole[key] += 1
            if count.markers % 2 == 1:
                count.in_loop[key] += 1
    return count


def bench_fsync(work: Path, sales: int = FSYNC_SALES, idle: bool = False) -> dict[str, Any]:
    """Syncs and bytes per sale, counted with strace; idle: with the app's idle checkpoint
    between sales (keys suffixed _after_idle; its own syncs, at idle, are not counted)."""
    strace = ensure_strace()
    if strace is None:
        return {"fsync_method": "not counted: strace is missing and cannot be installed (not root)"}
    if idle:
        probe = open_journal(work / "probe.db")
        has_idle = idle_checkpoint(probe) is not None
        probe.close()
        if not has_idle:
            return {}
    child = [sys.executable, str(Path(__file__).resolve()), "--fsync-child", str(work), str(sales)]
    child += ["idle"] if idle else []
    out = work / ("strace-idle.txt" if idle else "strace.txt")
    proc = None
    for seccomp in (True, False):
        proc = subprocess.run(_strace_cmd(out, seccomp) + child, capture_output=True, text=True,
                              timeout=600, check=False)
        if proc.returncode == 0:
            break
    if proc is None or proc.returncode != 0 or not out.exists():
        detail = (proc.stderr.strip().splitlines() or ["?"])[-1] if proc else "?"
        return {"fsync_method": f"not counted: strace failed ({detail})"}
    count = parse_trace(out.read_text())
    expected = 2 * sales + 2 if idle else 2
    if count.markers != expected:
        return {"fsync_method": f"not counted: saw {count.markers} markers, expected {expected}"}
    if idle:
        return {
            "fsync_per_sale_after_idle": sum(count.in_loop.values()) / sales,
            "fsync_in_loop_after_idle": dict(count.in_loop),
            "wal_bytes_per_sale_after_idle": count.written.get("wal", 0) / sales,
            "db_bytes_per_sale_after_idle": count.written.get("db", 0) / sales,
        }
    loop_total = sum(count.in_loop.values())
    db_syncs = sum(n for k, n in count.in_loop.items() if k.endswith(":db"))
    wal_syncs = sum(n for k, n in count.in_loop.items() if k.endswith(":wal"))
    # Observed per checkpoint: an fdatasync of the WAL before copying, one of the database
    # after, and one of the new WAL header when the next commit restarts the WAL.
    return {
        "fsync_method": "strace -f (openat/close/fsync/fdatasync/sync_file_range), getppid markers",
        "fsync_sales": sales,
        "fsync_in_loop": dict(count.in_loop),
        "fsync_whole_process": dict(count.whole),
        "fsync_per_sale": loop_total / sales,
        "fsync_wal_per_sale": wal_syncs / sales,
        "fsync_db_syncs_in_loop": db_syncs,  # one per checkpoint that copied the WAL back
        "fsync_per_sale_excl_checkpoints": (loop_total - 3 * db_syncs) / sales,
        "fsync_per_checkpoint": (loop_total - 2 * sales) / db_syncs if db_syncs else None,
        "wal_bytes_per_sale": count.written.get("wal", 0) / sales,
        "db_bytes_per_sale": count.written.get("db", 0) / sales,
    }


# -- c. start-up recovery with 100,000 journal rows ----------------------------------

_INSERT_COLUMNS = (
    "id, kind, state, stan, batch, invoice, amount, currency, pan_enc, pan_masked, foreign_card, "
    "entry_mode, pin_entered, operator, local_date, local_time, created_at, updated_at, reference, "
    "orig_id, orig_batch, orig_stan, orig_rrn, orig_auth, orig_date, response_code, rrn, auth_code, "
    "card_org, reversal_reason, reversal_attempts, advice_attempts, uploaded, settlement_id"
)
DAY = 86_400.0
EPOCH = 1_700_000_000.0  # the first batch's day (any fixed instant)


@dataclass
class BatchFacts:
    """What the generator put in one batch, to check totals() against."""

    debit: dict[int, list[int]] = field(default_factory=lambda: {0: [0, 0], 1: [0, 0]})
    credit: dict[int, list[int]] = field(default_factory=lambda: {0: [0, 0], 1: [0, 0]})
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    pending: int = 0
    pending_balance: int = 0


def build_journal(path: Path, rows: int = RECOVERY_ROWS, per_batch: int = RECOVERY_BATCH,
                  pending: int = RECOVERY_PENDING, seed: int = 7) -> BatchFacts:
    """A journal of `rows` records as Journal.begin + apply leave them, in one transaction.

    Batches of `per_batch`; all but the last settled. The last (current) batch mixes
    sales, voids (and their VOIDED originals), refunds, declines, reversals, balance
    enquiries, domestic and foreign cards, and `pending` PENDING records (a few balance
    enquiries among them) for recover() to work on. One audit row per record, as begin writes.
    Returns the facts of the current batch.
    """
    open_journal(path).close()  # schema through the real migrations
    rnd = random.Random(seed)
    vault = CardVault(VAULT_KEY)
    cards = [TEST_CARDS[n] for n in ("cup_credit", "cup_debit", "visa", "mastercard", "jcb")]
    weights = [50, 30, 10, 6, 4]
    batches = math.ceil(rows / per_batch)
    txn: list[tuple[Any, ...]] = []
    audit: list[tuple[Any, ...]] = []
    settlements: list[tuple[Any, ...]] = []
    facts = BatchFacts()
    rid = stan = 0
    pending_left = pending
    for b in range(1, batches + 1):
        batch = f"{b:06d}"
        current = b == batches
        sid = None if current else b
        day0 = EPOCH + (b - 1) * DAY
        approved_sales: list[int] = []  # indexes in txn of this batch's approved sales
        n_batch = min(per_batch, rows - rid)
        for k in range(n_batch):
            rid += 1
            stan += 1
            at = day0 + k * (DAY / n_batch)
            card = rnd.choices(cards, weights)[0]
            foreign = int(not card.pan.startswith(("62", "9")))
            kind, state, amount, rc = "sale", "APPROVED", rnd.randrange(100, 500_000), "00"
            orig: tuple[Any, ...] = (None,) * 6
            left = n_batch - k
            roll = rnd.random()
            if current and pending_left and rnd.random() < pending_left / left:
                pending_left -= 1
                kind = "balance" if pending_left % 50 == 0 else "sale"
                state, rc = "PENDING", None
                amount = 0 if kind == "balance" else amount
            elif roll < 0.06 and approved_sales:
                kind = "void"
                oid = approved_sales.pop(rnd.randrange(len(approved_sales)))
                o = txn[oid - 1]  # ids are 1.. in insertion order
                txn[oid - 1] = (*o[:2], "VOIDED", *o[3:])
                amount = o[6]
                card = next(c for c in cards if c.pan[-4:] == o[9][-4:])
                foreign = o[10]
                orig = (o[0], o[4], o[3], o[26], o[27], None)
            elif roll < 0.10:
                kind = "refund"
                orig = (None, None, None, f"{rnd.randrange(10**12):012d}", None, "0101")
            elif roll < 0.14:
                state, rc = "DECLINED", rnd.choice(["51", "55", "14", "05"])
            elif roll < 0.16:
                state, rc = "REVERSED", None
            elif roll < 0.18:
                kind, amount = "balance", 0
            pan_masked = card.pan[:6] + "*" * (len(card.pan) - 10) + card.pan[-4:]
            rrn = f"{rid:012d}" if rc == "00" else None
            auth = f"{rid % 1_000_000:06d}" if rc == "00" else None
            reason = "98" if state == "REVERSED" else None
            txn.append((
                rid, kind, state, f"{stan:06d}", batch, f"{stan:06d}", amount, "156",
                vault.encrypt(card.pan), pan_masked, foreign, "swipe", int(card.pin is not None),
                "01", time.strftime("%m%d", time.localtime(at)),
                time.strftime("%H%M%S", time.localtime(at)), at, at + 1.5, None, *orig[:5],
                orig[5], rc, rrn, auth, card.org if rc == "00" else None, reason,
                int(state == "REVERSED"), int(kind == "refund"), int(not current), sid,
            ))
            if kind == "sale" and state == "APPROVED":
                approved_sales.append(rid)
            first = "ADVICE_DUE" if kind == "refund" else "PENDING"
            audit.append((at, "01", kind, f"trace {stan:06d} amount {amount} card {pan_masked}", first))
        if not current:
            settlements.append((b, batch, "DONE", f"{stan:06d}", json.dumps(
                {"domestic": [0, 0, 0, 0], "foreign": [0, 0, 0, 0]}), "1", "1", 0,
                day0 + DAY - 60, day0 + DAY - 30))
    # The facts of the current batch, from the rows as they finally are.
    last = f"{batches:06d}"
    for row in txn:
        if row[4] != last:
            continue
        kind, state, amount, foreign = row[1], row[2], row[6], row[10]
        if state == "PENDING":
            facts.pending += 1
            facts.pending_balance += kind == "balance"
        if state in ("APPROVED", "VOIDED"):
            side = "foreign" if foreign else "domestic"
            facts.by_kind[(side, kind)] += 1
            if kind in ("sale", "completion"):
                facts.debit[foreign][0] += amount
                facts.debit[foreign][1] += 1
            elif kind in ("void", "completion_void", "refund"):
                facts.credit[foreign][0] += amount
                facts.credit[foreign][1] += 1
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO settlement (id, batch, state, stan, totals, result_domestic, "
            "result_foreign, uploaded_count, started_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            settlements)
        conn.executemany(f"INSERT INTO txn ({_INSERT_COLUMNS}) VALUES ({','.join('?' * 34)})", txn)
        conn.executemany("INSERT INTO audit (at, operator, action, detail, outcome) "
                         "VALUES (?,?,?,?,?)", audit)
        conn.executemany("UPDATE counters SET value = ? WHERE name = ?",
                         [(stan, "stan"), (stan, "invoice"), (batches, "batch")])
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return facts


class TimedConnection(sqlite3.Connection):
    """Times every statement (connection and cursor level) of the journal it backs."""

    log: ClassVar[list[tuple[str, float]]] = []

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        t0 = time.perf_counter()
        try:
            return super().execute(sql, *args)
        finally:
            TimedConnection.log.append((sql, time.perf_counter() - t0))

    def cursor(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:  # type: ignore[override]
        return super().cursor(TimedCursor)


class TimedCursor(sqlite3.Cursor):
    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
        t0 = time.perf_counter()
        try:
            return super().execute(sql, *args)
        finally:
            TimedConnection.log.append((sql, time.perf_counter() - t0))


def recovery_child(path: Path) -> None:
    """In a fresh interpreter, after the imports: Journal.open + recover(); JSON on stdout."""
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        return real_connect(*args, factory=TimedConnection, **kwargs)

    sqlite3.connect = connect  # type: ignore[assignment]
    t0 = time.perf_counter()
    journal = open_journal(path)
    t1 = time.perf_counter()
    report = journal.recover()
    t2 = time.perf_counter()
    journal.close()
    sqlite3.connect = real_connect
    log = TimedConnection.log
    print(json.dumps({
        "open_ms": (t1 - t0) * 1e3,
        "recover_ms": (t2 - t1) * 1e3,
        "total_ms": (t2 - t0) * 1e3,
        "quick_check_ms": sum(t for sql, t in log if "quick_check" in sql) * 1e3,
        "commit_ms": sum(t for sql, t in log if sql.strip() == "COMMIT") * 1e3,
        "statements": len(log),
        "to_reverse": report.to_reverse,
        "enquiries_failed": report.enquiries_failed,
    }))


def drop_file_cache(path: Path) -> None:
    """Evict one file's pages from the page cache (fsync first: only clean pages go)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def bench_recovery(work: Path, pristine: Path, runs: int = RECOVERY_RUNS) -> dict[str, Any]:
    results: dict[str, list[dict[str, float]]] = {"warm": [], "cold": []}
    for i in range(runs):
        for cache in ("warm", "cold"):
            copy = work / f"recover-{cache}-{i}.db"
            shutil.copyfile(pristine, copy)
            if cache == "cold":
                drop_file_cache(copy)
            else:
                copy.read_bytes()  # make sure every page is in the cache
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--recovery-child", str(copy)],
                capture_output=True, text=True, timeout=120, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"recovery child failed: {proc.stderr[-2000:]}")
            results[cache].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            if i < runs - 1 or cache == "warm":
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{copy}{suffix}").unlink(missing_ok=True)
    out: dict[str, Any] = {"recovery_runs": runs,
                           "journal_file_mb": pristine.stat().st_size / 2**20}
    for cache, rs in results.items():
        for key in ("total_ms", "quick_check_ms", "open_ms", "recover_ms", "commit_ms"):
            out[f"recovery_{cache}_{key}"] = statistics.median(r[key] for r in rs)
    out["recovery_to_reverse"] = results["warm"][0]["to_reverse"]
    out["recovery_enquiries_failed"] = results["warm"][0]["enquiries_failed"]
    return out


# -- d. settlement totals over 10,000 transactions -----------------------------------

def timed_median(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3


def bench_totals(path: Path, facts: BatchFacts, repeat: int = TOTALS_REPEAT) -> dict[str, Any]:
    journal = open_journal(path)
    try:
        batch = journal.current_batch()
        count = journal._db.execute("SELECT COUNT(*) FROM txn WHERE batch = ?", (batch,)).fetchone()[0]
        dom, fgn = journal.totals(batch)
        by_kind = journal.totals_by_kind(batch)
        ok = all(
            (side.debit_amount, side.debit_count, side.credit_amount, side.credit_count)
            == (facts.debit[f][0], facts.debit[f][1], facts.credit[f][0], facts.credit[f][1])
            for f, side in ((0, dom), (1, fgn))
        ) and {k: c for k, (c, _a) in by_kind.items()} == dict(facts.by_kind)
        return {
            "totals_batch_records": count,
            "totals_median_ms": timed_median(lambda: journal.totals(batch), repeat),
            "totals_by_kind_median_ms": timed_median(lambda: journal.totals_by_kind(batch), repeat),
            "totals_match_generator": ok,
        }
    finally:
        journal.close()


# -- extra: retention purge, with and without the txn.orig_id index (schema 2) ------

def _purge_once(copy: Path, purge_rows: int, index: bool) -> tuple[int, float, str]:
    conn = sqlite3.connect(copy)
    if not index:  # what it cost before schema 2 added txn_orig_id, for comparison
        conn.execute("DROP INDEX IF EXISTS txn_orig_id")
        conn.commit()
    cutoff = conn.execute("SELECT created_at FROM txn ORDER BY id LIMIT 1 OFFSET ?",
                          (purge_rows,)).fetchone()[0]
    plan = conn.execute("EXPLAIN QUERY PLAN SELECT 1 FROM txn WHERE orig_id = ?", (1,)).fetchall()
    conn.close()
    days = 30
    journal = open_journal(copy, clock=lambda: cutoff + days * DAY)
    try:
        t0 = time.perf_counter()
        deleted = journal.purge_settled(days)
        elapsed = time.perf_counter() - t0
    finally:
        journal.close()
    return deleted, elapsed, " / ".join(str(r[-1]) for r in plan)


def bench_purge(work: Path, pristine: Path, purge_rows: int = 250) -> dict[str, Any]:
    """purge_settled() of the oldest `purge_rows` settled records of the 100k journal.

    The clock is set so that only the first `purge_rows` records are older than the
    retention (those a void refers to stay); Journal.purge_settled runs with
    foreign_keys=ON as in the app: once on a copy without the txn.orig_id index, once as is.
    """
    out: dict[str, Any] = {}
    for index in (False, True):
        copy = work / f"purge-{int(index)}.db"
        shutil.copyfile(pristine, copy)
        deleted, elapsed, plan = _purge_once(copy, purge_rows, index)
        tag = "purge_indexed" if index else "purge"
        out.update({f"{tag}_deleted": deleted, f"{tag}_ms": elapsed * 1e3,
                    f"{tag}_ms_per_row": elapsed * 1e3 / max(deleted, 1), f"{tag}_plan": plan})
    return out


def journal_composition(path: Path) -> dict[str, float]:
    """MiB per table and index (dbstat), or {} where SQLite lacks the dbstat table."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name "
                            "ORDER BY 2 DESC").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        conn.close()
    return {name: size / 2**20 for name, size in rows}


# -- report ---------------------------------------------------------------------------

def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def table(f: dict[str, Any]) -> str:
    def fmt(key: str, spec: str = ".3f", unit: str = "") -> str:
        value = f.get(key)
        return "n/a" if value is None else f"{value:{spec}}{unit}"

    fs = f.get("fsync_per_sale")
    fs_steady = f.get("fsync_per_sale_excl_checkpoints")
    rows: list[tuple[str, str, str, str]] = [
        ("sale, median (incl. in-process host)", fmt("sale_median_ms", ".3f", " ms"), "", ""),
        ("sale, p99", fmt("sale_p99_ms", ".3f", " ms"), "", ""),
        ("floor (2 fsync'd appends), median", fmt("floor_median_ms", ".3f", " ms"), "", ""),
        ("floor, p99", fmt("floor_p99_ms", ".3f", " ms"), "", ""),
        ("ratio sale / floor (medians)", fmt("ratio_sale_floor", ".2f", "x"), f"<= {TARGET_RATIO:g}x",
         verdict(f["ratio_sale_floor"] <= TARGET_RATIO)),
        ("  terminal only (host part removed)", fmt("ratio_terminal_only_floor", ".2f", "x"),
         f"<= {TARGET_RATIO:g}x", verdict(f["ratio_terminal_only_floor"] <= TARGET_RATIO)),
        ("fsyncs per sale, steady (excl. ckpt)", fmt("fsync_per_sale_excl_checkpoints", ".3f"),
         f"{TARGET_FSYNC:g}", verdict(None if fs_steady is None else fs_steady <= TARGET_FSYNC + 1e-9)),
        ("fsyncs per sale, amortised (incl. ckpt)", fmt("fsync_per_sale", ".3f"),
         f"<= {TARGET_FSYNC_AMORTISED:g}", verdict(None if fs is None else fs <= TARGET_FSYNC_AMORTISED)),
        ("recovery 100k rows, warm cache", fmt("recovery_warm_total_ms", ".1f", " ms"),
         f"< {TARGET_RECOVERY_MS:g} ms", verdict(f["recovery_warm_total_ms"] < TARGET_RECOVERY_MS)),
        ("  of which PRAGMA quick_check", fmt("recovery_warm_quick_check_ms", ".1f", " ms"), "", ""),
        ("recovery 100k rows, file cache dropped", fmt("recovery_cold_total_ms", ".1f", " ms"),
         f"< {TARGET_RECOVERY_MS:g} ms", verdict(f["recovery_cold_total_ms"] < TARGET_RECOVERY_MS)),
        ("  of which PRAGMA quick_check", fmt("recovery_cold_quick_check_ms", ".1f", " ms"), "", ""),
        ("journal file size (100k rows)", fmt("journal_file_mb", ".1f", " MiB"), "", ""),
        ("totals(batch), 10k records", fmt("totals_median_ms", ".2f", " ms"), f"< {TARGET_TOTALS_MS:g} ms",
         verdict(f["totals_median_ms"] < TARGET_TOTALS_MS)),
        ("totals_by_kind(batch), 10k records", fmt("totals_by_kind_median_ms", ".2f", " ms"),
         f"< {TARGET_TOTALS_MS:g} ms", verdict(f["totals_by_kind_median_ms"] < TARGET_TOTALS_MS)),
        ("sale with a WAL checkpoint, median", fmt("sale_with_checkpoint_median_ms", ".3f", " ms"), "", ""),
        ("WAL bytes written per sale", fmt("wal_bytes_per_sale", ",.0f", " B"), "", ""),
        ("  journal page size", fmt("journal_page_size", "d", " B"), "", ""),
        ("sale after the idle checkpoint / floor", fmt("ratio_sale_floor_after_idle", ".2f", "x"),
         f"<= {TARGET_RATIO:g}x", verdict(None if f.get("ratio_sale_floor_after_idle") is None
                                          else f["ratio_sale_floor_after_idle"] <= TARGET_RATIO)),
        ("  fsyncs per sale after it", fmt("fsync_per_sale_after_idle", ".3f"), f"{TARGET_FSYNC:g}",
         verdict(None if f.get("fsync_per_sale_after_idle") is None
                 else f["fsync_per_sale_after_idle"] <= TARGET_FSYNC + 1e-9)),
        ("  the idle checkpoint itself (at idle)", fmt("idle_checkpoint_median_ms", ".3f", " ms"), "", ""),
        *[(f"sale / floor, journal of {int(rows):,} records", f"{v['ratio_sale_floor']:.2f}x",
           f"<= {TARGET_RATIO:g}x", verdict(v["ratio_sale_floor"] <= TARGET_RATIO))
          for rows, v in f.get("sale_sizes", {}).items()],
        ("  sale growth, smallest to largest journal", fmt("sale_growth_smallest_to_largest", ".2f", "x"),
         "flat", ""),
        (f"purge_settled, {f.get('purge_deleted', '?')} rows (info)", fmt("purge_ms", ".0f", " ms"),
         "", ""),
        ("  same, with an index on txn.orig_id", fmt("purge_indexed_ms", ".0f", " ms"), "", ""),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [f"{'figure':<{w0}}  {'measured':>{w1}}  {'target':<10}  result", "-" * (w0 + w1 + 26)]
    lines += [f"{a:<{w0}}  {b:>{w1}}  {c:<10}  {d}" for a, b, c, d in rows]
    return "\n".join(lines)


def main(sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    started = time.perf_counter()
    with scratch_dir() as work:
        print(f"bench_core: scratch dir {work} ({fs_type(work)}), SQLite {sqlite3.sqlite_version}, "
              f"Python {sys.version.split()[0]}")

        print(f"\na. one approved sale (swipe, MAC both ways, in-process host), "
              f"{SALES} sales after {WARMUP} warm-up, interleaved with the floor")
        figures.update(bench_sale(work))
        for key in ("journal_page_size", "sale_median_ms", "sale_p99_ms", "sale_max_ms",
                    "floor_median_ms", "floor_p99_ms",
                    "ratio_sale_floor", "host_part_mean_ms", "terminal_only_median_ms",
                    "ratio_terminal_only_floor", "mean_prologue_ms", "mean_begin_ms", "mean_apply_ms",
                    "mean_link_terminal_ms", "mean_engine_rest_ms", "slow_sales_over_3x_median",
                    "sales_with_checkpoint", "sale_with_checkpoint_median_ms",
                    "sale_without_checkpoint_median_ms", "sale_without_checkpoint_p99_ms"):
            value = figures[key]
            print(f"  {key:<34} {value:.3f}" if isinstance(value, float) else f"  {key:<34} {value}")
        print(f"\na2. the same, each sale after the app's idle checkpoint (untimed, as a terminal "
              f"between customers), {SALES} sales")
        after_idle = bench_sale(work, path=work / "sale-idle.db", idle=True)
        if not after_idle:
            print("  not measured: this firmware has no idle checkpoint")
        for key in ("sale_median_ms", "floor_median_ms", "ratio_sale_floor", "sale_p99_ms",
                    "sales_with_checkpoint", "idle_checkpoint_median_ms", "idle_checkpoint_p99_ms"):
            if key in after_idle:
                figures[f"{key}_after_idle" if not key.startswith("idle_") else key] = after_idle[key]
                value = after_idle[key]
                print(f"  {key:<34} {value:.3f}" if isinstance(value, float) else f"  {key:<34} {value}")
        print("  cProfile of 300 sales, top own time:")
        figures["profile_top"] = profile_sales(work)
        print("    " + figures["profile_top"].replace("\n", "\n    "))

        print(f"\nb. fsync/fdatasync calls during {FSYNC_SALES} sales (strace, child process)")
        figures.update(bench_fsync(work))
        figures.update(bench_fsync(work, IDLE_FSYNC_SALES, idle=True))
        for key in ("fsync_method", "fsync_in_loop", "fsync_whole_process", "fsync_per_sale",
                    "fsync_wal_per_sale", "fsync_db_syncs_in_loop", "fsync_per_checkpoint",
                    "fsync_per_sale_excl_checkpoints", "wal_bytes_per_sale", "db_bytes_per_sale",
                    "fsync_per_sale_after_idle", "fsync_in_loop_after_idle",
                    "wal_bytes_per_sale_after_idle", "db_bytes_per_sale_after_idle"):
            if key in figures:
                print(f"  {key:<32} {figures[key]}")

        print(f"\nc. start-up recovery, {RECOVERY_ROWS:,} rows, {RECOVERY_PENDING} PENDING "
              f"(fresh interpreter, timed after imports)")
        pristine = work / "journal-100k.db"
        t0 = time.perf_counter()
        facts = build_journal(pristine)
        figures["build_journal_s"] = time.perf_counter() - t0
        print(f"  built in {figures['build_journal_s']:.1f} s: "
              f"{pristine.stat().st_size / 2**20:.1f} MiB, {facts.pending} PENDING "
              f"({facts.pending_balance} balance enquiries)")
        figures["journal_composition_mib"] = journal_composition(pristine)
        print("  MiB per table/index: " + ", ".join(
            f"{k} {v:.1f}" for k, v in figures["journal_composition_mib"].items()))
        figures.update(bench_recovery(work, pristine))
        for key, value in figures.items():
            if key.startswith("recovery_"):
                print(f"  {key:<36} {value:.2f}" if isinstance(value, float) else f"  {key:<36} {value}")

        print("\nd. settlement totals over the current batch of the same journal")
        totals_db = work / "totals.db"
        shutil.copyfile(pristine, totals_db)
        figures.update(bench_totals(totals_db, facts))
        for key in ("totals_batch_records", "totals_median_ms", "totals_by_kind_median_ms",
                    "totals_match_generator"):
            value = figures[key]
            print(f"  {key:<28} {value:.3f}" if isinstance(value, float) else f"  {key:<28} {value}")

        print("\nextra. retention purge on the same journal (foreign_keys=ON, as the app runs it)")
        figures.update(bench_purge(work, pristine))
        for key, value in figures.items():
            if key.startswith("purge"):
                print(f"  {key:<28} {value:.2f}" if isinstance(value, float) else f"  {key:<28} {value}")

        if sizes:
            print(f"\ne. one sale on journals of {', '.join(f'{n:,}' for n in sizes)} records "
                  f"({SIZE_SALES} sales each after {SIZE_WARMUP}, each with its own floor)")
            figures.update(bench_sale_sizes(work, pristine, sizes))
            for rows, f in figures["sale_sizes"].items():
                print(f"  {int(rows):>9,} records ({f['journal_mb']:.0f} MiB, built {f['build_s']:.0f} s): "
                      f"sale {f['sale_median_ms']:.3f} ms, floor {f['floor_median_ms']:.3f} ms, "
                      f"ratio {f['ratio_sale_floor']:.2f}x; prologue {f['mean_prologue_ms']:.3f} ms, "
                      f"begin {f['mean_begin_ms']:.3f}, apply {f['mean_apply_ms']:.3f}")
            print(f"  sale_growth_smallest_to_largest {figures['sale_growth_smallest_to_largest']:.2f}")

    figures["bench_core_s"] = time.perf_counter() - started
    print(f"\nbench_core summary ({figures['bench_core_s']:.0f} s; informational, not assertions)")
    print(table(figures))
    return figures


def _cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fsync-child", nargs="+", metavar="DIR SALES [idle]")
    parser.add_argument("--recovery-child", metavar="JOURNAL")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)),
                        help="journal sizes (records) of section e, comma-separated; '' skips it")
    args = parser.parse_args()
    if args.fsync_child:
        fsync_child(Path(args.fsync_child[0]), int(args.fsync_child[1]),
                    idle=args.fsync_child[2:] == ["idle"])
    elif args.recovery_child:
        recovery_child(Path(args.recovery_child))
    else:
        main(tuple(int(n) for n in args.sizes.split(",") if n.strip()))


if __name__ == "__main__":
    _cli()
