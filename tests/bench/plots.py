"""`make bench-plots`: the scaling curves of var/bench/results.json drawn into docs/bench/*.png.

Three plots, one per series that results.emit_series recorded (PLOTS below); a series the file
lacks gives a picture that says so, so the pages that show the plots never point at nothing.
The pictures depend on the results file alone: matplotlib's Agg backend, a fixed size and
resolution, no time or version in the PNG's metadata, so drawing the same file twice gives the
same bytes. matplotlib comes from requirements-bench.txt: not a runtime or test dependency.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "var" / "bench" / "results.json"
OUT_DIR = ROOT / "docs" / "bench"
SIZE_IN, DPI = (8.0, 4.5), 100  # 800 x 450 pixels


@dataclass(frozen=True)
class Plot:
    series: str  # the series' name in results.json; the PNG is named after it
    title: str
    line: str  # the legend of the measured curve
    floor_line: str = "floor"  # the legend of the series' floor_points, when it has them


PLOTS = (
    Plot("sale_ms_by_journal_rows", "One sale against the journal's size", "sale",
         "floor (2 fsync'd appends)"),
    Plot("startup_ms_by_journal_rows", "Start-up to ready against the journal's size (cold cache)",
         "start-up"),
    Plot("totals_ms_by_batch_rows", "Settlement totals against the batch's size", "totals"),
)


def find_series(results: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """The last series of that name (a rerun's replaces an earlier one)."""
    found = [s for s in results.get("series", []) if s.get("name") == name]
    return found[-1] if found else None


def caption(results: Mapping[str, Any]) -> str:
    host = results.get("machine") or {}
    sha = results.get("commit") or "?"
    dirty = "+dirty" if results.get("dirty") else ""
    return (f"{results.get('mode', '?')} run of {sha[:10]}{dirty}, {results.get('date', '?')}; "
            f"{host.get('cores', '?')} cores, {host.get('cpu_model', '?')}, "
            f"SQLite {host.get('sqlite', '?')}")


def _axis(label: str, unit: str) -> str:
    return f"{label} ({unit})" if unit else label


def draw(plot: Plot, series: Mapping[str, Any] | None, results: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    with plt.rc_context({"font.size": 10, "svg.hashsalt": "posfw", "path.simplify": False}):
        fig, ax = plt.subplots(figsize=SIZE_IN, dpi=DPI)
        try:
            ax.set_title(plot.title)
            fig.text(0.01, 0.01, caption(results), fontsize=7, color="0.4")
            points = [p for p in (series or {}).get("points") or [] if p[1] is not None]
            if not points:
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"not measured: results.json has no series {plot.series!r}\n"
                        "(make bench writes it, then make bench-plots)",
                        ha="center", va="center", transform=ax.transAxes)
            else:
                assert series is not None
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=plot.line)
                floor = [p for p in series.get("floor_points") or [] if p[1] is not None]
                if floor:
                    fx, fy = zip(*floor, strict=True)
                    ax.plot(fx, fy, marker="s", linestyle="--", label=plot.floor_line)
                if min(xs) > 0 and max(xs) / min(xs) >= 100:
                    ax.set_xscale("log")  # journal sizes span decades
                ax.set_ylim(bottom=0)
                ax.set_xlabel(_axis(series.get("x_label", "x"), series.get("x_unit", "")))
                ax.set_ylabel(_axis(series.get("y_label", "y"), series.get("y_unit", "")))
                ax.grid(True, which="major", alpha=0.3)
                ax.legend(loc="upper left")
            fig.tight_layout(rect=(0, 0.04, 1, 1))
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            # No "Software" (matplotlib's version) in the metadata: a new matplotlib with the
            # same drawing must not make a new file.
            fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
            tmp.replace(path)
        finally:
            plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    try:
        results = json.loads(args.results.read_text())
    except FileNotFoundError:
        print(f"{args.results}: no results yet: run `make bench` (or `make bench-quick`) first",
              file=sys.stderr)
        return 1
    for plot in PLOTS:
        series = find_series(results, plot.series)
        path = args.out_dir / f"{plot.series}.png"
        draw(plot, series, results, path)
        state = f"{len(series['points'])} points" if series else "not in the results: a placeholder"
        print(f"{path}: {state}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
