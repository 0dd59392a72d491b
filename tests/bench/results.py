"""The one recorder of benchmark figures: what a bench script measured, in a form a machine reads.

A bench script calls `emit()` for each headline figure and `emit_series()` for each scaling
curve, at the end of its run; both return the entry they recorded. When the environment names
a file in POSFW_BENCH_RESULTS (run_all.py does), each entry is appended to it as one JSON line;
otherwise nothing is written, so every script still runs on its own and prints its own table.
run_all.py reads the lines back with `read_entries()` and writes var/bench/results.json.

An entry's pass/fail is computed here, from its target, and nowhere else:
  target = {"op": "<" | "<=" | ">=" | ">", "value": number, "of": "value" | "ratio"}
compares the figure's value (or its ratio to the floor or peer it names) with the target's value.
No target: "pass" is None (a figure recorded for information).
"""

from __future__ import annotations

import json
import math
import operator
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ENV = "POSFW_BENCH_RESULTS"

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">=": operator.ge, ">": operator.gt}


def verdict(value: float | None, ratio: float | None, target: dict[str, Any] | None) -> bool | None:
    """True/False against the target; None without a target or without the number it judges."""
    if target is None:
        return None
    measured = ratio if target.get("of", "value") == "ratio" else value
    if measured is None or isinstance(measured, bool) or not math.isfinite(measured):
        return None
    return _OPS[target["op"]](measured, target["value"])


def _check_target(target: dict[str, Any] | None) -> dict[str, Any] | None:
    if target is None:
        return None
    if target.get("op") not in _OPS:
        raise ValueError(f"target op must be one of {sorted(_OPS)}: {target!r}")
    of = target.get("of", "value")
    if of not in ("value", "ratio"):
        raise ValueError(f"target 'of' must be 'value' or 'ratio': {target!r}")
    return {"op": target["op"], "value": float(target["value"]), "of": of}


def _check_floor(floor: dict[str, Any] | None) -> dict[str, Any] | None:
    if floor is None:
        return None
    missing = {"name", "value", "unit"} - floor.keys()
    if missing:
        raise ValueError(f"floor needs {sorted(missing)}: {floor!r}")
    return {"name": str(floor["name"]), "value": floor["value"], "unit": str(floor["unit"])}


def _number(value: Any) -> Any:
    """JSON has no NaN or infinity: those are recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _append(entry: dict[str, Any]) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = (json.dumps(entry, sort_keys=True, allow_nan=False) + "\n").encode()
    # One write on an O_APPEND file: a line is never interleaved with another process's.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def emit(name: str, value: float | int | bool | None, unit: str, *, group: str,
         floor: dict[str, Any] | None = None, ratio: float | None = None,
         target: dict[str, Any] | None = None, note: str | None = None) -> dict[str, Any]:
    """Record one figure; returns the entry (with "pass" computed from the target).

    floor: what the figure is compared with ({"name", "value", "unit"}: a floor or a peer);
    ratio: value / floor (or whichever quotient the target judges), given by the caller;
    target: {"op", "value", "of": "value" | "ratio"}.
    """
    target = _check_target(target)
    if target is not None and target["of"] == "ratio" and ratio is None:
        raise ValueError(f"{name}: a target of the ratio needs the ratio")
    entry = {
        "kind": "figure", "name": name, "group": group, "value": _number(value), "unit": unit,
        "floor": _check_floor(floor), "ratio": _number(ratio), "target": target,
        "pass": verdict(_number(value), _number(ratio), target), "note": note,
    }
    _append(entry)
    return entry


def emit_series(name: str, x_label: str, x_unit: str, y_label: str, y_unit: str,
                points: Iterable[Sequence[float]], group: str,
                floor_points: Iterable[Sequence[float]] | None = None) -> dict[str, Any]:
    """Record one scaling curve: points are (x, y) pairs, in any order (stored sorted by x);
    floor_points, when given, are the floor's (x, y) pairs drawn as a second line."""
    def pairs(raw: Iterable[Sequence[float]]) -> list[list[float | None]]:
        out: list[list[float | None]] = []
        for x, y in raw:
            if isinstance(x, bool) or not math.isfinite(x):
                raise ValueError(f"{name}: x must be a finite number, not {x!r}")
            out.append([x, _number(y)])  # y may be null: that point was not measured
        return sorted(out, key=lambda p: p[0])  # type: ignore[arg-type, return-value]

    entry = {
        "kind": "series", "name": name, "group": group,
        "x_label": x_label, "x_unit": x_unit, "y_label": y_label, "y_unit": y_unit,
        "points": pairs(points),
        "floor_points": None if floor_points is None else pairs(floor_points),
    }
    _append(entry)
    return entry


def read_entries(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(figures, series) from a file of JSON lines; a line that is not JSON (a script killed
    mid-write) is skipped. The "kind" key is dropped from each entry."""
    figures: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    try:
        text = path.read_text()
    except FileNotFoundError:
        return figures, series
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(entry, dict):
            continue
        kind = entry.pop("kind", None)
        if kind == "figure":
            figures.append(entry)
        elif kind == "series":
            series.append(entry)
    return figures, series


def write_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write JSON to `path` so a reader sees the old file or the new one, never half of one: the
    firmware's own durable write (a temporary file beside it, fsync'd, renamed, the directory
    fsync'd)."""
    from firmware.app.core.custody import write_private

    write_private(path, (json.dumps(document, indent=1, allow_nan=False) + "\n").encode())
