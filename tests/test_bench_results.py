"""The benchmarks' machine-readable results (tests/bench): the recorder judges each figure against
its target, run_all writes results.json with every field docs/benchmarks.md promises (from fake
benchmarks: no timing is measured here), the quick run shrinks bench_core and puts it back, and
plots.py draws the three PNGs from a synthetic results file, the same bytes each time."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent / "bench"
sys.path.insert(0, str(BENCH))

import bench_core  # noqa: E402
import plots  # noqa: E402
import results  # noqa: E402
import run_all  # noqa: E402


@pytest.fixture
def no_results_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(results.ENV, raising=False)


# -- the recorder -----------------------------------------------------------------------------

@pytest.mark.parametrize(("op", "limit", "value", "expected"), [
    ("<", 100, 99.9, True), ("<", 100, 100, False), ("<", 100, 100.1, False),
    ("<=", 3, 2.9, True), ("<=", 3, 3, True), ("<=", 3, 3.01, False),
    (">=", 50, 50, True), (">=", 50, 49.99, False), (">=", 50, 120, True),
    (">", 0, 0, False), (">", 0, 0.001, True),
])
def test_a_target_of_the_value_is_judged_by_its_operator(
        no_results_env: None, op: str, limit: float, value: float, expected: bool) -> None:
    entry = results.emit("x_ms", value, "ms", group="g", target={"op": op, "value": limit, "of": "value"})
    assert entry["pass"] is expected
    assert entry["target"] == {"op": op, "value": float(limit), "of": "value"}


def test_a_target_of_the_ratio_judges_the_ratio_not_the_value(no_results_env: None) -> None:
    floor = {"name": "floor_median_ms", "value": 0.3, "unit": "ms"}
    target = {"op": "<=", "value": 3, "of": "ratio"}
    ok = results.emit("sale_median_ms", 0.87, "ms", group="g", floor=floor, ratio=2.9, target=target)
    miss = results.emit("sale_median_ms", 0.93, "ms", group="g", floor=floor, ratio=3.1, target=target)
    assert (ok["pass"], miss["pass"]) == (True, False)
    assert ok["floor"] == floor and ok["ratio"] == 2.9
    # The value alone (0.87 < 3) would pass both: only the ratio decides.
    assert results.emit("v", 5.0, "ms", group="g", ratio=1.0, target=target)["pass"] is True


def test_no_target_or_no_number_gives_no_verdict(no_results_env: None) -> None:
    assert results.emit("info_ms", 1.0, "ms", group="g")["pass"] is None
    not_run = results.emit("e2e_ms", None, "ms", group="g", target={"op": "<", "value": 1500},
                           note="skipped: needs root")
    assert not_run["pass"] is None and not_run["value"] is None
    nan = results.emit("broken_ms", math.nan, "ms", group="g", target={"op": "<", "value": 1})
    assert nan["pass"] is None and nan["value"] is None  # JSON has no NaN


def test_the_recorder_refuses_a_target_it_cannot_judge(no_results_env: None) -> None:
    with pytest.raises(ValueError, match="op"):
        results.emit("x", 1.0, "ms", group="g", target={"op": "=<", "value": 1})
    with pytest.raises(ValueError, match="of"):
        results.emit("x", 1.0, "ms", group="g", target={"op": "<", "value": 1, "of": "median"})
    with pytest.raises(ValueError, match="ratio"):
        results.emit("x", 1.0, "ms", group="g", target={"op": "<", "value": 1, "of": "ratio"})
    with pytest.raises(ValueError, match="floor"):
        results.emit("x", 1.0, "ms", group="g", floor={"name": "peer", "value": 2.0})


def test_entries_go_to_the_named_file_as_json_lines_and_nowhere_without_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lines = tmp_path / "r.jsonl"
    monkeypatch.delenv(results.ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    results.emit("alone_ms", 1.0, "ms", group="g")
    assert list(tmp_path.iterdir()) == []  # a script run on its own writes nothing
    monkeypatch.setenv(results.ENV, str(lines))
    results.emit("a_ms", 1.5, "ms", group="g1", target={"op": "<", "value": 2})
    results.emit_series("s", "rows", "rows", "ms per sale", "ms", [(1000, 2.0), (10, 1.0)], "g2",
                        floor_points=[(10, 0.5), (1000, 0.5)])
    with lines.open("a") as f:
        f.write('{"kind": "figure", "name": "cut')  # a script killed mid-line
    figures, series = results.read_entries(lines)
    assert [(f["name"], f["group"], f["pass"]) for f in figures] == [("a_ms", "g1", True)]
    assert series == [{"name": "s", "group": "g2", "x_label": "rows", "x_unit": "rows",
                       "y_label": "ms per sale", "y_unit": "ms", "points": [[10, 1.0], [1000, 2.0]],
                       "floor_points": [[10, 0.5], [1000, 0.5]]}]


def test_write_atomically_leaves_only_the_whole_file(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "results.json"
    results.write_atomically(out, {"schema": 1})
    results.write_atomically(out, {"schema": 1, "mode": "quick"})
    assert json.loads(out.read_text()) == {"schema": 1, "mode": "quick"}
    assert [p.name for p in out.parent.iterdir()] == ["results.json"]


# -- run_all's results.json --------------------------------------------------------------------

def _script(path: Path, body: str) -> Path:
    path.write_text(f"import sys\nsys.path.insert(0, {str(BENCH)!r})\nfrom results import emit, "
                    f"emit_series\n{body}\n")
    return path


def _fake_core() -> dict[str, Any]:
    return {"sale_median_ms": 0.9, "floor_median_ms": 0.3, "ratio_sale_floor": 3.0,
            "totals_median_ms": 25.0, "recovery_warm_total_ms": None,
            "new_figure_ms": 1.5, "profile_top": "a table, not a figure", "fsync_in_loop": {"a": 1}}


def _run(tmp_path: Path, mode: str, core: Any = _fake_core) -> tuple[int, dict[str, Any]]:
    benches = [
        run_all.Bench("fake_a", "fake a", quick=True, script=_script(tmp_path / "a.py", (
            "emit('key_p99_ms', 3.0, 'ms', group='fake_a', target={'op': '<', 'value': 5})\n"
            "emit_series('sale_ms_by_journal_rows', 'rows', 'rows', 'ms per sale', 'ms', "
            "[(1000, 1.0), (100000, 1.2)], 'fake_a', floor_points=[(1000, 0.3), (100000, 0.3)])"))),
        run_all.Bench("fake_broken", "fake broken", quick=True,
                      script=_script(tmp_path / "b.py", "emit('before_ms', 1.0, 'ms', group='b')\n"
                                                        "raise SystemExit(3)")),
        run_all.Bench("fake_full_only", "fake full only", script=_script(
            tmp_path / "c.py", "emit('full_only_ms', 1.0, 'ms', group='fake_full_only')")),
    ]
    out = tmp_path / "var" / "bench" / "results.json"
    status = run_all.run(mode, out, benches=benches, core=core)
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.json"]  # no scratch left
    return status, json.loads(out.read_text())


def test_run_all_writes_every_field_of_the_schema(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(results.ENV, "/the/callers/own")
    status, doc = _run(tmp_path, "full")
    assert os.environ[results.ENV] == "/the/callers/own"  # put back as it was
    assert status == 1  # one benchmark failed to run
    assert list(doc) == ["schema", "mode", "commit", "dirty", "date", "machine", "duration_s",
                         "figures", "series", "failed_to_run"]
    assert doc["schema"] == 1 and doc["mode"] == "full"
    assert doc["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", doc["commit"])
    assert doc["dirty"] in (True, False, None)
    assert datetime.fromisoformat(doc["date"]).utcoffset().total_seconds() == 0
    machine = doc["machine"]
    assert machine["cores"] == os.cpu_count() and machine["cpu_model"]
    assert machine["memory_mib"] > 0 and machine["kernel"] and machine["python"].startswith("3.")
    assert machine["sqlite"].count(".") == 2
    assert doc["duration_s"] >= 0
    assert doc["failed_to_run"] == [{"name": "fake_broken", "reason": "exit status 3"}]
    by_name = {f["name"]: f for f in doc["figures"]}
    # bench_core's figures: mapped with floor and target, absent/None skipped, unknown plain.
    sale = by_name["sale_median_ms"]
    assert (sale["group"], sale["unit"], sale["ratio"], sale["pass"]) == ("bench_core", "ms", 3.0, True)
    assert sale["floor"] == {"name": "floor_median_ms", "value": 0.3, "unit": "ms"}
    assert sale["target"] == {"op": "<=", "value": bench_core.TARGET_RATIO, "of": "ratio"}
    totals = by_name["totals_median_ms"]
    assert totals["pass"] is False and totals["target"]["value"] == bench_core.TARGET_TOTALS_MS
    assert "recovery_warm_total_ms" not in by_name
    assert (by_name["new_figure_ms"]["unit"], by_name["new_figure_ms"]["target"]) == ("ms", None)
    assert "profile_top" not in by_name and "fsync_in_loop" not in by_name
    # The subprocesses': a failed script's figures up to its failure are kept.
    assert by_name["key_p99_ms"]["pass"] is True and by_name["key_p99_ms"]["group"] == "fake_a"
    assert "before_ms" in by_name and "full_only_ms" in by_name
    assert [s["name"] for s in doc["series"]] == ["sale_ms_by_journal_rows"]
    assert doc["series"][0]["floor_points"] == [[1000, 0.3], [100000, 0.3]]


def test_the_quick_run_runs_only_the_quick_benchmarks(tmp_path: Path, no_results_env: None) -> None:
    status, doc = _run(tmp_path, "quick")
    assert doc["mode"] == "quick" and status == 1
    names = {f["name"] for f in doc["figures"]}
    assert {"key_p99_ms", "before_ms", "sale_median_ms"} <= names
    assert "full_only_ms" not in names
    assert results.ENV not in os.environ


def test_a_core_that_raises_is_a_benchmark_that_failed_to_run(tmp_path: Path, no_results_env: None) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("strace exploded")

    _, doc = _run(tmp_path, "full", core=broken)
    assert doc["failed_to_run"][0] == {"name": "bench_core",
                                       "reason": "exception: RuntimeError('strace exploded')"}
    assert {f["name"] for f in doc["figures"]} >= {"key_p99_ms"}  # the others still ran


def test_quick_core_shrinks_bench_core_and_puts_it_back() -> None:
    before = {name: getattr(bench_core, name) for name in
              ("SALES", "RECOVERY_ROWS", "bench_sale", "build_journal", "bench_purge", "profile_sales")}
    with run_all.quick_core():
        assert before["SALES"] > bench_core.SALES
        assert before["RECOVERY_ROWS"] > bench_core.RECOVERY_ROWS
        assert bench_core.bench_sale is not before["bench_sale"]
        assert bench_core.build_journal is not before["build_journal"]
        assert bench_core.bench_purge(Path("/nowhere"), Path("/nowhere")) == {}
    assert {name: getattr(bench_core, name) for name in before} == before


def test_quick_defaults_apply_only_where_the_call_is_silent() -> None:
    """bench_core calls some steps with arguments of its own (bench_fsync(work, N, idle=True)):
    the quick value replaces a default, never what the caller passed."""
    seen: list[tuple[str, int, bool]] = []

    def step(work: str, sales: int = 500, idle: bool = False) -> None:
        seen.append((work, sales, idle))

    quick = run_all._defaults(step, {"sales": 200})
    quick("w")
    quick("w", 300, idle=True)
    quick("w", sales=7)
    assert seen == [("w", 200, False), ("w", 300, True), ("w", 7, False)]


# -- the plots ---------------------------------------------------------------------------------

def _synthetic(path: Path, *, with_totals: bool = True) -> Path:
    rows = [1_000, 10_000, 100_000, 1_000_000]
    series = [
        {"name": "sale_ms_by_journal_rows", "group": "bench_journal", "x_label": "rows in the journal's "
         "history", "x_unit": "rows", "y_label": "ms per sale", "y_unit": "ms",
         "points": [[r, 0.9 + 0.05 * i] for i, r in enumerate(rows)],
         "floor_points": [[r, 0.32] for r in rows]},
        {"name": "startup_ms_by_journal_rows", "group": "bench_journal", "x_label": "historical rows",
         "x_unit": "rows", "y_label": "ms to ready", "y_unit": "ms",
         "points": [[r, 20 + r / 1000 * 6] for r in rows], "floor_points": None},
    ]
    if with_totals:
        series.append({"name": "totals_ms_by_batch_rows", "group": "bench_journal",
                       "x_label": "records in the batch", "x_unit": "records", "y_label": "totals",
                       "y_unit": "ms", "points": [[n, n / 2000] for n in (100, 1000, 10000)],
                       "floor_points": None})
    path.write_text(json.dumps({"schema": 1, "mode": "full", "commit": "ab" * 20, "dirty": False,
                                "date": "2026-01-01T00:00:00+00:00", "machine": {"cores": 2},
                                "figures": [], "series": series, "failed_to_run": []}))
    return path


def test_plots_draws_the_three_pngs_the_same_each_time(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (make bench-plots installs it)")
    from PIL import Image

    source = _synthetic(tmp_path / "results.json")
    out = tmp_path / "png"
    assert plots.main(["--results", str(source), "--out-dir", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{p.series}.png" for p in plots.PLOTS) == [
        "sale_ms_by_journal_rows.png", "startup_ms_by_journal_rows.png", "totals_ms_by_batch_rows.png"]
    first = {name: (out / name).read_bytes() for name in names}
    for name in names:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.size == (800, 450)
            assert "Software" not in image.info  # nothing that changes with the installed version
    assert plots.main(["--results", str(source), "--out-dir", str(out)]) == 0
    assert {name: (out / name).read_bytes() for name in names} == first
    # A series that is missing gives a picture saying so, not a stale or absent file.
    assert plots.main(["--results", str(_synthetic(tmp_path / "r2.json", with_totals=False)),
                       "--out-dir", str(out)]) == 0
    assert (out / "totals_ms_by_batch_rows.png").read_bytes() != first["totals_ms_by_batch_rows.png"]
    assert (out / "sale_ms_by_journal_rows.png").read_bytes() == first["sale_ms_by_journal_rows.png"]


def test_plots_without_results_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert plots.main(["--results", str(tmp_path / "none.json"), "--out-dir", str(tmp_path)]) == 1
    assert "make bench" in capsys.readouterr().err
