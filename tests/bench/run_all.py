"""`make bench` and `make bench-quick`: the benchmarks of tests/bench, their output printed, their
figures written to var/bench/results.json.

bench_core runs in this process (its main() returns the figures; CORE_FIGURES below gives them
units, floors and targets); the others run as subprocesses, as they are written to, and record
their headline figures with results.emit / emit_series into the file this run names in
POSFW_BENCH_RESULTS. Figures only: the exit status says whether each benchmark ran, not
whether its figures met their targets (results.json and the summary say that).

--quick: the core figures in under two minutes (bench_core on fewer sales and a smaller
journal, bench_posio, bench_keys); mode "quick" in results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))  # `import firmware` (and board, c_ext) from the repo root
sys.path.insert(0, str(HERE))

import bench_core  # noqa: E402
import results  # noqa: E402

RESULTS = ROOT / "var" / "bench" / "results.json"
SCHEMA = 1


@dataclass(frozen=True)
class Bench:
    """One benchmark script run as a subprocess."""

    name: str
    title: str
    quick: bool = False  # part of `make bench-quick`
    quick_args: tuple[str, ...] = ()  # its command-line knobs for the quick run
    quick_env: Mapping[str, str] = field(default_factory=dict)  # and its environment knobs
    script: Path | None = None  # default: tests/bench/NAME.py

    @property
    def path(self) -> Path:
        return self.script or HERE / f"{self.name}.py"


CORE_TITLE = "bench_core: sale, fsyncs per sale, start-up recovery, settlement totals"
BENCHES: tuple[Bench, ...] = (
    Bench("bench_journal", "bench_journal: start-up and a sale at 1k/100k/1M records of history "
          "(archived), totals by batch size", quick=True,
          quick_env={"BENCH_JOURNAL_SIZES": "1000,30000", "BENCH_JOURNAL_SALES": "150"}),
    Bench("bench_chip", "bench_chip: a chip sale, the terminal's own time and end to end over PC/SC"),
    Bench("bench_posio", "bench_posio: the C extension against its pure-Python twin", quick=True),
    Bench("bench_printer", "bench_printer: one sale receipt, text vs raster vs python-escpos on its own"),
    Bench("bench_keys", "bench_keys: key press to display frame on ptys, and painter time", quick=True),
    Bench("bench_panel", "bench_panel: cold start to the idle screen, idle CPU, memory after 1,000 sales"),
    Bench("bench_keystore", "bench_keystore: a sale's key work through PKCS#11 (SoftHSM2, p11-kit) "
          "against in-process crypto"),
    Bench("bench_tls", "bench_tls: TLS to the host on loopback: the handshake, the cost per message"),
    Bench("bench_qemu", "bench_qemu: the firmware in a QEMU guest: power-on to idle, recovery, key to frame"),
)


# -- bench_core's figures: units, floors and targets ---------------------------------------

@dataclass(frozen=True)
class CoreFigure:
    """How one key of bench_core's figures is recorded (the targets are bench_core's own)."""

    unit: str
    floor: str | None = None  # the key of the figure it is compared with
    ratio: str | None = None  # the key of value / floor, as bench_core computes it
    op: str | None = None
    target: str | None = None  # the name of bench_core's constant holding the target
    of: str = "value"


CORE_FIGURES: dict[str, CoreFigure] = {
    "sale_median_ms": CoreFigure("ms", "floor_median_ms", "ratio_sale_floor", "<=", "TARGET_RATIO",
                                 "ratio"),
    "terminal_only_median_ms": CoreFigure("ms", "floor_median_ms", "ratio_terminal_only_floor", "<=",
                                          "TARGET_RATIO", "ratio"),
    "sale_p99_ms": CoreFigure("ms", "floor_p99_ms"),
    "floor_median_ms": CoreFigure("ms"),
    "floor_p99_ms": CoreFigure("ms"),
    "fsync_per_sale_excl_checkpoints": CoreFigure("fsyncs/sale", op="<=", target="TARGET_FSYNC"),
    "fsync_per_sale": CoreFigure("fsyncs/sale", op="<=", target="TARGET_FSYNC_AMORTISED"),
    "recovery_warm_total_ms": CoreFigure("ms", op="<", target="TARGET_RECOVERY_MS"),
    "recovery_warm_quick_check_ms": CoreFigure("ms"),
    "recovery_cold_total_ms": CoreFigure("ms", op="<", target="TARGET_RECOVERY_MS"),
    "recovery_cold_quick_check_ms": CoreFigure("ms"),
    "journal_file_mb": CoreFigure("MiB"),
    "totals_median_ms": CoreFigure("ms", op="<", target="TARGET_TOTALS_MS"),
    "totals_by_kind_median_ms": CoreFigure("ms", op="<", target="TARGET_TOTALS_MS"),
    "sale_with_checkpoint_median_ms": CoreFigure("ms"),
    "wal_bytes_per_sale": CoreFigure("B"),
    "purge_ms": CoreFigure("ms"),
    "purge_indexed_ms": CoreFigure("ms"),
}
# Units of the keys CORE_FIGURES does not name, by the end of the key.
_SUFFIX_UNITS = (("_ms", "ms"), ("_us", "us"), ("_s", "s"), ("_mb", "MiB"), ("_mib", "MiB"),
                 ("_bytes", "B"), ("_b", "B"))


def _guess_unit(key: str) -> str:
    return next((unit for suffix, unit in _SUFFIX_UNITS if key.endswith(suffix)), "")


def _core_note(key: str) -> str | None:
    if key.startswith(("recovery_", "journal_file")):
        return f"journal of {bench_core.RECOVERY_ROWS:,} rows, {bench_core.RECOVERY_PENDING} PENDING"
    if key.startswith(("totals_", "purge")):
        return f"current batch of {bench_core.RECOVERY_BATCH:,} records"
    if key.startswith("fsync_"):
        return str(bench_core.FSYNC_SALES) + " sales under strace"
    if key.startswith(("sale_", "floor_", "ratio_", "terminal_only")):
        return f"{bench_core.SALES} sales, median of the interleaved runs"
    return None


def record_core(figures: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Emit bench_core's figures: those CORE_FIGURES names with their unit, floor and target,
    in its order (absent or None ones skipped); then every other number as a plain figure."""
    entries = []
    for key, spec in CORE_FIGURES.items():
        value = figures.get(key)
        if value is None:
            continue
        floor = target = None
        if spec.floor is not None and figures.get(spec.floor) is not None:
            floor = {"name": spec.floor, "value": figures[spec.floor], "unit": CORE_FIGURES[spec.floor].unit
                     if spec.floor in CORE_FIGURES else _guess_unit(spec.floor)}
        ratio = figures.get(spec.ratio) if spec.ratio else None
        if spec.op is not None and spec.target is not None and (spec.of == "value" or ratio is not None):
            target = {"op": spec.op, "value": getattr(bench_core, spec.target), "of": spec.of}
        entries.append(results.emit(key, value, spec.unit, group="bench_core", floor=floor,
                                    ratio=ratio, target=target, note=_core_note(key)))
    for key, value in figures.items():
        if key in CORE_FIGURES or isinstance(value, bool) or not isinstance(value, int | float):
            continue  # strings (methods, plans, the profile) and tables stay in the printed output
        entries.append(results.emit(key, value, _guess_unit(key), group="bench_core",
                                    note=_core_note(key)))
    return entries


