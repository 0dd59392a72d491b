"""A serial port for the drivers: opened with pyserial, driven through the _posio pump.

Owns opening a tty raw and exclusive, the cancel pipe that stops a blocked read
at once, and the asyncio wrappers that run the pump's poll() waits in a worker
thread (the pump releases the GIL while it waits). Reader and printer share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading

import serial

from c_ext import posio


class PortGone(OSError):
    """The device vanished (unplugged, pty closed) or cannot be opened; message says which."""


class SerialPort:
    """One open tty. Not shared between drivers; one read and one write at a time."""

    def __init__(self, path: str, baudrate: int = 115200) -> None:
        self.path = path
        self.baudrate = baudrate
        self._serial: serial.Serial | None = None
        self._cancel_r, self._cancel_w = os.pipe()
        os.set_blocking(self._cancel_r, False)
        os.set_blocking(self._cancel_w, False)
        self._lock = threading.Lock()

    # ---- lifecycle ---------------------------------------------------------

    def open(self) -> None:
        """Opens the device raw, 8N1, no flow control, exclusive (TIOCEXCL)."""
        self.close()
        try:
            port = serial.Serial(self.path, self.baudrate, timeout=0, write_timeout=0,
                                 exclusive=True)
        except (serial.SerialException, OSError) as exc:
            raise PortGone(f"cannot open {self.path}: {exc}") from exc
        os.set_blocking(port.fileno(), False)
        self._serial = port

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    @property
    def fd(self) -> int:
        if self._serial is None:
            raise PortGone(f"{self.path} is not open")
        return self._serial.fileno()

    def close(self) -> None:
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):  # already gone
                self._serial.close()
            self._serial = None

    def dispose(self) -> None:
        """Closes the port and the cancel pipe; the object is unusable afterwards."""
        self.close()
        for fd in (self._cancel_r, self._cancel_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    # ---- cancel ------------------------------------------------------------

    def cancel_pending_read(self) -> None:
        """Makes a read_until blocked in another thread return at once (ReadCancelled)."""
        # A full pipe already holds cancel bytes: the read will see one.
        with contextlib.suppress(BlockingIOError):
            os.write(self._cancel_w, b"x")

    def _drain_cancel(self) -> None:
        try:
            while os.read(self._cancel_r, 64):
                pass
        except BlockingIOError:
            pass

    # ---- byte pump ---------------------------------------------------------

    def write(self, data: bytes, deadline_ms: int, chunk: int = 256) -> int:
        """Blocking write of all of data (pump: poll + chunked write, GIL released)."""
        try:
            return posio.write_all(self.fd, data, chunk, deadline_ms)
        except posio.WriteTimeout:
            raise
        except OSError as exc:
            raise PortGone(f"{self.path}: write failed: {exc}") from exc

    def read(self, max_bytes: int, inter_byte_ms: int, deadline_ms: int) -> bytes:
        """Blocking read (pump). Raises posio.ReadCancelled after cancel_pending_read(),
        PortGone when the device hung up or vanished. A cancel made before the call
        also ends it: aread() clears stale ones first."""
        try:
            return posio.read_until(self.fd, max_bytes, inter_byte_ms, deadline_ms, self._cancel_r)
        except posio.ReadCancelled:
            self._drain_cancel()
            raise
        except EOFError as exc:
            raise PortGone(f"{self.path}: the device hung up") from exc
        except OSError as exc:
            raise PortGone(f"{self.path}: read failed: {exc}") from exc

    async def awrite(self, data: bytes, deadline_ms: int, chunk: int = 256) -> int:
        return await asyncio.to_thread(self.write, data, deadline_ms, chunk)

    async def aread(self, max_bytes: int, inter_byte_ms: int, deadline_ms: int) -> bytes:
        """read() in a worker thread; cancelling the awaiting task cancels the read at once."""
        # Stale cancel bytes go before the worker starts, never inside it: a cancel that
        # arrives between the two must stop this read, not be drained by it.
        self._drain_cancel()
        task = asyncio.ensure_future(asyncio.to_thread(self.read, max_bytes, inter_byte_ms,
                                                       deadline_ms))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self.cancel_pending_read()
            with contextlib.suppress(posio.ReadCancelled, PortGone, OSError):
                await task
            raise
