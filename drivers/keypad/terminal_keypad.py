"""A Keypad on a terminal, for development: the PC keyboard through a tty in cbreak mode.

Owns the tty mode (set on open, restored on close), reading bytes on the asyncio loop, and
the byte decoder (TerminalKeyParser, pure) that tells a lone Esc from an escape sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import termios
import time
import tty
from collections import deque
from collections.abc import Callable
from types import TracebackType

from drivers.keypad import KeypadUnavailable
from firmware.ports import Key, KeyPress

KEY_HELP = """\
Terminal keys:
  0-9            digits (amounts shift in: 1 2 3 is 1.23)
  .              a dot, for text in settings (amounts take none)
  d              00 (double zero)
  Enter          ENTER
  Esc            CANCEL
  Backspace, Del CLEAR
  Up, Down       UP, DOWN
  F1-F4          F1-F4
  m or F10       MENU
Ctrl-C still stops the program (the terminal stays in cbreak, not raw, mode)."""

ESC = 0x1B
MAX_SEQUENCE = 16  # longer than any key's sequence: whatever this is, it is not a key

_PLAIN: dict[int, Key] = {
    **{ord(str(n)): Key(str(n)) for n in range(10)},
    ord("."): Key.DOT,
    ord("\r"): Key.ENTER,
    ord("\n"): Key.ENTER,
    0x7F: Key.CLEAR,  # DEL: what most terminals send for Backspace
    0x08: Key.CLEAR,  # BS: what the others send
    ord("m"): Key.MENU,
    ord("M"): Key.MENU,
    ord("d"): Key.D00,
    ord("D"): Key.D00,
}
# ESC O x: VT100 application mode (cursor keys, F1-F4, keypad digits in keypad mode).
_SS3: dict[int, Key] = {
    ord("A"): Key.UP,
    ord("B"): Key.DOWN,
    ord("P"): Key.F1,
    ord("Q"): Key.F2,
    ord("R"): Key.F3,
    ord("S"): Key.F4,
    ord("M"): Key.ENTER,
    ord("n"): Key.DOT,
    **{ord("p") + n: Key(str(n)) for n in range(10)},
}
# ESC [ n ~: xterm/rxvt function keys.
_CSI_TILDE: dict[int, Key] = {3: Key.CLEAR, 11: Key.F1, 12: Key.F2, 13: Key.F3, 14: Key.F4, 21: Key.MENU}
# ESC [ x with x final: cursor keys (with any modifier parameters, e.g. ESC [ 1 ; 5 A).
_CSI_FINAL: dict[int, Key] = {ord("A"): Key.UP, ord("B"): Key.DOWN}
# ESC [ [ x: the Linux console's F1-F4.
_LINUX_F: dict[int, Key] = {ord("A"): Key.F1, ord("B"): Key.F2, ord("C"): Key.F3, ord("D"): Key.F4}


class TerminalKeyParser:
    """Bytes from a terminal -> Keys. Pure; the caller owns the Esc timeout.

    An ESC starts a sequence that is held (pending) until it completes; if nothing
    completes it within the caller's timeout, the caller calls flush(): a lone ESC is
    CANCEL, a cut-off sequence is dropped. ESC followed by anything but '[' or 'O' is a
    CANCEL and then that byte. Unknown bytes and sequences are dropped and counted.
    """

    def __init__(self) -> None:
        self._seq: bytearray | None = None
        self._overlong = False  # a sequence too long to be a key: swallowed to its final byte
        self.ignored = 0  # bytes or sequences that are no key
        self.others: list[int] = []  # printable bytes that are no key (a console's hot keys)
        self.escapes_started = 0  # lets the caller time each sequence from its own ESC

    @property
    def pending(self) -> bool:
        return self._seq is not None

    def feed(self, data: bytes) -> list[Key]:
        keys: list[Key] = []
        for byte in data:
            self._byte(byte, keys)
        return keys

    def flush(self) -> list[Key]:
        seq, self._seq = self._seq, None
        if seq is None:
            return []
        if seq == b"\x1b":
            return [Key.CANCEL]
        self.ignored += 1
        return []

    def _start_escape(self) -> None:
        self._seq = bytearray(b"\x1b")
        self._overlong = False
        self.escapes_started += 1

    def _byte(self, byte: int, keys: list[Key]) -> None:
        seq = self._seq
        if seq is None:
            if byte == ESC:
                self._start_escape()
            elif byte in _PLAIN:
                keys.append(_PLAIN[byte])
            else:
                self.ignored += 1
                if 0x20 < byte < 0x7F:
                    self.others.append(byte)
            return
        if len(seq) == 1:  # just ESC
            if byte in (ord("["), ord("O")):
                seq.append(byte)
                return
            self._seq = None
            keys.append(Key.CANCEL)
            self._byte(byte, keys)  # Esc then this key, typed quickly
            return
        if seq[1] == ord("O"):  # SS3: exactly one more byte
            self._seq = None
            self._finish(_SS3.get(byte), keys)
            return
        self._csi_byte(seq, byte, keys)

    def _csi_byte(self, seq: bytearray, byte: int, keys: list[Key]) -> None:
        if len(seq) == 3 and seq[2] == ord("["):  # Linux console ESC [ [ x
            self._seq = None
            self._finish(_LINUX_F.get(byte), keys)
            return
        if len(seq) == 2 and byte == ord("["):
            seq.append(byte)
            return
        if 0x20 <= byte <= 0x3F:  # parameter and intermediate bytes
            if len(seq) < MAX_SEQUENCE:
                seq.append(byte)
            else:
                self._overlong = True
            return
        self._seq = None
        if 0x40 <= byte <= 0x7E:  # final byte
            key = None if self._overlong else self._csi_key(bytes(seq[2:]), byte)
            self._finish(key, keys)
            return
        # A control byte inside a sequence: the sequence was cut off; the byte stands alone.
        self.ignored += 1
        self._byte(byte, keys)

    @staticmethod
    def _csi_key(params: bytes, final: int) -> Key | None:
        if final == ord("~"):
            first = params.split(b";", 1)[0]
            return _CSI_TILDE.get(int(first)) if first.isascii() and first.isdigit() else None
        return _CSI_FINAL.get(final)

    def _finish(self, key: Key | None, keys: list[Key]) -> None:
        if key is None:
            self.ignored += 1
        else:
            keys.append(key)


class TerminalKeypad:
    """firmware.ports.Keypad on a tty (stdin by default). Use with `with`, or call close()."""

    def __init__(self, fd: int = 0, *, escape_timeout_s: float = 0.05,
                 on_other: Callable[[str], None] | None = None) -> None:
        if not os.isatty(fd):
            raise KeypadUnavailable(f"fd {fd} is not a terminal: TerminalKeypad needs a tty "
                                    "(run it in a terminal, or use the evdev keypad)")
        self.fd = fd
        self._escape_timeout_s = escape_timeout_s
        self._on_other = on_other  # printable characters that are no key go here (hot keys)
        self._parser = TerminalKeyParser()
        self._pending: deque[KeyPress] = deque()
        self._escape_started_at = 0.0
        self._escape_seen = 0
        self._closed = False
        self._waiter: asyncio.Future[bool] | None = None
        self._saved_mode = termios.tcgetattr(fd)
        self._saved_flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            tty.setcbreak(fd, termios.TCSANOW)
            fcntl.fcntl(fd, fcntl.F_SETFL, self._saved_flags | os.O_NONBLOCK)
        except BaseException:
            self._restore()
            raise

    def __enter__(self) -> TerminalKeypad:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TerminalKeypad(fd={self.fd}, closed={self._closed})"

    @property
    def ignored(self) -> int:
        """Bytes and escape sequences that were no key."""
        return self._parser.ignored

    # ---- Keypad ------------------------------------------------------------

    async def next_key(self) -> KeyPress:
        """The next key. Cancelling it loses nothing: unread bytes stay in the tty."""
        while not self._pending:
            if self._closed:
                raise KeypadUnavailable(f"terminal keypad on fd {self.fd} is closed")
            timeout = None
            if self._parser.pending:
                timeout = max(0.0, self._escape_started_at + self._escape_timeout_s - time.monotonic())
            readable = await self._wait_readable(timeout)
            now = time.monotonic()
            keys = self._read(now) if readable else self._parser.flush()
            self._pending.extend(KeyPress(key, now) for key in keys)
        return self._pending.popleft()

    def close(self) -> None:
        """Restores the tty's mode and flags; a next_key waiting on it raises KeypadUnavailable."""
        if self._closed:
            return
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(KeypadUnavailable(f"terminal keypad on fd {self.fd} was closed"))
        self._restore()

    # ---- internals ---------------------------------------------------------

    def _restore(self) -> None:
        with contextlib.suppress(termios.error, OSError):  # the tty may be gone (pty closed)
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved_mode)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.fd, fcntl.F_SETFL, self._saved_flags)

    async def _wait_readable(self, timeout: float | None) -> bool:
        """True once the tty has bytes; False if the timeout passed first."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()

        def settle(readable: bool) -> None:
            if not waiter.done():
                waiter.set_result(readable)

        loop.add_reader(self.fd, settle, True)
        timer = loop.call_later(timeout, settle, False) if timeout is not None else None
        self._waiter = waiter
        try:
            return await waiter
        finally:
            self._waiter = None
            loop.remove_reader(self.fd)
            if timer is not None:
                timer.cancel()

    def _read(self, now: float) -> list[Key]:
        try:
            data = os.read(self.fd, 1024)
        except BlockingIOError:
            return []
        except OSError as exc:
            if exc.errno == errno.EIO:  # the other side of the tty hung up
                raise KeypadUnavailable(f"terminal on fd {self.fd} hung up") from None
            raise KeypadUnavailable(f"reading terminal fd {self.fd} failed: {exc.strerror or exc}") from None
        if not data:
            raise KeypadUnavailable(f"terminal on fd {self.fd} hung up (end of file)")
        keys = self._parser.feed(data)
        others, self._parser.others = self._parser.others, []
        if self._on_other is not None:
            for byte in others:
                self._on_other(chr(byte))
        if self._parser.escapes_started != self._escape_seen:
            # A new ESC arrived in this read: its timeout runs from now.
            self._escape_seen = self._parser.escapes_started
            self._escape_started_at = now
        return keys