# bench_core has no knobs of its own: the quick run calls its steps with smaller arguments
# (the names in its module are looked up when main() runs them) and restores them after.
QUICK_CORE = {
    "constants": {"SALES": 200, "WARMUP": 20, "FSYNC_SALES": 200, "IDLE_FSYNC_SALES": 100,
                  "RECOVERY_ROWS": 20_000, "RECOVERY_RUNS": 3, "TOTALS_REPEAT": 10,
                  "SIZE_SALES": 100},
    # bench_core's section e (the sale on journals of each size): the quick run's sizes
    "sizes": (1_000, 20_000),
    "skipped": ("profile_sales", "bench_purge"),
}


CORE_MAIN = bench_core.main  # run()'s default, whichever quick_core() puts in its place


def _defaults(fn: Callable[..., Any], kwargs: Mapping[str, Any]) -> Callable[..., Any]:
    """fn with other defaults: each of `kwargs` applies where a call does not pass that
    parameter itself (by position or by name)."""
    signature = inspect.signature(fn)

    def call(*args: Any, **given: Any) -> Any:
        bound = signature.bind_partial(*args, **given).arguments
        return fn(*args, **{**{k: v for k, v in kwargs.items() if k not in bound}, **given})
    return call


@contextlib.contextmanager
def quick_core() -> Iterator[None]:
    consts: dict[str, int] = QUICK_CORE["constants"]  # type: ignore[assignment]
    calls = {
        "bench_sale": {"sales": consts["SALES"], "warmup": consts["WARMUP"]},
        "bench_fsync": {"sales": consts["FSYNC_SALES"]},
        "build_journal": {"rows": consts["RECOVERY_ROWS"]},
        "bench_recovery": {"runs": consts["RECOVERY_RUNS"]},
        "bench_totals": {"repeat": consts["TOTALS_REPEAT"]},
        "bench_sale_sizes": {"sizes": QUICK_CORE["sizes"], "sales": consts["SIZE_SALES"]},
        "main": {"sizes": QUICK_CORE["sizes"]},
    }
    skipped = {"profile_sales": lambda *a, **k: "(not run in quick mode)",
               "bench_purge": lambda *a, **k: {}}
    saved: dict[str, Any] = {}
    try:
        for name, value in consts.items():
            saved[name] = getattr(bench_core, name)
            setattr(bench_core, name, value)
        for name, kwargs in calls.items():
            saved[name] = getattr(bench_core, name)
            setattr(bench_core, name, _defaults(saved[name], kwargs))
        for name, stub in skipped.items():
            saved[name] = getattr(bench_core, name)
            setattr(bench_core, name, stub)
        yield
    finally:
        for name, value in saved.items():
            setattr(bench_core, name, value)


