"""A Keypad on a Linux input device (/dev/input/event*) through python-evdev.

Owns opening and grabbing the device (so its keys never reach a console or another
program), reading it on the asyncio loop through the fd, and finding a device by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from drivers.keypad import KeypadUnavailable
from drivers.keypad.decoder import KeyDecoder
from firmware.ports import Key, KeyPress

log = logging.getLogger(__name__)

# linux/input.h: EVIOCSCLOCKID = _IOW('E', 0xa0, int). With it the kernel stamps events on
# CLOCK_MONOTONIC, the clock of time.monotonic() and of KeyPress.at.
EVIOCSCLOCKID = 0x400445A0
CLOCK_MONOTONIC = 1

MAX_PENDING_KEYS = 64  # typed ahead; more than this is a flood (stuck key), not an operator


class InputEventLike(Protocol):
    type: int
    code: int
    value: int

    def timestamp(self) -> float: ...


class EventSource(Protocol):
    """What EvdevKeypad needs of an input device; EvdevSource is the real one, tests inject theirs."""

    path: str
    name: str
    monotonic_timestamps: bool  # events stamped on time.monotonic()'s clock; else arrival time is used

    def fileno(self) -> int: ...

    def read(self) -> Iterable[InputEventLike]:
        """All events available now; raises BlockingIOError if there are none."""
        ...

    def grab(self) -> None: ...

    def ungrab(self) -> None: ...

    def close(self) -> None: ...


class EvdevSource:
    """An evdev.InputDevice, opened non-blocking, with its events stamped on CLOCK_MONOTONIC."""

    def __init__(self, path: str) -> None:
        import evdev  # lazily: hardware library, so importing this module works anywhere

        try:
            self._device: Any = evdev.InputDevice(path)
        except FileNotFoundError:
            raise KeypadUnavailable(f"no input device {path}: is the keypad plugged in?") from None
        except PermissionError:
            raise KeypadUnavailable(
                f"permission denied opening {path}: run as a member of group 'input' or add a udev rule"
            ) from None
        except OSError as exc:
            raise KeypadUnavailable(f"cannot open input device {path}: {exc.strerror or exc}") from None
        self.path = path
        self.name: str = self._device.name
        try:
            fcntl.ioctl(self._device.fileno(), EVIOCSCLOCKID, struct.pack("i", CLOCK_MONOTONIC))
            self.monotonic_timestamps = True
        except OSError:
            log.warning("%s: cannot stamp events on CLOCK_MONOTONIC; using arrival time", path)
            self.monotonic_timestamps = False

    def fileno(self) -> int:
        return int(self._device.fileno())

    def read(self) -> Iterable[InputEventLike]:
        return list(self._device.read())

    def grab(self) -> None:
        self._device.grab()

    def ungrab(self) -> None:
        self._device.ungrab()

    def close(self) -> None:
        self._device.close()


class EvdevKeypad:
    """firmware.ports.Keypad on one input device; decoder options go to KeyDecoder."""

    def __init__(
        self,
        device_path: str,
        keymap: Mapping[int, Key],
        *,
        grab: bool = True,
        open_device: Callable[[str], EventSource] = EvdevSource,
        **decoder_options: Any,
    ) -> None:
        self.path = device_path
        self._decoder = KeyDecoder(keymap, **decoder_options)
        self._pending: deque[KeyPress] = deque()
        self.overflowed = 0  # keys dropped because MAX_PENDING_KEYS were already waiting
        self._waiter: asyncio.Future[None] | None = None
        self._waiter_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._source = open_device(device_path)
        self._grabbed = False
        try:
            if grab:
                self._grab()
        except BaseException:
            self._source.close()
            raise

    def __repr__(self) -> str:
        return f"EvdevKeypad({self.path!r}, grabbed={self._grabbed}, closed={self._closed})"

    @property
    def decoder(self) -> KeyDecoder:
        """For its counters (unmapped, bounced); never for key state."""
        return self._decoder

    def _grab(self) -> None:
        try:
            self._source.grab()
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise KeypadUnavailable(f"{self.path} is grabbed by another program") from None
            raise KeypadUnavailable(f"cannot grab {self.path}: {exc.strerror or exc}") from None
        self._grabbed = True

    # ---- Keypad ------------------------------------------------------------

    async def next_key(self) -> KeyPress:
        """The next mapped key. Cancelling it loses nothing: unread events stay in the kernel."""
        while not self._pending:
            if self._closed:
                raise KeypadUnavailable(f"keypad {self.path} is closed")
            await self._wait_readable()
            self._read_available()
        return self._pending.popleft()

    def close(self) -> None:
        """Ungrabs and closes the device; a next_key waiting on it raises KeypadUnavailable."""
        if self._closed:
            return
        self._closed = True
        self._stop_waiting(KeypadUnavailable(f"keypad {self.path} was closed"))
        if self._grabbed:
            with contextlib.suppress(OSError):  # the device may already be gone
                self._source.ungrab()
            self._grabbed = False
        with contextlib.suppress(OSError):
            self._source.close()

    # ---- reading -----------------------------------------------------------

    async def _wait_readable(self) -> None:
        """Waits for the fd on the loop; reads nothing, so a cancel here loses no event.

        (evdev's async_read() reads as soon as the fd is ready even if its future was
        cancelled meanwhile, and those events, perhaps a PIN digit, would be lost.)
        """
        loop = asyncio.get_running_loop()
        fd = self._source.fileno()
        waiter: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not waiter.done():
                waiter.set_result(None)

        loop.add_reader(fd, ready)
        self._waiter, self._waiter_loop = waiter, loop
        try:
            await waiter
        finally:
            # Also on cancellation: the fd must not stay registered once nobody waits on it.
            self._waiter = self._waiter_loop = None
            if not self._closed:
                loop.remove_reader(fd)

    def _stop_waiting(self, error: Exception) -> None:
        waiter, loop = self._waiter, self._waiter_loop
        if waiter is None or loop is None:
            return
        if not loop.is_closed():
            loop.remove_reader(self._source.fileno())
        if not waiter.done():
            waiter.set_exception(error)

    def _read_available(self) -> None:
        try:
            events = list(self._source.read())
        except BlockingIOError:
            return  # woken for nothing (another reader took it); wait again
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                raise KeypadUnavailable(f"input device {self.path} vanished: keypad unplugged?") from None
            raise KeypadUnavailable(f"reading {self.path} failed: {exc.strerror or exc}") from None
        arrived = time.monotonic()
        for event in events:
            at = event.timestamp() if self._source.monotonic_timestamps else arrived
            press = self._decoder.feed(event.type, event.code, event.value, at)
            if press is None:
                continue
            if len(self._pending) >= MAX_PENDING_KEYS:
                self.overflowed += 1
                continue
            self._pending.append(press)


def find_keypad(name_hint: str, input_dir: str = "/dev/input") -> str:
    """The path of the first input device whose name contains name_hint (any case).

    Raises KeypadUnavailable listing the devices seen, so the operator can fix the hint.
    """
    import evdev  # lazily: hardware library

    if not os.path.isdir(input_dir):
        raise KeypadUnavailable(f"no {input_dir} on this machine: no input devices to search for "
                                f"{name_hint!r}")
    seen: list[str] = []
    for path in sorted(evdev.list_devices(input_dir, writable=False)):
        try:
            device = evdev.InputDevice(path)
        except OSError as exc:
            seen.append(f"{path} (cannot open: {exc.strerror or exc})")
            continue
        try:
            name = device.name
        finally:
            device.close()
        if name_hint.casefold() in name.casefold():
            return path
        seen.append(f"{path} {name!r}")
    listing = "; ".join(seen) if seen else "none readable"
    raise KeypadUnavailable(f"no input device named like {name_hint!r} in {input_dir}; devices: {listing}")
