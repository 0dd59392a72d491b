"""Host-side stand-in for MicroPython's `machine` (UART, Pin, PWM) as board/pico/main.py uses it.

UART<n> is a real pseudo-terminal: POSPICO_UART<n> names the tty (a pty slave) to open, raw
and non-blocking; read()/readinto() return None when nothing is waiting, as on the board.

The board's buttons, LED and buzzer talk to whoever runs the program (a test) over two pipes
whose fd numbers come in POSPICO_CONTROL_FD and POSPICO_REPORT_FD, one text line per message:

  control (in):  press <gpio> <hold_ms> <settle_ms>
                   the input reads 0 (pressed) for hold_ms, then 1 again; once the program
                   has sampled the released level for settle_ms, "settled <gpio>" is reported,
                   so the caller knows the program's debounce has seen the whole press.
  report (out):  pin <id> <0|1>      an output pin changed (id "LED" for the onboard LED)
                 pwm <gpio> <duty>   every duty_u16() call (a beep starts / stops)
                 settled <gpio>      see above
                 uart <n> open       the UART's tty is open and raw

Without the pipes, inputs read 1 (released) and reports are dropped.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import tty

import utime as _utime

_ENV_CONTROL_FD = "POSPICO_CONTROL_FD"
_ENV_REPORT_FD = "POSPICO_REPORT_FD"


class _Press:
    """One scheduled press of an input: low until released_at, then settled after settle_ms."""

    def __init__(self, now: int, hold_ms: int, settle_ms: int) -> None:
        self.released_at = _utime.ticks_add(now, hold_ms)
        self.settle_ms = settle_ms
        self.first_released_read: int | None = None


class _Harness:
    """The pipes to the test: pending presses from the control pipe, lines to the report pipe."""

    def __init__(self) -> None:
        control = os.environ.get(_ENV_CONTROL_FD)
        report = os.environ.get(_ENV_REPORT_FD)
        self._control_fd = int(control) if control else None
        self._report_fd = int(report) if report else None
        if self._control_fd is not None:
            os.set_blocking(self._control_fd, False)
        self._pending = b""
        self.presses: dict[int, _Press] = {}

    def report(self, line: str) -> None:
        if self._report_fd is not None:
            # One short line per write: a pipe write under PIPE_BUF is atomic.
            os.write(self._report_fd, line.encode() + b"\n")

    def pump(self) -> None:
        """Takes in the control lines that have arrived, without blocking."""
        if self._control_fd is None:
            return
        try:
            chunk = os.read(self._control_fd, 4096)
        except BlockingIOError:
            return
        if not chunk:  # the test closed its end: no more presses will come
            os.close(self._control_fd)
            self._control_fd = None
            return
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._command(line.decode().split())

    def _command(self, words: list[str]) -> None:
        if len(words) == 4 and words[0] == "press":
            gpio, hold_ms, settle_ms = (int(w) for w in words[1:])
            self.presses[gpio] = _Press(_utime.ticks_ms(), hold_ms, settle_ms)
        else:
            raise ValueError(f"machine shim: unknown control line {' '.join(words)!r}; "
                             "expected 'press <gpio> <hold_ms> <settle_ms>'")


_harness = _Harness()


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id: int | str, mode: int = IN, pull: int | None = None, *,
                 value: int | None = None) -> None:
        self.id = id
        self._mode = mode
        self._pull = pull
        self._level = 0 if value is None else int(bool(value))

    def value(self, x: int | None = None) -> int | None:
        if x is not None:
            self._set(int(bool(x)))
            return None
        if self._mode == Pin.OUT:
            return self._level
        return self._read_input()

    def on(self) -> None:
        self._set(1)

    def off(self) -> None:
        self._set(0)

    def _set(self, level: int) -> None:
        if level != self._level:
            self._level = level
            _harness.report(f"pin {self.id} {level}")

    def _read_input(self) -> int:
        _harness.pump()
        idle = 1 if self._pull == Pin.PULL_UP else 0
        press = _harness.presses.get(self.id) if isinstance(self.id, int) else None
        if press is None:
            return idle
        now = _utime.ticks_ms()
        if _utime.ticks_diff(now, press.released_at) < 0:
            return 1 - idle
        if press.first_released_read is None:
            press.first_released_read = now
        elif _utime.ticks_diff(now, press.first_released_read) >= press.settle_ms:
            del _harness.presses[self.id]
            _harness.report(f"settled {self.id}")
        return idle

    def __repr__(self) -> str:
        return f"Pin({self.id!r})"


class PWM:
    def __init__(self, dest: Pin, *, freq: int = 1000, duty_u16: int = 0) -> None:
        self._pin = dest
        self._freq = freq
        self._duty = duty_u16

    def freq(self, value: int | None = None) -> int | None:
        if value is None:
            return self._freq
        self._freq = value
        return None

    def duty_u16(self, value: int | None = None) -> int | None:
        if value is None:
            return self._duty
        self._duty = value
        _harness.report(f"pwm {self._pin.id} {value}")
        return None

    def deinit(self) -> None:
        self.duty_u16(0)


class UART:
    """A UART on the pty named by POSPICO_UART<id>; the baud rate is the pty's business."""

    def __init__(self, id: int, baudrate: int = 9600, bits: int = 8,
                 parity: int | None = None, stop: int = 1, **pins_and_buffers: object) -> None:
        env = f"POSPICO_UART{id}"
        path = os.environ.get(env)
        if not path:
            raise OSError(errno.ENODEV, f"machine shim: set {env} to the tty (pty slave) that "
                                        f"stands in for UART{id}")
        self.id = id
        self.baudrate = baudrate
        self._fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd)  # no echo, no line editing: bytes pass as they are
        self._rx = bytearray()
        _harness.report(f"uart {id} open")

    def _fill(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._rx += os.read(self._fd, 4096)

    def any(self) -> int:
        self._fill()
        return len(self._rx)

    def read(self, nbytes: int | None = None) -> bytes | None:
        self._fill()
        if not self._rx:
            return None
        count = len(self._rx) if nbytes is None else min(nbytes, len(self._rx))
        data = bytes(self._rx[:count])
        del self._rx[:count]
        return data

    def readinto(self, buf: bytearray | memoryview, nbytes: int | None = None) -> int | None:
        self._fill()
        if not self._rx:
            return None
        count = min(len(buf) if nbytes is None else nbytes, len(self._rx))
        buf[:count] = self._rx[:count]
        del self._rx[:count]
        return count

    def write(self, buf: bytes | bytearray | memoryview) -> int:
        """Writes all of buf, waiting for room as the board's UART driver does."""
        view = memoryview(buf)
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:
                select.select([], [self._fd], [], 1.0)
        return len(buf)

    def deinit(self) -> None:
        os.close(self._fd)
