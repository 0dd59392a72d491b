"""The Protocols the drivers implement, and the plain data that crosses them.

drivers/ may import this module and nothing else from firmware/; firmware/app/devices.py picks
the concrete driver from the board profile. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# ---- keypad ----------------------------------------------------------------


class Key(enum.StrEnum):
    """The firmware's keys; each board's key map turns its key codes into these."""

    D0 = "0"
    D1 = "1"
    D2 = "2"
    D3 = "3"
    D4 = "4"
    D5 = "5"
    D6 = "6"
    D7 = "7"
    D8 = "8"
    D9 = "9"
    D00 = "00"
    DOT = "."
    ENTER = "ENTER"
    CANCEL = "CANCEL"
    CLEAR = "CLEAR"
    UP = "UP"
    DOWN = "DOWN"
    F1 = "F1"
    F2 = "F2"
    F3 = "F3"
    F4 = "F4"
    MENU = "MENU"


@dataclass(frozen=True)
class KeyPress:
    key: Key
    at: float  # time.monotonic() when the key went down (or repeated)
    repeat: bool = False  # an auto-repeat of a held key, not a new press


@runtime_checkable
class Keypad(Protocol):
    async def next_key(self) -> KeyPress:
        """Waits for the next key; cancellable. Never returns an unmapped key."""
        ...

    def close(self) -> None: ...


# ---- display ---------------------------------------------------------------


class Icon(enum.StrEnum):
    LINK_UP = "link_up"
    LINK_DOWN = "link_down"
    PAPER_OK = "paper_ok"
    PAPER_OUT = "paper_out"
    REVERSAL_DUE = "reversal_due"
    ADVICE_DUE = "advice_due"
    LOCKED = "locked"
    BUSY = "busy"


@dataclass(frozen=True)
class Frame:
    """What the LCD shows: a text grid, at most one inverse row, status icons.

    rows has exactly the display's row count; a row is cut to the display's
    width in cells, where a CJK character takes two cells (see text_cells()).
    """

    rows: tuple[str, ...]
    inverse_row: int | None = None
    icons: frozenset[Icon] = frozenset()


def char_cells(ch: str) -> int:
    """Cells one character takes on the LCD grid and on the printer: 2 for wide (CJK)."""
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_cells(text: str) -> int:
    return sum(char_cells(ch) for ch in text)


@runtime_checkable
class Display(Protocol):
    rows: int
    cols: int

    def show(self, frame: Frame) -> None:
        """Draws the frame at once (no waiting on anything but the bus)."""
        ...

    def close(self) -> None: ...


# ---- card reader -----------------------------------------------------------


@dataclass(frozen=True)
class MagstripeRead:
    """Raw tracks without sentinels or LRC; None where a track was blank or unreadable.

    Lives only in memory: never log, persist or repr the track data.
    """

    track1: str | None = field(default=None, repr=False)
    track2: str | None = field(default=None, repr=False)
    track3: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        present = [str(i) for i, t in enumerate((self.track1, self.track2, self.track3), 1) if t]
        return f"MagstripeRead(tracks={','.join(present) or 'none'})"


@dataclass(frozen=True)
class ChipInserted:
    atr: bytes = b""


@dataclass(frozen=True)
class ChipRemoved:
    pass


@dataclass(frozen=True)
class ReadFailed:
    """The reader saw a card but could not read it; reason is in words."""

    reason: str


@dataclass(frozen=True)
class ReadTimedOut:
    pass


ReaderEvent = MagstripeRead | ChipInserted | ChipRemoved | ReadFailed | ReadTimedOut


class ReaderUnavailable(Exception):
    """The reader does not answer or its device is gone; the message says which."""


class ChipGone(Exception):
    """The chip card was removed, or stopped answering, during an exchange; the message says
    which. Raised by CardReader.transmit; the transaction's chip session is over."""