# -- the run -----------------------------------------------------------------------------

def banner(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}", flush=True)


def run_script(path: Path, args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> int:
    """Run one benchmark script with this interpreter from the repo root; its output streams through."""
    proc = subprocess.run([sys.executable, str(path), *args], cwd=ROOT, check=False,
                          env={**os.environ, **(env or {})})
    return proc.returncode


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "Model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_mib() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "cpu_model": _cpu_model(), "memory_mib": _memory_mib(),
            "kernel": platform.release(), "arch": platform.machine(),
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def commit() -> tuple[str | None, bool | None]:
    """(HEAD's sha, whether tracked files differ from it); (None, None) outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30, check=False)
        except OSError:
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    if sha is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return sha, None if status is None else bool(status)


def summary(figures: Sequence[Mapping[str, Any]]) -> str:
    """The figures that have a target, one line each, with PASS/MISS."""
    rows = []
    for f in figures:
        t = f.get("target")
        if t is None:
            continue
        measured = f["ratio"] if t["of"] == "ratio" else f["value"]
        unit = "x" if t["of"] == "ratio" else " " + f["unit"]
        shown = "n/a" if measured is None else f"{measured:.4g}{unit}"
        want = f"{t['op']} {t['value']:g}{unit}"
        verdict = {True: "PASS", False: "MISS", None: "n/a"}[f["pass"]]
        rows.append((f"{f['group']}: {f['name']}", shown, want, verdict))
    if not rows:
        return "(no figure with a target)"
    w0, w1, w2 = (max(len(r[i]) for r in rows) for i in range(3))
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c:<{w2}}  {d}" for a, b, c, d in rows)


def run(mode: str, out: Path, benches: Sequence[Bench] = BENCHES,
        core: Callable[[], Mapping[str, Any]] | None = bench_core.main) -> int:
    """Run the benchmarks of `mode` ("full" or "quick"), print everything, write `out`.
    Returns 1 if a benchmark failed to run, else 0."""
    started = time.perf_counter()
    date = datetime.now(UTC).isoformat(timespec="seconds")
    sha, dirty = commit()
    host = machine()
    failures: list[dict[str, str]] = []
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, lines_name = tempfile.mkstemp(prefix=".results-", suffix=".jsonl", dir=out.parent)
    os.close(fd)
    lines = Path(lines_name)
    saved_env = os.environ.get(results.ENV)
    os.environ[results.ENV] = str(lines)  # the in-process emits and every subprocess's
    try:
        if core is not None:
            banner(CORE_TITLE + (" (quick: fewer sales, a smaller journal)" if mode == "quick" else ""))
            try:
                with quick_core() if mode == "quick" else contextlib.nullcontext():
                    # bench_core.main looked up now: quick_core() gives it the quick sizes
                    run_core = bench_core.main if core is CORE_MAIN else core
                    record_core(run_core())  # inside: the notes name the sizes this run used
            except Exception as exc:  # keep going: the other benchmarks still have something to say
                print(f"bench_core failed: {exc!r}", flush=True)
                failures.append({"name": "bench_core", "reason": f"exception: {exc!r}"})
            sys.stdout.flush()
        for bench in benches:
            if mode == "quick" and not bench.quick:
                continue
            banner(bench.title)
            quick = mode == "quick"
            status = run_script(bench.path, bench.quick_args if quick else (),
                                bench.quick_env if quick else None)
            if status != 0:
                failures.append({"name": bench.name, "reason": f"exit status {status}"})
        figures_out, series_out = results.read_entries(lines)
    finally:
        if saved_env is None:
            os.environ.pop(results.ENV, None)
        else:
            os.environ[results.ENV] = saved_env
        lines.unlink(missing_ok=True)
    duration = time.perf_counter() - started
    results.write_atomically(out, {
        "schema": SCHEMA, "mode": mode, "commit": sha, "dirty": dirty, "date": date,
        "machine": host, "duration_s": round(duration, 1),
        "figures": figures_out, "series": series_out, "failed_to_run": failures,
    })
    banner(f"targets ({mode} run)")
    print(summary(figures_out))
    print(f"\nall benchmarks: {duration:.0f} s; {len(figures_out)} figures and {len(series_out)} "
          f"series in {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"
          + (f"; FAILED to run: {', '.join(f['name'] for f in failures)}" if failures else ""))
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the core figures only, in under two minutes")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    return run("quick" if args.quick else "full", args.out.resolve())


if __name__ == "__main__":
    raise SystemExit(main())
