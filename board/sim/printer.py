"""The emulated ESC/POS thermal printer: a real pseudo-terminal pair served by its own thread, an
ESC/POS decoder that turns what arrives into slips (text lines with their attributes, raster
pixels), real DLE EOT status bytes, and the faults a merchant meets (paper, cover, power, cable).

Theory of operation: the thread waits with a selector on the pty master and a wake-up pipe. Bytes
read (at most `set_speed` bytes per second: a slow printer leaves them in the pty, so the writer
blocks, as on a real port) go to EscPosDecoder.feed(), which returns the real-time replies to
write back. Controls change the decoder's state under one lock; the ones that touch file
descriptors (unplug, replug, stop) run on the thread. A Condition is notified after every change,
so tests wait for slips without sleeping.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import io
import os
import queue
import selectors
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

from drivers.printer.profiles import FONT_A_WIDTH, LINE_PITCH, PrinterProfile, get_profile
from drivers.printer.render import (
    OFFLINE_COVER_OPEN,
    OFFLINE_PAPER_END_STOP,
    PRINTER_OFFLINE,
    ROLL_NEAR_END,
    ROLL_PAPER_OUT,
    STATUS_FIXED_BITS,
    STATUS_OFFLINE_CAUSE,
    STATUS_PRINTER,
    STATUS_ROLL_SENSOR,
    TEXT_ENCODING_CHINESE,
    packed_to_image,
    text_image,
)
from firmware.ports import char_cells

__all__ = ["EmulatedPrinter", "EscPosDecoder", "PrintedLine", "RasterImage", "Slip", "UnknownCommand"]

LINK_NAME = "printer-tty"
ESC, FS, GS, DLE = 0x1B, 0x1C, 0x1D, 0x10
LF, CR, HT, FF, EOT, ENQ, DC4 = 0x0A, 0x0D, 0x09, 0x0C, 0x04, 0x05, 0x14
TAB_COLUMNS = 8
MAX_RASTER_ROWS = 4095  # larger GS v 0 heights are taken as garbage, not as a picture to wait for

# Fixed-length commands: argument bytes after the two command bytes. Those without an effect on
# what the emulator draws (line spacing, density, peripherals...) are accepted and ignored.
ESC_ARGS = {
    ord("@"): 0, ord("!"): 1, ord("E"): 1, ord("G"): 1, ord("a"): 1, ord("t"): 1, ord("d"): 1,
    ord("J"): 1, ord("M"): 1, ord("-"): 1, ord("2"): 0, ord("3"): 1, ord("+"): 1, ord("A"): 1,
    ord("{"): 1, ord("r"): 1, ord("V"): 1, ord("="): 1, ord("R"): 1, ord(" "): 1, ord("p"): 3,
    ord("B"): 2, ord("K"): 1, ord("?"): 2, ord("$"): 2, ord("\\"): 2, ord("i"): 0, ord("m"): 0,
    ord("U"): 1, ord("L"): 0, ord("S"): 0, ord("T"): 1, ord("W"): 8, ord("e"): 1, ord("c"): 2,
}
GS_ARGS = {
    ord("!"): 1, ord("B"): 1, ord("b"): 1, ord("|"): 1, ord("L"): 2, ord("W"): 2, ord("H"): 1,
    ord("f"): 1, ord("h"): 1, ord("w"): 1, ord("a"): 1, ord("r"): 1, ord("I"): 1, ord("/"): 1,
    ord("P"): 2,
}
FS_ARGS = {ord("&"): 0, ord("."): 0, ord("!"): 1, ord("-"): 1, ord("C"): 1, ord("S"): 2, ord("W"): 1,
           ord("p"): 2}


# ---- what comes out of the printer -------------------------------------------------------------


@dataclass
class RasterImage:
    """Raster pixels as received: rows of width/8 bytes, 1 = black, MSB leftmost."""

    width: int
    height: int
    packed: bytearray = field(repr=False)
    scale_x: int = 1  # GS v 0 m: double width / double height
    scale_y: int = 1

    @property
    def row_bytes(self) -> int:
        return self.width // 8

    def pixel(self, x: int, y: int) -> bool:
        return bool(self.packed[y * self.row_bytes + x // 8] & (0x80 >> (x % 8)))

    def to_image(self) -> PILImage.Image:
        picture = packed_to_image(bytes(self.packed), self.width, self.height)
        if self.scale_x != 1 or self.scale_y != 1:
            picture = picture.resize((self.width * self.scale_x, self.height * self.scale_y),
                                     PILImage.Resampling.NEAREST)
        return picture


@dataclass
class PrintedLine:
    """One printed line: text with the attributes it printed with, or a raster picture."""

    text: str = ""
    align: str = "left"
    bold: bool = False
    width_mult: int = 1
    height_mult: int = 1
    underline: int = 0
    chinese: bool = False  # some of the line came in Chinese (GB18030) character mode
    image: RasterImage | None = None

    @property
    def double_width(self) -> bool:
        return self.width_mult >= 2

    @property
    def double_height(self) -> bool:
        return self.height_mult >= 2

    @property
    def double(self) -> bool:
        return self.double_width and self.double_height

    @property
    def display(self) -> str:
        if self.image is not None:
            return f"[image {self.image.width * self.image.scale_x}x{self.image.height * self.image.scale_y}]"
        return self.text


@dataclass
class Slip:
    """A piece of paper: the lines printed since the last cut, and how it was cut (None: still on)."""

    records: list[PrintedLine] = field(default_factory=list)
    cut: str | None = None  # "full" | "partial"
    paper_dots: int = 384

    @property
    def lines(self) -> list[str]:
        return [record.display for record in self.records]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def to_image(self) -> PILImage.Image:
        """The slip as it would look: text in Unifont with its attributes, raster pixels as received."""
        paper_dots = self.paper_dots
        parts: list[tuple[int, PILImage.Image | int]] = []
        for record in self.records:
            if record.image is not None:
                picture = record.image.to_image()
            elif record.text:
                picture = text_image(record.text, bold=record.bold, width_mult=record.width_mult,
                                     height_mult=record.height_mult)
            else:
                parts.append((0, LINE_PITCH * record.height_mult))
                continue
            free = max(paper_dots - picture.width, 0)
            x = {"center": free // 2, "right": free}.get(record.align, 0)
            parts.append((x, picture))
        height = sum(p.height if isinstance(p, PILImage.Image) else p for _, p in parts)
        page = PILImage.new("L", (paper_dots, max(height, 1)), 255)
        y = 0
        for x, part in parts:
            if isinstance(part, int):
                y += part
                continue
            page.paste(part.crop((0, 0, min(part.width, paper_dots - x), part.height)), (x, y))
            y += part.height
        return page

    def png_bytes(self) -> bytes:
        out = io.BytesIO()
        self.to_image().convert("1").save(out, format="PNG")
        return out.getvalue()

    def save_png(self, path: str | Path) -> None:
        Path(path).write_bytes(self.png_bytes())


@dataclass(frozen=True)
class UnknownCommand:
    """Bytes the printer could not take as a command it prints, and why, in words."""

    data: bytes
    reason: str

    def __repr__(self) -> str:
        head = self.data[:16].hex(" ")
        more = f" ... ({len(self.data)} bytes)" if len(self.data) > 16 else ""
        return f"UnknownCommand({head}{more}: {self.reason})"


@cache
def _code_pages(escpos_profile_name: str) -> dict[int, str]:
    """ESC t n -> Python codec, from the python-escpos capability profile of the paper width."""
    from drivers.printer.profiles import import_escpos

    import_escpos()
    from escpos.capabilities import get_profile_class  # type: ignore[import-untyped]

    pages: dict[int, str] = {}
    for number, name in get_profile_class(escpos_profile_name).profile_data.get("codePages", {}).items():
        with contextlib.suppress(LookupError, TypeError):
            pages[int(number)] = codecs.lookup(str(name).lower()).name
    return pages


# ---- the decoder: the printer's firmware -----------------------------------------------------


@dataclass
class _Style:
    align: str = "left"
    bold: bool = False
    width_mult: int = 1
    height_mult: int = 1
    underline: int = 0


class EscPosDecoder:
    """ESC/POS bytes in, slips out; the paper and cover state; the DLE EOT replies.

    feed() takes any chunking (a command split across reads waits for its tail) and never
    raises on bad input: what it cannot take goes to unknown_commands with its bytes.
    Not thread-safe: EmulatedPrinter serialises access.
    """

    def __init__(self, profile: str | PrinterProfile = "58mm", *, chinese_by_default: bool = False) -> None:
        self.profile = get_profile(profile)
        # Chinese-market firmware can be set to start in Chinese character mode (FS & at power-on
        # and ESC @); the default here is the strict case, as shipped for export.
        self.chinese_by_default = chinese_by_default
        self.slips: list[Slip] = []
        self.current = Slip(paper_dots=self.profile.dots)
        self.unknown_commands: list[UnknownCommand] = []
        self.paper_out = False
        self.cover_open = False
        self.paper_near_end = False
        self.lines_until_paper_out: int | None = None
        self.lines_printed = 0
        self.lines_discarded = 0  # print data that arrived while paper out or cover open
        self.status_queries = 0
        self.garbage_replies: list[int] = []  # answer the next DLE EOT with these bytes instead
        self._pending = bytearray()
        self.reset()

    # ---- state ----------------------------------------------------------------------------------

    def reset(self) -> None:
        """ESC @ (and power-on): modes back to defaults, the unprinted line dropped."""
        self.style = _Style()
        self.chinese_mode = self.chinese_by_default
        self.code_page = 0
        self._chars: list[str] = []
        self._line_dots = 0
        self._line_style: _Style | None = None
        self._line_chinese = False
        self._last_was_raster = False
        self._decoder = self._new_text_decoder()

    @property
    def pending(self) -> bytes:
        """Received bytes not consumed yet: the head of a command still waiting for its tail."""
        return bytes(self._pending)

    def power_cycle(self) -> None:
        self._pending.clear()
        self.reset()

    @property
    def can_print(self) -> bool:
        return not self.paper_out and not self.cover_open

    def status_byte(self, n: int) -> int:
        """The real DLE EOT n reply for the current state (fixed bits included)."""
        offline = not self.can_print
        byte = STATUS_FIXED_BITS
        if n == STATUS_PRINTER and offline:
            byte |= PRINTER_OFFLINE
        elif n == STATUS_OFFLINE_CAUSE:
            byte |= (OFFLINE_COVER_OPEN if self.cover_open else 0)
            byte |= (OFFLINE_PAPER_END_STOP if self.paper_out else 0)
        elif n == STATUS_ROLL_SENSOR:
            byte |= (ROLL_NEAR_END if self.paper_near_end or self.paper_out else 0)
            byte |= (ROLL_PAPER_OUT if self.paper_out else 0)
        return byte

    # ---- input ----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Consumes data; returns the bytes the printer sends back (status replies)."""
        self._pending += data
        replies = bytearray()
        pos = 0
        while pos < len(self._pending):
            used = self._step(pos, replies)
            if used == 0:
                break  # a command waiting for the rest of its bytes
            pos += used
        del self._pending[:pos]
        return bytes(replies)

    def _unknown(self, data: bytes | bytearray, reason: str) -> None:
        self.unknown_commands.append(UnknownCommand(bytes(data), reason))

    def _step(self, pos: int, replies: bytearray) -> int:
        buf = self._pending
        byte = buf[pos]
        if byte >= 0x20:
            end = pos
            while end < len(buf) and buf[end] >= 0x20:
                end += 1
            self._text(bytes(buf[pos:end]))
            return end - pos
        if byte in (LF, FF):
            self._end_line()
            return 1
        if byte == CR:
            return 1  # LF prints; CR alone is ignored, as on most roll printers
        if byte == HT:
            columns = self._line_dots // FONT_A_WIDTH
            self._text_chars(" " * (TAB_COLUMNS - columns % TAB_COLUMNS))
            return 1
        if byte in (ESC, GS, FS, DLE):
            if pos + 1 >= len(buf):
                return 0
            if buf[pos + 1] < 0x20 and not (byte == DLE and buf[pos + 1] in (EOT, ENQ, DC4)):
                # No command is a prefix and a control byte: drop the prefix alone, so the LF
                # (or ESC) after it still counts.
                self._unknown(buf[pos:pos + 1], f"0x{byte:02X} followed by control byte "
                              f"0x{buf[pos + 1]:02X} is not a command")
                return 1
            handler = {ESC: self._esc, GS: self._gs, FS: self._fs, DLE: self._dle}[byte]
            return handler(pos, replies)
        self._unknown(buf[pos:pos + 1], f"control byte 0x{byte:02X} is not a command")
        return 1

    def _fixed(self, pos: int, table: dict[int, int], prefix: str) -> tuple[int, bytes] | int:
        """(length, args) of a fixed-length command; 0 if incomplete; -1 if unknown."""
        cmd = self._pending[pos + 1]
        if cmd not in table:
            self._unknown(self._pending[pos:pos + 2], f"{prefix} 0x{cmd:02X} is not a command this "
                          "printer knows")
            return -1
        length = 2 + table[cmd]
        if pos + length > len(self._pending):
            return 0
        return length, bytes(self._pending[pos + 2:pos + length])

    def _esc(self, pos: int, replies: bytearray) -> int:
        buf = self._pending
        cmd = buf[pos + 1]
        if cmd == ord("*"):
            return self._skip_counted(pos, 5, lambda h: (h[3] | h[4] << 8) * (3 if h[2] >= 32 else 1),
                                      "ESC * column bit image (not drawn by the emulator)")
        if cmd == ord("D"):
            return self._skip_terminated(pos, 2, 33, "ESC D tab positions", record=False)
        found = self._fixed(pos, ESC_ARGS, "ESC")
        if isinstance(found, int):
            return 2 if found < 0 else 0
        length, args = found
        command = chr(cmd)
        if command == "@":
            self._flush_text_decoder()
            self.reset()
        elif command == "!":
            self.style.width_mult = 2 if args[0] & 0x20 else 1
            self.style.height_mult = 2 if args[0] & 0x10 else 1
            self.style.bold = bool(args[0] & 0x08)
            self.style.underline = 1 if args[0] & 0x80 else 0
        elif command in "EG":
            self.style.bold = bool(args[0] & 1)
        elif command == "-":
            self.style.underline = args[0] & 0x03 if args[0] < 0x30 else args[0] - 0x30
        elif command == "a":
            self.style.align = {0: "left", 1: "center", 2: "right"}.get(args[0] % 0x30, "left")
        elif command == "t":
            self._flush_text_decoder()
            self.code_page = args[0]
            self._decoder = self._new_text_decoder()
        elif command == "d":
            self._print_and_feed(args[0])
        elif command == "J":
            self._print_and_feed(max(1, round(args[0] / LINE_PITCH)) if args[0] else 0)
        return length

    def _gs(self, pos: int, replies: bytearray) -> int:
        buf = self._pending
        cmd = buf[pos + 1]
        if cmd == ord("v"):
            return self._raster(pos)
        if cmd == ord("V"):
            if pos + 2 >= len(buf):
                return 0
            mode = buf[pos + 2]
            if mode in (0, 1, 48, 49):
                self._cut("full" if mode in (0, 48) else "partial")
                return 3
            if mode in (65, 66, 97, 98, 103, 104):
                if pos + 3 >= len(buf):
                    return 0
                self._cut("full" if mode in (65, 97, 103) else "partial")
                return 4
            self._unknown(buf[pos:pos + 3], f"GS V with cut mode {mode} is not a cut this printer knows")
            return 3
        if cmd == ord("("):
            return self._skip_counted(pos, 5, lambda h: h[3] | h[4] << 8,
                                      f"GS ( {chr(buf[pos + 2]) if pos + 2 < len(buf) else '?'} "
                                      "(graphics / 2D code, not drawn by the emulator)")
        if cmd == ord("k"):
            if pos + 2 >= len(buf):
                return 0
            if buf[pos + 2] <= 6:
                return self._skip_terminated(pos, 3, 256, "GS k barcode (not drawn by the emulator)")
            return self._skip_counted(pos, 4, lambda h: h[3], "GS k barcode (not drawn by the emulator)")
        if cmd == ord("*"):
            return self._skip_counted(pos, 4, lambda h: h[2] * h[3] * 8,
                                      "GS * downloaded bit image (not drawn by the emulator)")
        found = self._fixed(pos, GS_ARGS, "GS")
        if isinstance(found, int):
            return 2 if found < 0 else 0
        length, args = found
        if cmd == ord("!"):
            self.style.width_mult = (args[0] >> 4 & 0x07) + 1
            self.style.height_mult = (args[0] & 0x07) + 1
        return length

    def _fs(self, pos: int, replies: bytearray) -> int:
        found = self._fixed(pos, FS_ARGS, "FS")
        if isinstance(found, int):
            return 2 if found < 0 else 0
        length, _args = found
        cmd = self._pending[pos + 1]
        if cmd in (ord("&"), ord(".")):
            self._flush_text_decoder()
            self.chinese_mode = cmd == ord("&")
            self._decoder = self._new_text_decoder()
        return length

    def _dle(self, pos: int, replies: bytearray) -> int:
        buf = self._pending
        cmd = buf[pos + 1]
        if cmd in (EOT, ENQ):
            if pos + 2 >= len(buf):
                return 0
            n = buf[pos + 2]
            if cmd == EOT:
                if n not in (1, 2, 3, 4):
                    self._unknown(buf[pos:pos + 3], f"DLE EOT {n}: n must be 1, 2, 3 or 4")
                    return 3
                self.status_queries += 1
                replies.append(self.garbage_replies.pop(0) if self.garbage_replies else self.status_byte(n))
            return 3
        if cmd == DC4:
            if pos + 4 >= len(buf):
                return 0
            return 5
        self._unknown(buf[pos:pos + 2], f"DLE 0x{cmd:02X} is not a real-time command this printer knows")
        return 2

    def _skip_counted(self, pos: int, header: int, size: Callable[[bytes], int], what: str) -> int:
        """A command with a length in its header: consumed whole, recorded as not drawn."""
        if pos + header > len(self._pending):
            return 0
        head = bytes(self._pending[pos:pos + header])
        total = header + size(head)
        if pos + total > len(self._pending):
            return 0
        self._unknown(self._pending[pos:pos + total], what)
        return total

    def _skip_terminated(self, pos: int, header: int, limit: int, what: str, *, record: bool = True) -> int:
        """A NUL-terminated command; without a NUL within limit bytes, only its head is dropped."""
        end = self._pending.find(0, pos + header, pos + header + limit)
        if end < 0:
            if len(self._pending) - pos < header + limit:
                return 0
            self._unknown(self._pending[pos:pos + header], f"{what}: no NUL terminator")
            return header
        if record:
            self._unknown(self._pending[pos:end + 1], what)
        return end + 1 - pos

    # ---- printing --------------------------------------------------------------------------------

    def _new_text_decoder(self) -> codecs.IncrementalDecoder:
        if self.chinese_mode:
            encoding = TEXT_ENCODING_CHINESE
        else:
            encoding = _code_pages(self.profile.escpos_profile).get(self.code_page, "cp437")
        return codecs.getincrementaldecoder(encoding)(errors="replace")

    def _flush_text_decoder(self) -> None:
        """A mode change ends any half-received multi-byte character (printed as U+FFFD)."""
        self._text_chars(self._decoder.decode(b"", final=True))

    def _text(self, data: bytes) -> None:
        self._text_chars(self._decoder.decode(data))

    def _text_chars(self, chars: str) -> None:
        for ch in chars:
            width = char_cells(ch) * FONT_A_WIDTH * self.style.width_mult
            if self._chars and self._line_dots + width > self.profile.dots:
                self._end_line()  # the line buffer is full: the printer prints it and goes on
            if self._line_style is None:
                self._line_style = replace(self.style)
            self._chars.append(ch)
            self._line_dots += width
            self._line_chinese |= self.chinese_mode

    def _end_line(self) -> None:
        self._flush_pending_char()
        style = self._line_style or self.style
        record = PrintedLine(text="".join(self._chars), align=style.align, bold=style.bold,
                             width_mult=style.width_mult, height_mult=style.height_mult,
                             underline=style.underline, chinese=self._line_chinese)
        self._chars, self._line_dots, self._line_style, self._line_chinese = [], 0, None, False
        self._emit(record, 1)

    def _flush_pending_char(self) -> None:
        # A line ends inside a multi-byte character only when the sender is wrong: show it.
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._chars.append(tail)
        self._decoder.reset()

    def _print_and_feed(self, lines: int) -> None:
        if lines == 0:
            if self._chars:
                self._end_line()
            return
        for _ in range(lines):
            self._end_line()

    def _emit(self, record: PrintedLine, lines: int) -> None:
        if not self.can_print:
            self.lines_discarded += lines
            return
        self._last_was_raster = record.image is not None
        self.current.records.append(record)
        self._count_printed(lines)

    def _raster(self, pos: int) -> int:
        buf = self._pending
        if pos + 2 >= len(buf):
            return 0
        if buf[pos + 2] != 0x30:
            self._unknown(buf[pos:pos + 2], "GS v: only GS v 0 (raster bit image) is known")
            return 2
        if pos + 8 > len(buf):
            return 0
        mode, x, y = buf[pos + 3] % 0x30, buf[pos + 4] | buf[pos + 5] << 8, buf[pos + 6] | buf[pos + 7] << 8
        scale_x, scale_y = (2 if mode & 1 else 1), (2 if mode & 2 else 1)
        if buf[pos + 3] not in (0, 1, 2, 3, 48, 49, 50, 51) or not 1 <= x * 8 * scale_x <= self.profile.dots \
                or not 1 <= y <= MAX_RASTER_ROWS:
            self._unknown(buf[pos:pos + 8], f"GS v 0 header m={buf[pos + 3]} x={x} bytes y={y} rows does "
                          f"not fit this printer ({self.profile.dots} dots): header dropped")
            return 8
        total = 8 + x * y
        if pos + total > len(buf):
            return 0
        if self._chars:
            self._end_line()
        rows = bytearray(buf[pos + 8:pos + total])
        last = self.current.records[-1] if self.current.records else None
        lines = -(-y * scale_y // LINE_PITCH)
        same_picture = (last is not None and last.image is not None and last.image.width == x * 8
                        and (last.image.scale_x, last.image.scale_y) == (scale_x, scale_y))
        if self._last_was_raster and self.can_print and same_picture:
            assert last is not None and last.image is not None
            last.image.packed += rows  # the next band of the same picture
            last.image.height += y
            self._count_printed(lines)
        else:
            image = RasterImage(width=x * 8, height=y, packed=rows, scale_x=scale_x, scale_y=scale_y)
            self._emit(PrintedLine(align=self.style.align, image=image), lines)
        return total

    def _count_printed(self, lines: int) -> None:
        self.lines_printed += lines
        if self.lines_until_paper_out is not None:
            self.lines_until_paper_out = max(self.lines_until_paper_out - lines, 0)
            if self.lines_until_paper_out == 0:
                self.paper_out = True
                self.lines_until_paper_out = None

    def _cut(self, kind: str) -> None:
        if self._chars:
            self._end_line()
        if not self.can_print:
            return
        self._last_was_raster = False
        self.current.cut = kind
        self.slips.append(self.current)
        self.current = Slip(paper_dots=self.profile.dots)


# ---- the device on a pseudo-terminal ---------------------------------------------------------


class EmulatedPrinter:
    """A thermal printer on a pty pair; its stable device path is link_dir / "printer-tty".

        printer = EmulatedPrinter(tmp_path).start()
        ... EscPosSerialPrinter(str(printer.path)) ...
        printer.wait_for(lambda p: len(p.slips) == 1, timeout=5)
        printer.stop()
    """

    def __init__(self, link_dir: Path, *, profile: str | PrinterProfile = "58mm",
                 chinese_by_default: bool = False) -> None:
        self.profile = get_profile(profile)
        self.path = Path(link_dir) / LINK_NAME
        self._decoder = EscPosDecoder(self.profile, chinese_by_default=chinese_by_default)
        self._cond = threading.Condition(threading.RLock())
        self._calls: queue.SimpleQueue[tuple[Callable[[], None], threading.Event]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._selector: selectors.BaseSelector | None = None
        self._master: int | None = None
        self._slave_hold: int | None = None  # keeps the pty from hanging up while no driver has it
        self._thread: threading.Thread | None = None
        self._running = False
        self.powered = True
        self.plugged = False
        self.bytes_received = 0
        self.bytes_dropped = 0  # arrived while powered off
        self.replies_dropped = 0
        self._rate: float | None = None
        self._budget = 0.0
        self._budget_at = time.monotonic()
        self._failure: BaseException | None = None

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self) -> EmulatedPrinter:
        if self._thread is not None:
            raise RuntimeError("the emulated printer is already running")
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._plug()
        self._running = True
        self._thread = threading.Thread(target=self._serve, name="emulated-printer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._on_thread(self._halt)
        self._thread.join(timeout=5)
        self._thread = None
        self._unplug()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> EmulatedPrinter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- what it printed ---------------------------------------------------------------------------

    @property
    def slips(self) -> list[Slip]:
        with self._cond:
            return list(self._decoder.slips)

    @property
    def current(self) -> Slip:
        with self._cond:
            return self._decoder.current

    @property
    def unknown_commands(self) -> list[UnknownCommand]:
        with self._cond:
            return list(self._decoder.unknown_commands)

    @property
    def decoder(self) -> EscPosDecoder:
        """The printer's state machine (read it under wait_for or after the data arrived)."""
        return self._decoder

    def wait_for(self, condition: Callable[[EmulatedPrinter], bool], timeout: float = 5.0) -> bool:
        """Waits until condition(self) holds (checked after every change); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: condition(self), timeout)

    # ---- controls -----------------------------------------------------------------------------------

    def paper_out_after(self, lines: int) -> None:
        """The roll runs out after `lines` more printed lines (0: out now)."""
        if lines < 0:
            raise ValueError(f"lines must be 0 or more, not {lines}")
        with self._cond:
            self._decoder.lines_until_paper_out = lines or None
            if lines == 0:
                self._decoder.paper_out = True
            self._cond.notify_all()

    def load_paper(self) -> None:
        with self._cond:
            self._decoder.paper_out = False
            self._decoder.paper_near_end = False
            self._decoder.lines_until_paper_out = None
            self._cond.notify_all()

    def set_near_end(self, near_end: bool) -> None:
        with self._cond:
            self._decoder.paper_near_end = near_end
            self._cond.notify_all()

    def open_cover(self) -> None:
        with self._cond:
            self._decoder.cover_open = True
            self._cond.notify_all()

    def close_cover(self) -> None:
        with self._cond:
            self._decoder.cover_open = False
            self._cond.notify_all()

    def set_speed(self, bytes_per_second: float | None) -> None:
        """Reads at most this many bytes per second from the port (None: as fast as they come)."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError(f"speed must be a positive number of bytes per second, not {bytes_per_second}")
        with self._cond:
            self._rate = bytes_per_second
            self._budget, self._budget_at = 0.0, time.monotonic()
        self._wake()

    def power_off(self) -> None:
        """No replies; what arrives is lost; the unprinted line and modes are lost too."""
        with self._cond:
            self.powered = False
            self._decoder.power_cycle()
            self._cond.notify_all()

    def power_on(self) -> None:
        with self._cond:
            self.powered = True
            self._decoder.power_cycle()
            self._cond.notify_all()

    def unplug(self) -> None:
        """The cable is pulled: the pty master closes (the driver's side hangs up), the path goes."""
        self._on_thread(self._unplug)

    def replug(self) -> None:
        """A new pty; the stable path points at it."""
        self._on_thread(self._plug)

    def garbage_status(self, byte: int = 0xFF, times: int = 1) -> None:
        """Answers the next `times` DLE EOT queries with `byte` (a noisy line)."""
        if not 0 <= byte <= 0xFF or times < 0:
            raise ValueError("byte must be 0..255 and times 0 or more")
        with self._cond:
            self._decoder.garbage_replies = [byte] * times

    def send_noise(self, data: bytes) -> None:
        """Unsolicited bytes towards the host (a printer's boot banner, an XOFF...)."""
        self._on_thread(lambda: self._reply(data))

    def state(self) -> dict[str, Any]:
        with self._cond:
            d = self._decoder
            return {"path": str(self.path), "profile": self.profile.name, "powered": self.powered,
                    "plugged": self.plugged, "paper_out": d.paper_out, "paper_near_end": d.paper_near_end,
                    "cover_open": d.cover_open, "speed": self._rate, "bytes_received": self.bytes_received,
                    "slips": len(d.slips), "lines_printed": d.lines_printed,
                    "lines_discarded": d.lines_discarded, "unknown_commands": len(d.unknown_commands)}

    def control(self, cmd: str, **kw: Any) -> dict[str, Any]:
        """The controls as dicts, for a control port: {"ok": true, ...} or {"ok": false, "error": words}."""
        actions: dict[str, Callable[..., object]] = {
            "paper_out_after": self.paper_out_after, "load_paper": self.load_paper,
            "near_end": self.set_near_end, "open_cover": self.open_cover, "close_cover": self.close_cover,
            "set_speed": self.set_speed, "power_off": self.power_off, "power_on": self.power_on,
            "unplug": self.unplug, "replug": self.replug, "garbage_status": self.garbage_status,
            "send_noise": lambda hex: self.send_noise(bytes.fromhex(hex)),
        }
        try:
            if cmd == "state":
                return {"ok": True, **self.state()}
            if cmd == "slips":
                with self._cond:
                    slips = [*self._decoder.slips, self._decoder.current]
                    return {"ok": True, "slips": [{"lines": s.lines, "cut": s.cut} for s in slips]}
            if cmd not in actions:
                return {"ok": False, "error": f"unknown printer command {cmd!r}; known: "
                        f"{', '.join(sorted([*actions, 'state', 'slips']))}"}
            actions[cmd](**kw)
            return {"ok": True, **self.state()}
        except (TypeError, ValueError) as exc:
            return {"ok": False, "error": f"{cmd}: {exc}"}

    # ---- the thread ------------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"x")

    def _on_thread(self, call: Callable[[], None]) -> None:
        """Runs call on the printer's thread (fd work), or here when the thread is not running."""
        if self._thread is None or not self._thread.is_alive() or threading.current_thread() is self._thread:
            call()
            return
        done = threading.Event()
        self._calls.put((call, done))
        self._wake()
        if not done.wait(timeout=5):
            raise RuntimeError("the emulated printer's thread did not answer within 5 s")
        if self._failure is not None:
            raise RuntimeError("the emulated printer's thread failed") from self._failure

    def _halt(self) -> None:
        self._running = False

    def _plug(self) -> None:
        if self.plugged:
            return
        master, slave = os.openpty()
        tty.setraw(slave)  # raw, no echo: bytes pass as they are, both ways
        os.set_blocking(master, False)
        self._master, self._slave_hold = master, slave
        tmp = self.path.with_name(self.path.name + ".new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        os.replace(tmp, self.path)
        if self._selector is not None:
            self._selector.register(master, selectors.EVENT_READ, "master")
        with self._cond:
            self.plugged = True
            self._cond.notify_all()

    def _unplug(self) -> None:
        if not self.plugged:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self._selector is not None and self._master is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(self._master)
        for fd in (self._master, self._slave_hold):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave_hold = None
        with self._cond:
            self.plugged = False
            self._cond.notify_all()

    def _serve(self) -> None:
        try:
            while self._running:
                timeout = self._throttle()
                assert self._selector is not None
                for key, _ in self._selector.select(timeout):
                    if key.data == "wake":
                        self._run_calls()
                    elif key.data == "master":
                        self._read_master()
        except BaseException as exc:  # recorded for the controls to report; the tests see it there
            self._failure = exc
            self._running = False
            while not self._calls.empty():
                self._calls.get_nowait()[1].set()

    def _run_calls(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 256):
                pass
        while not self._calls.empty():
            call, done = self._calls.get_nowait()
            try:
                call()
            finally:
                done.set()

    def _throttle(self) -> float | None:
        """With a speed set, stops watching the master until a byte's worth of time has passed."""
        if self._master is None or self._selector is None:
            return None
        with self._cond:
            rate = self._rate
        watching = self._master in self._selector.get_map()
        if rate is None:
            if not watching:
                self._selector.register(self._master, selectors.EVENT_READ, "master")
            return None
        now = time.monotonic()
        # A bucket of 20 ms worth of bytes: smooth at low rates, few wake-ups at high ones.
        self._budget = min(self._budget + (now - self._budget_at) * rate, max(rate / 50, 1.0))
        self._budget_at = now
        if self._budget >= 1:
            if not watching:
                self._selector.register(self._master, selectors.EVENT_READ, "master")
            return None
        if watching:
            self._selector.unregister(self._master)
        return (1 - self._budget) / rate

    def _read_master(self) -> None:
        assert self._master is not None
        limit = 4096 if self._rate is None else max(int(self._budget), 1)
        try:
            data = os.read(self._master, limit)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:
                return  # no slave open for a moment; the held slave fd makes this rare
            raise
        if self._rate is not None:
            self._budget -= len(data)
        with self._cond:
            self.bytes_received += len(data)
            if not self.powered:
                self.bytes_dropped += len(data)
                replies = b""
            else:
                replies = self._decoder.feed(data)
            self._cond.notify_all()
        if replies:
            self._reply(replies)

    def _reply(self, data: bytes) -> None:
        if self._master is None or not self.powered:
            self.replies_dropped += len(data)
            return
        try:
            os.write(self._master, data)
        except (BlockingIOError, OSError):
            self.replies_dropped += len(data)  # nobody reads the port: a real printer's reply is lost too
