"""A Display that sends each frame as one JSON line over a serial port, to be drawn elsewhere.

Owns the wire format (one UTF-8 JSON object per line: rows, inverse_row, icons) and its strict
decoder, so the QEMU guest's LCD can be mirrored on the host console (board/qemu/lcd_mirror.py).
"""

from __future__ import annotations

import json
from typing import Any

from drivers.display import DisplayUnavailable, check_frame, fitted_text
from drivers.serial_io import PortGone, SerialPort
from firmware.ports import Frame, Icon

# The guest's ttyS0 is the console and ttyS1..3 are reader, printer and ECR: the LCD mirror gets
# a fifth 16550, a PCI one (qemu `-device pci-serial,chardev=lcd`; the guest kernel needs
# `8250.nr_uarts=5` on its command line, Debian's default is 4 runtime ports).
LCD_MIRROR_PORT = "/dev/ttyS4"
# A frame line is at most a few hundred bytes (8 rows of 21 CJK cells, escaped); anything much
# longer is not a frame, and the reader must not buffer it without bound.
MAX_LINE_BYTES = 4096
WRITE_DEADLINE_MS = 500


class FrameLineError(ValueError):
    """A line that is not a frame; the message says what is wrong with it."""


def encode_frame(frame: Frame) -> bytes:
    """One frame -> one JSON line (UTF-8, CJK as-is, icons sorted so equal frames are equal bytes)."""
    message = {"rows": list(frame.rows), "inverse_row": frame.inverse_row,
               "icons": sorted(icon.value for icon in frame.icons)}
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def decode_frame(line: bytes) -> Frame:
    """One line (with or without its newline) -> Frame; FrameLineError in words otherwise."""
    if len(line) > MAX_LINE_BYTES:
        raise FrameLineError(f"line of {len(line)} bytes is longer than the {MAX_LINE_BYTES}-byte limit")
    try:
        message: Any = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FrameLineError(f"line is not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise FrameLineError(f"line is not JSON: {exc.msg} at character {exc.pos}") from None
    if not isinstance(message, dict):
        raise FrameLineError(f"line is JSON {type(message).__name__}, not an object")
    rows, inverse_row, icons = message.get("rows"), message.get("inverse_row"), message.get("icons", [])
    if not isinstance(rows, list) or not all(isinstance(row, str) for row in rows):
        raise FrameLineError("frame has no 'rows' list of text")
    if inverse_row is not None and (isinstance(inverse_row, bool) or not isinstance(inverse_row, int)
                                    or not 0 <= inverse_row < len(rows)):
        raise FrameLineError(f"inverse_row {inverse_row!r} is not one of the frame's {len(rows)} rows")
    if not isinstance(icons, list):
        raise FrameLineError("'icons' is not a list")
    try:
        icon_set = frozenset(Icon(name) for name in icons)
    except ValueError:
        unknown = sorted(str(name) for name in icons if name not in {icon.value for icon in Icon})
        raise FrameLineError(f"unknown icons {', '.join(unknown)}") from None
    return Frame(rows=tuple(rows), inverse_row=inverse_row, icons=icon_set)


class SerialFrameDisplay:
    """firmware.ports.Display writing frames to a serial port (raw), one JSON line each."""

    def __init__(self, port: SerialPort | str = LCD_MIRROR_PORT, rows: int = 4, cols: int = 16, *,
                 write_deadline_ms: int = WRITE_DEADLINE_MS) -> None:
        self.rows, self.cols = rows, cols
        self._port = port if isinstance(port, SerialPort) else SerialPort(port)
        self._write_deadline_ms = write_deadline_ms
        self._closed = False
        try:
            if not self._port.is_open:
                self._port.open()
        except PortGone as exc:
            raise DisplayUnavailable(f"LCD mirror port: {exc}") from exc

    def show(self, frame: Frame) -> None:
        if self._closed:
            raise ValueError("this serial frame display is closed")
        check_frame(frame, self.rows)
        # Cut rows here, as an LCD would, so the mirror shows what the device would show.
        fitted = Frame(rows=tuple(fitted_text(row, self.cols) for row in frame.rows),
                       inverse_row=frame.inverse_row, icons=frame.icons)
        try:
            self._port.write(encode_frame(fitted), self._write_deadline_ms)
        except PortGone as exc:
            raise DisplayUnavailable(f"LCD mirror port {self._port.path} is gone: {exc}") from exc
        except TimeoutError as exc:  # posio.WriteTimeout: nobody drains the port
            raise DisplayUnavailable(f"LCD mirror port {self._port.path} did not take a frame within "
                                     f"{self._write_deadline_ms} ms: {exc}") from exc

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._port.dispose()
