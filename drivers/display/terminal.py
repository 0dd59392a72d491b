"""A Display drawn in a terminal with ANSI escapes: a boxed LCD, for development and the QEMU console.

Owns the box layout (a border around rows x cols cells, a status line of icon tags below),
redrawing only the lines that changed, and wide characters taking two terminal columns.
"""

from __future__ import annotations

import sys
from typing import TextIO

from drivers.display import check_frame, fit_row
from firmware.ports import Frame, Icon, char_cells

ICON_TAGS: dict[Icon, str] = {
    Icon.LINK_UP: "NET",
    Icon.LINK_DOWN: "NO-NET",
    Icon.PAPER_OK: "PAPER",
    Icon.PAPER_OUT: "NO-PAPER",
    Icon.REVERSAL_DUE: "REV",
    Icon.ADVICE_DUE: "ADV",
    Icon.LOCKED: "LOCK",
    Icon.BUSY: "BUSY",
}

CSI = "\x1b["
INVERSE, NORMAL = f"{CSI}7m", f"{CSI}0m"
HIDE_CURSOR, SHOW_CURSOR = f"{CSI}?25l", f"{CSI}?25h"
CLEAR_SCREEN, ERASE_TO_EOL = f"{CSI}2J", f"{CSI}K"


def _columns(line: str) -> int:
    """Terminal columns a drawn line takes (escape sequences take none, CJK two)."""
    plain = line.replace(INVERSE, "").replace(NORMAL, "")
    return sum(char_cells(ch) for ch in plain)


def move_to(line: int, column: int) -> str:
    """Cursor position (1-based), ANSI CUP."""
    return f"{CSI}{line};{column}H"


class TerminalDisplay:
    """firmware.ports.Display on a text stream (stdout by default), at (top, left), 1-based."""

    def __init__(self, rows: int, cols: int, stream: TextIO | None = None, *,
                 top: int = 1, left: int = 1, clear: bool = True, width: int | None = None) -> None:
        self.rows, self.cols = rows, cols
        self._stream = stream if stream is not None else sys.stdout
        self._top, self._left = top, left
        self._clear = clear
        # width: pad every line to this many columns instead of erasing to the end of the line,
        # so text beside the box (a console's legend) survives redraws.
        self._width = width
        # Icon tags wrap onto as many status lines as all of them need at this width (a display
        # test shows every icon), so none is drawn past the width, over the text beside the box.
        self._status_lines = len(self._icon_lines(frozenset(Icon), pad=False))
        self._drawn: list[str] | None = None  # the lines now on screen, as written
        self._closed = False

    def show(self, frame: Frame) -> None:
        if self._closed:
            raise ValueError("this terminal display is closed")
        check_frame(frame, self.rows)
        lines = self._lines(frame)
        out: list[str] = []
        if self._drawn is None:
            out.append(HIDE_CURSOR)
            if self._clear:
                out.append(CLEAR_SCREEN)
            self._drawn = [""] * len(lines)
        for i, (line, before) in enumerate(zip(lines, self._drawn, strict=True)):
            if line != before:
                tail = ERASE_TO_EOL if self._width is None else " " * max(0, self._width - _columns(line))
                out.append(move_to(self._top + i, self._left) + line + tail)
        self._drawn = lines
        if out:
            self._stream.write("".join(out))
            self._stream.flush()

    def close(self) -> None:
        """Puts the cursor back, below the box, so the shell continues underneath."""
        if self._closed:
            return
        self._closed = True
        if self._drawn is not None:
            self._stream.write(move_to(self._top + len(self._drawn), 1) + SHOW_CURSOR)
            self._stream.flush()

    def _lines(self, frame: Frame) -> list[str]:
        border = "─" * self.cols
        lines = [f"┌{border}┐"]
        for r, text in enumerate(frame.rows):
            fitted = fit_row(text, self.cols)
            padding = " " * (self.cols - sum(cells for _, cells in fitted))
            content = "".join(ch for ch, _ in fitted) + padding
            if r == frame.inverse_row:
                content = INVERSE + content + NORMAL
            lines.append(f"│{content}│")
        lines.append(f"└{border}┘")
        return lines + self._icon_lines(frame.icons)

    def _icon_lines(self, icons: frozenset[Icon], pad: bool = True) -> list[str]:
        """The icon tags under the box: one line, or with a width as many lines of at most that
        many columns as every icon would need (the unused ones blank, to erase what was there)."""
        tags = [f"[{ICON_TAGS[icon]}]" for icon in Icon if icon in icons]
        if self._width is None:
            return [" ".join(tags)]
        lines = [""]
        for tag in tags:
            joined = f"{lines[-1]} {tag}" if lines[-1] else tag
            if len(joined) <= self._width:
                lines[-1] = joined
            else:
                lines.append(tag)
        return lines + [""] * (self._status_lines - len(lines)) if pad else lines
