"""Display drivers (capture, terminal, luma.core) and the grid rules they share.

Owns fitting a row of text to the LCD grid (CJK takes two cells, cut at a cell boundary,
unprintable characters shown as '?'), checking a Frame against the display, and the
error a display raises when its device is missing.
"""

from __future__ import annotations

import unicodedata

from firmware.ports import Frame, char_cells

CELL_W, CELL_H = 8, 16  # pixels of one grid cell: Unifont's half-width glyph
UNPRINTABLE = "?"
# Control, format, surrogate, private-use, unassigned, combining and separator characters
# have no cell of their own (and control bytes would drive a terminal); show them as '?'.
_NO_CELL = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Mn", "Me", "Mc", "Zl", "Zp"})


class DisplayUnavailable(OSError):
    """The display's device is missing or cannot be driven; the message names it."""


def printable(ch: str) -> str:
    return UNPRINTABLE if unicodedata.category(ch) in _NO_CELL else ch


def fit_row(text: str, cols: int) -> list[tuple[str, int]]:
    """(character, cells) pairs that fit in cols cells; a CJK character that would be cut
    in half is left out whole."""
    fitted: list[tuple[str, int]] = []
    used = 0
    for ch in text:
        ch = printable(ch)
        cells = char_cells(ch)
        if used + cells > cols:
            break
        fitted.append((ch, cells))
        used += cells
    return fitted


def fitted_text(text: str, cols: int) -> str:
    return "".join(ch for ch, _ in fit_row(text, cols))


def check_frame(frame: Frame, rows: int) -> None:
    """Raises ValueError, in words, for a frame this display cannot show as meant."""
    if len(frame.rows) != rows:
        raise ValueError(f"frame has {len(frame.rows)} rows; this display has {rows}")
    if frame.inverse_row is not None and not 0 <= frame.inverse_row < rows:
        raise ValueError(f"inverse row {frame.inverse_row} is outside the display's rows 0..{rows - 1}")
    for i, row in enumerate(frame.rows):
        if not isinstance(row, str):
            raise ValueError(f"row {i} is {type(row).__name__}, not text")
