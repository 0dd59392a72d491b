"""The host end of the QEMU guest's LCD: frame lines from a unix socket or a pty, drawn in the terminal.

Owns splitting the byte stream into lines (bounded), counting and describing lines that are no
frame, and drawing good frames with TerminalDisplay. Bad input is reported, never fatal.
CLI: python -m board.qemu.lcd_mirror (--socket PATH | --tty PATH) [--rows N --cols N]
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import socket
import sys
import tty
from collections.abc import Callable
from typing import TextIO

from drivers.display.serial_frames import MAX_LINE_BYTES, FrameLineError, decode_frame
from drivers.display.terminal import TerminalDisplay, move_to
from firmware.ports import Display, Frame


class FrameLineReader:
    """Bytes -> frames. Pure. A line longer than MAX_LINE_BYTES is dropped up to its newline."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._skipping = False  # inside an overlong line: drop bytes until its newline
        self.frames = 0
        self.bad_lines = 0
        self.last_problem: str | None = None

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        self._buffer += data
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max:
                    if not self._skipping:
                        self.count_bad(f"a line longer than {self._max} bytes was dropped")
                    self._skipping = True
                    self._buffer.clear()
                return frames
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if self._skipping:  # the end of an overlong line, already counted
                self._skipping = False
                continue
            if len(line) > self._max:
                self.count_bad(f"a line longer than {self._max} bytes was dropped")
                continue
            if not line.strip():
                continue  # a blank line (e.g. a guest's stray newline) is no frame and no error
            try:
                frames.append(decode_frame(line))
                self.frames += 1
            except FrameLineError as exc:
                self.count_bad(str(exc))

    def finish(self) -> None:
        """The stream ended: an unterminated tail is a cut-off frame."""
        if self._buffer.strip() and not self._skipping:
            self.count_bad(f"the stream ended inside a line ({len(self._buffer)} bytes without a newline)")
        self._buffer.clear()
        self._skipping = False

    def count_bad(self, problem: str) -> None:
        self.bad_lines += 1
        self.last_problem = problem

    def summary(self) -> str:
        text = f"{self.frames} frames shown, {self.bad_lines} bad lines"
        return text + (f" (last: {self.last_problem})" if self.last_problem else "")


class LcdMirror:
    """Reads frame lines from an fd until it ends, drawing each frame; returns why it ended."""

    def __init__(self, display: Display, status: Callable[[str], None] | None = None,
                 max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.display = display
        self.reader = FrameLineReader(max_line_bytes)
        self._status = status
        self._reported_bad = 0

    def feed(self, data: bytes) -> None:
        for frame in self.reader.feed(data):
            try:
                self.display.show(frame)
            except ValueError as exc:  # a frame the host display cannot show (e.g. other row count)
                self.reader.frames -= 1
                self.reader.count_bad(f"frame not shown: {exc}")
        if self.reader.bad_lines != self._reported_bad and self._status is not None:
            self._reported_bad = self.reader.bad_lines
            self._status(self.reader.summary())

    def run(self, fd: int) -> str:
        """Blocking loop over fd (socket or pty master); returns the end reason in words."""
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                # EIO: the pty's other side closed; ECONNRESET: qemu went away.
                reason = f"the LCD port went away ({os.strerror(exc.errno or 0)})"
                break
            if not data:
                reason = "the LCD port closed"
                break
            self.feed(data)
        self.reader.finish()
        return f"{reason}; {self.reader.summary()}"


def connect_unix(path: str) -> socket.socket:
    """A client of qemu's `-chardev socket,path=...,server=on` (the guest side is LCD_MIRROR_PORT)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot connect to the LCD socket {path}: {exc.strerror or exc}") from None
    return sock


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mirror the QEMU guest's LCD in this terminal")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--socket", help="unix socket of qemu's LCD chardev")
    source.add_argument("--tty", help="a pty or serial device carrying the frame lines")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cols", type=int, default=16)
    args = parser.parse_args(argv)
    stream = out if out is not None else sys.stdout
    display = TerminalDisplay(args.rows, args.cols, stream)
    status_line = args.rows + 4  # below the box and its icon line

    def status(text: str) -> None:
        stream.write(move_to(status_line, 1) + text + "\x1b[K")
        stream.flush()

    mirror = LcdMirror(display, status)
    with contextlib.ExitStack() as stack:
        if args.socket:
            sock = stack.enter_context(connect_unix(args.socket))
            fd = sock.fileno()
        else:
            try:
                fd = os.open(args.tty, os.O_RDONLY | os.O_NOCTTY)
            except OSError as exc:
                raise SystemExit(f"cannot open {args.tty}: {exc.strerror}") from None
            stack.callback(os.close, fd)
            if os.isatty(fd):  # the line discipline would rewrite CR/LF and echo: raw, as pyserial does
                tty.setraw(fd)
        try:
            reason = mirror.run(fd)
        except KeyboardInterrupt:
            reason = f"stopped; {mirror.reader.summary()}"
        finally:
            display.close()
    print(reason, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