@runtime_checkable
class CardReader(Protocol):
    async def version(self) -> str: ...

    async def read(self, *, magstripe: bool = True, chip: bool = True,
                   timeout_s: float = 60.0) -> ReaderEvent:
        """Arms the reader and waits for one event.

        Cancelling the awaiting task (operator CANCEL) disarms the reader at
        once and returns no event. Raises ReaderUnavailable if the reader is
        gone and does not come back within the wait.
        """
        ...

    async def transmit(self, apdu: bytes, timeout_s: float = 5.0) -> bytes:
        """Sends one command APDU to the inserted chip card (after a ChipInserted event) and
        returns its response APDU: data followed by SW1 SW2. The transport handles its own
        protocol details (T=0 GET RESPONSE on 61xx, a resend on 6Cxx), so the caller sees one
        complete response per command. Raises ChipGone if the card was removed or is mute;
        ReaderUnavailable if the reader itself is gone. Readers without a chip slot raise
        ChipGone("no chip slot")."""
        ...

    async def chip_present(self) -> bool:
        """Whether a chip card sits in the slot now (powered or not)."""
        ...

    async def power_off(self) -> None:
        """Deactivates the chip card (end of its session); removal is still the cardholder's."""
        ...

    async def beep(self, ms: int = 100) -> None: ...

    async def led(self, colour: str, on: bool) -> None: ...

    async def close(self) -> None: ...


# ---- printer ---------------------------------------------------------------


class Align(enum.StrEnum):
    LEFT = "left"
    CENTER = "center"
    RIGHT = "right"


@dataclass(frozen=True)
class TextLine:
    """One printed line. The layout has already fitted it to the printer's columns
    (CJK characters take two columns); the driver never wraps."""

    text: str
    align: Align = Align.LEFT
    bold: bool = False
    double: bool = False  # double width and height: the line holds half the columns


@dataclass(frozen=True)
class Image:
    """8-bit gray (0 black .. 255 white), row-major; printed through the raster path."""

    gray: bytes = field(repr=False)
    width: int
    height: int
    dither: bool = True  # Floyd-Steinberg; False = threshold at 128


@dataclass(frozen=True)
class Feed:
    lines: int = 1


@dataclass(frozen=True)
class Cut:
    partial: bool = True


Block = TextLine | Image | Feed | Cut


@dataclass(frozen=True)
class Document:
    """One copy of a receipt, slip or report, device-independent."""

    blocks: tuple[Block, ...]
    title: str = ""  # for logs and the print queue listing; never sensitive
    density: int | None = None  # print darkness 1 (light) .. 4 (normal) .. 8 (dark); None: as set


@dataclass(frozen=True)
class PrinterStatus:
    online: bool = True
    paper_out: bool = False
    cover_open: bool = False
    paper_near_end: bool = False

    @property
    def ready(self) -> bool:
        return self.online and not self.paper_out and not self.cover_open

    @property
    def problem(self) -> str | None:
        """The i18n key of what stops printing, or None."""
        if self.cover_open:
            return "printer_cover_open"
        if self.paper_out:
            return "printer_paper_out"
        if not self.online:
            return "printer_offline"
        return None


class PrinterPaused(Exception):
    """Printing stopped mid-copy (paper out, cover open, offline).

    printed_any says whether any line of this copy reached the paper, which is
    what decides how a CANCEL in PAUSED is handled (cancel-semantics.md).
    """

    def __init__(self, status: PrinterStatus, printed_any: bool) -> None:
        self.status = status
        self.printed_any = printed_any
        super().__init__(status.problem or "printer paused")


class PrinterUnavailable(Exception):
    """No answer from the printer (unplugged, wrong port); the message says which."""


Progress = Callable[[int, int], None]  # (lines done, lines in the copy)


@runtime_checkable
class Printer(Protocol):
    columns: int  # text columns at normal width (32 on 58 mm, 48 on 80 mm)

    async def status(self) -> PrinterStatus: ...

    async def print_document(self, doc: Document, progress: Progress | None = None) -> None:
        """Prints one whole copy and returns once the printer confirmed it.

        Raises PrinterPaused if paper, cover or power stop it part way (what
        printed stays printed; the caller decides about the rest), or
        PrinterUnavailable if the printer does not answer.
        """
        ...

    async def close(self) -> None: ...
