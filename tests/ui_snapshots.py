"""Snapshot files for screens: a Frame as a readable text grid, compared with a diff on failure.

Snapshots live in tests/snapshots/ui/<name>.txt. Set UPDATE_SNAPSHOTS=1 to (re)write them after
an intended change, then read the diff in git before committing.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from firmware.ports import Frame, Icon, text_cells

SNAPSHOT_DIR = Path(__file__).parent / "snapshots" / "ui"


def grid(frame: Frame, cols: int) -> str:
    """The frame as the LCD shows it: a box of cols cells, '>' marking the inverse row, icons below."""
    lines = ["+" + "-" * cols + "+"]
    for i, row in enumerate(frame.rows):
        padding = " " * max(0, cols - text_cells(row))
        mark = ">" if i == frame.inverse_row else "|"
        lines.append(f"{mark}{row}{padding}|")
    lines.append("+" + "-" * cols + "+")
    icons = [icon.value for icon in Icon if icon in frame.icons]
    lines.append("icons: " + (" ".join(icons) if icons else "-"))
    return "\n".join(lines) + "\n"


def assert_snapshot(name: str, frame: Frame, cols: int) -> None:
    got = grid(frame, cols)
    path = SNAPSHOT_DIR / f"{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got, encoding="utf-8")
        return
    if not path.exists():
        raise AssertionError(f"snapshot {path} is missing; run with UPDATE_SNAPSHOTS=1, read it, commit it."
                             f"\nThe screen now shows:\n{got}")
    want = path.read_text(encoding="utf-8")
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            f"{name} (snapshot)", f"{name} (now)"))
        raise AssertionError(f"screen {name} differs from its snapshot:\n{diff}\n"
                             "(UPDATE_SNAPSHOTS=1 rewrites snapshots after an intended change)")
