"""Benchmark: the journal over the terminal's life. At history sizes of 1k, 100k and 1M records
(settled batches of up to 10,000, and an open batch with 300 PENDING records), each journal is
built, then archived by the firmware's own move (transactions.hot_batches = 3), then measured:

- start-up to "ready for a sale" (Journal.open with its quick_check, then recover()) in a fresh
  interpreter, with the journal's files evicted from the page cache (cold) and read (warm);
- one approved sale against two bare fsynced appends (bench_core.bench_sale's floor), on it;
- settlement totals over batches of 1k, 10k and 100k records.

Figures and the three scaling series are printed and kept in FIGURES / SERIES (name -> value,
unit); BENCH_JOURNAL_SIZES="1000,10000" chooses the sizes (bench-quick). No assertions.
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import bench_core  # noqa: E402

from firmware.journal import archive  # noqa: E402

SIZES = tuple(int(s) for s in os.environ.get("BENCH_JOURNAL_SIZES", "1000,100000,1000000").split(","))
BATCH, KEEP, PENDING = 10_000, 3, 300
SALES = int(os.environ.get("BENCH_JOURNAL_SALES", "300"))
STARTS = 5
TOTALS_SIZES = (1_000, 10_000, 100_000)
TARGET_START_MS, TARGET_RATIO, TARGET_FLAT = 100.0, 3.0, 1.10

FIGURES: dict[str, tuple[float, str]] = {}
SERIES: dict[str, list[tuple[float, float]]] = {}


def build(work: Path, history: int) -> tuple[Path, float, float]:
    """A journal with `history` settled records and an open batch, archived as the firmware does
    after its settlements; returns (path, build s, archive s)."""
    path = work / "sale.db"  # the name bench_core.bench_sale opens
    per_batch = min(BATCH, history)
    t0 = time.perf_counter()
    bench_core.build_journal(path, rows=history + per_batch, per_batch=per_batch, pending=PENDING)
    t1 = time.perf_counter()
    journal = bench_core.open_journal(path)
    try:
        moves = journal.archive_settled(keep_batches=KEEP)
        if not all(m.moved for m in moves):
            raise RuntimeError(f"a batch did not move: {[m for m in moves if not m.moved][:1]}")
    finally:
        journal.close()
    # A terminal archives after each settlement, so its hot file never held the whole history:
    # the file is compacted to what it would be (free pages of the moved batches dropped).
    with sqlite3.connect(path) as conn:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path, t1 - t0, time.perf_counter() - t1


def start_up(path: Path, cold: bool) -> dict[str, float]:
    """Open + recover in a fresh interpreter, on a copy (recover() changes the file)."""
    copy = path.with_name(f"start-{'cold' if cold else 'warm'}.db")
    results = []
    for _ in range(STARTS):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{copy}{suffix}").unlink(missing_ok=True)
        copy.write_bytes(path.read_bytes())
        if cold:
            bench_core.drop_file_cache(copy)
        proc = subprocess.run([sys.executable, str(HERE / "bench_core.py"), "--recovery-child",
                               str(copy)], capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"start-up child failed: {proc.stderr[-2000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in results)
            for key in ("total_ms", "quick_check_ms", "open_ms", "recover_ms")}


def totals(work: Path) -> None:
    for size in TOTALS_SIZES:
        path = work / f"totals-{size}.db"
        facts = bench_core.build_journal(path, rows=size, per_batch=size, pending=0)
        journal = bench_core.open_journal(path)
        try:
            ms = bench_core.timed_median(journal.totals, 20)
            got = journal.totals()
        finally:
            journal.close()
        if (got[0].debit_amount, got[1].debit_amount) != (facts.debit[0][0], facts.debit[1][0]):
            raise RuntimeError("totals disagree with the built batch")
        SERIES.setdefault("totals_ms_by_batch_rows", []).append((size, ms))
        print(f"  totals over a batch of {size:>7,}: {ms:7.2f} ms")
        if size == 10_000:
            FIGURES["totals_10k_ms"] = (ms, "ms")


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-journal-", dir=HERE.parents[1] / "var"
                                     if (HERE.parents[1] / "var").is_dir() else None) as tmp:
        work = Path(tmp)
        print(f"bench_journal: {work} ({bench_core.fs_type(work)}), SQLite {sqlite3.sqlite_version}, "
              f"sizes {', '.join(f'{s:,}' for s in SIZES)}")
        ratios: dict[int, float] = {}
        sale_ms: dict[int, float] = {}
        for history in SIZES:
            size_dir = work / f"history-{history}"
            size_dir.mkdir()
            path, built_s, moved_s = build(size_dir, history)
            hot_rows = sqlite3.connect(path).execute("SELECT COUNT(*) FROM txn").fetchone()[0]
            files = archive.files_in(archive.directory_for(path))
            print(f"\nhistory {history:,} records: built in {built_s:.0f} s, archived in "
                  f"{moved_s:.0f} s; hot journal {hot_rows:,} records, "
                  f"{path.stat().st_size / 2**20:.1f} MiB; archive {len(files)} file(s), "
                  f"{sum(f.stat().st_size for f in files) / 2**20:.1f} MiB")
            cold, warm = start_up(path, cold=True), start_up(path, cold=False)
            print(f"  start-up to ready: cold {cold['total_ms']:.1f} ms (quick_check "
                  f"{cold['quick_check_ms']:.1f}), warm {warm['total_ms']:.1f} ms")
            sale = bench_core.bench_sale(size_dir, sales=SALES, warmup=30, path=path, idle=True)
            ratios[history] = sale["ratio_sale_floor"]
            sale_ms[history] = sale["sale_median_ms"]
            print(f"  sale {sale['sale_median_ms']:.3f} ms vs floor {sale['floor_median_ms']:.3f} ms:"
                  f" {sale['ratio_sale_floor']:.2f}x")
            SERIES.setdefault("startup_ms_by_journal_rows", []).append((history, cold["total_ms"]))
            SERIES.setdefault("sale_ms_by_journal_rows", []).append((history, sale["sale_median_ms"]))
            SERIES.setdefault("floor_ms_by_journal_rows", []).append((history, sale["floor_median_ms"]))
            FIGURES[f"startup_cold_ms_{history}"] = (cold["total_ms"], "ms")
            FIGURES[f"startup_warm_ms_{history}"] = (warm["total_ms"], "ms")
            FIGURES[f"sale_floor_ratio_{history}"] = (sale["ratio_sale_floor"], "x")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        smallest, largest = min(SIZES), max(SIZES)
        flat = sale_ms[largest] / sale_ms[smallest]
        FIGURES["sale_flatness"] = (flat, "x")
        print("\nsettlement totals by batch size")
        totals(work)
    record(smallest, largest)
    big = FIGURES[f"startup_cold_ms_{largest}"][0]
    print(f"\nbench_journal summary: start-up with {largest:,} records of history, cold: {big:.1f} ms "
          f"(target < {TARGET_START_MS:.0f}: {'PASS' if big < TARGET_START_MS else 'MISS'}); "
          f"sale/floor {', '.join(f'{r:.2f}x' for r in ratios.values())} (target <= {TARGET_RATIO}x: "
          f"{'PASS' if max(ratios.values()) <= TARGET_RATIO else 'MISS'}); sale at {largest:,} vs "
          f"{smallest:,}: {flat:.2f}x (target <= {TARGET_FLAT}: {'PASS' if flat <= TARGET_FLAT else 'MISS'})")


def record(smallest: int, largest: int) -> None:
    """The figures and the three scaling curves, for results.json (run_all collects them)."""
    from results import emit, emit_series  # the recorder beside this script

    group = "bench_journal"
    for history in SIZES:
        emit(f"startup_cold_ms_{history}", FIGURES[f"startup_cold_ms_{history}"][0], "ms",
             group=group, target={"op": "<", "value": TARGET_START_MS, "of": "value"},
             note=f"open + recover, {history:,} records of history (archived), {PENDING} PENDING, "
                  "journal evicted from the page cache")
        emit(f"startup_warm_ms_{history}", FIGURES[f"startup_warm_ms_{history}"][0], "ms", group=group)
        sale = dict(SERIES["sale_ms_by_journal_rows"])[history]
        floor = dict(SERIES["floor_ms_by_journal_rows"])[history]
        emit(f"sale_ms_{history}", sale, "ms", group=group, ratio=sale / floor,
             floor={"name": "two fsynced appends", "value": floor, "unit": "ms"},
             target={"op": "<=", "value": TARGET_RATIO, "of": "ratio"},
             note=f"median of {SALES} sales, {history:,} records of history")
    emit("sale_flatness", FIGURES["sale_flatness"][0], "x", group=group,
         target={"op": "<=", "value": TARGET_FLAT, "of": "value"},
         note=f"sale at {largest:,} records of history / at {smallest:,}")
    if "totals_10k_ms" in FIGURES:
        emit("totals_10k_ms", FIGURES["totals_10k_ms"][0], "ms", group=group,
             target={"op": "<", "value": 20.0, "of": "value"})
    emit_series("sale_ms_by_journal_rows", "records of history", "", "one sale", "ms",
                SERIES["sale_ms_by_journal_rows"], group, SERIES["floor_ms_by_journal_rows"])
    emit_series("startup_ms_by_journal_rows", "records of history", "", "start-up to ready (cold)",
                "ms", SERIES["startup_ms_by_journal_rows"], group)
    emit_series("totals_ms_by_batch_rows", "records in the batch", "", "settlement totals", "ms",
                SERIES["totals_ms_by_batch_rows"], group)


if __name__ == "__main__":
    main()
