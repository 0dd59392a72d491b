"""A CardReader for USB HID magstripe readers that type the tracks like a keyboard (a "wedge").

Owns turning evdev key events into swipes (WedgeDecoder: pure, clock passed in) and
the driver on an input device, grabbed so swipes never type into anything else
(HidWedgeReader, with the device behind an injectable KeyEventSource).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import struct
from collections.abc import Callable
from typing import Any, Protocol

from evdev import ecodes

from firmware.ports import (
    ChipGone,
    MagstripeRead,
    ReaderEvent,
    ReaderUnavailable,
    ReadFailed,
    ReadTimedOut,
)

__all__ = ["EvdevKeySource", "HidWedgeReader", "KeyEventSource", "WedgeDecoder", "parse_swipe"]

log = logging.getLogger(__name__)

KEY_DOWN, KEY_UP, KEY_REPEAT = 1, 0, 2
SHIFT_KEYS = frozenset({ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT})
END_KEYS = frozenset({ecodes.KEY_ENTER, ecodes.KEY_KPENTER})
# Three full tracks with sentinels are 79 + 40 + 107 characters; more is a stuck key.
MAX_SWIPE_CHARS = 240

# linux/input.h EVIOCSCLOCKID: stamp events on CLOCK_MONOTONIC, asyncio's clock.
EVIOCSCLOCKID = 0x400445A0
CLOCK_MONOTONIC = 1

# US keyboard layout, which is what wedge readers emulate: key -> (plain, shifted).
_KEYMAP: dict[int, tuple[str, str]] = {
    **{getattr(ecodes, f"KEY_{d}"): (str(d), s) for d, s in zip(range(10), ")!@#$%^&*(", strict=True)},
    **{getattr(ecodes, f"KEY_{c}"): (c.lower(), c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    ecodes.KEY_SPACE: (" ", " "),
    ecodes.KEY_MINUS: ("-", "_"),
    ecodes.KEY_EQUAL: ("=", "+"),
    ecodes.KEY_SEMICOLON: (";", ":"),
    ecodes.KEY_SLASH: ("/", "?"),
    ecodes.KEY_DOT: (".", ">"),
    ecodes.KEY_COMMA: (",", "<"),
    ecodes.KEY_APOSTROPHE: ("'", '"'),
    ecodes.KEY_LEFTBRACE: ("[", "{"),
    ecodes.KEY_RIGHTBRACE: ("]", "}"),
    ecodes.KEY_BACKSLASH: ("\\", "|"),
    ecodes.KEY_GRAVE: ("`", "~"),
    **{getattr(ecodes, f"KEY_KP{d}"): (str(d), str(d)) for d in range(10)},
}

# Start sentinels: '%' track 1; ';' track 2 (a second ';' segment is track 3, as
# readers send it); '+' track 3 in some readers' output. '?' ends every track.
_TRACK1_CHARS = frozenset(chr(c) for c in range(0x20, 0x60)) - {"%", "?"}
_TRACK23_CHARS = frozenset("0123456789=")
_TRACK_MAX = (79, 40, 107)


def parse_swipe(text: str) -> MagstripeRead | ReadFailed:
    """One swipe as the wedge typed it (sentinels included, Enter excluded).

    Tracks the reader marks as failed (`%E?`, `;E?`) or that break their character
    set come back as None; a swipe with no usable track is a ReadFailed.
    """
    tracks: list[str | None] = [None, None, None]
    segments = failed = 0
    semicolons = 0
    i = 0
    while i < len(text):
        start = text[i]
        if start not in "%;+":
            i += 1
            continue
        end = text.find("?", i + 1)
        if end < 0:
            failed += 1  # a track without its end sentinel: cut short
            segments += 1
            break
        data = text[i + 1 : end]
        i = end + 1
        if start == "%":
            number = 1
        elif start == "+":
            number = 3
        else:
            semicolons += 1
            number = 2 if semicolons == 1 else 3
        segments += 1
        allowed = _TRACK1_CHARS if number == 1 else _TRACK23_CHARS
        if (not data or data == "E" or len(data) > _TRACK_MAX[number - 1]
                or any(ch not in allowed for ch in data) or (number == 1 and not data[0].isalpha())):
            failed += 1
            continue
        if tracks[number - 1] is None:
            tracks[number - 1] = data
    if segments == 0:
        return ReadFailed(f"the reader typed {len(text)} characters without track sentinels "
                          "(not a card swipe?)")
    if not any(tracks):
        return ReadFailed("the swipe could not be read on any track")
    return MagstripeRead(tracks[0], tracks[1], tracks[2])


class WedgeDecoder:
    """evdev key events -> swipes. Pure: the caller passes each event's timestamp.

    feed() returns the events a key completes: a MagstripeRead or ReadFailed on Enter,
    and a ReadFailed("swipe incomplete ...") when typing had stopped for longer than
    swipe_timeout_s (the swipe so far is dropped). expire(now) reports the same when
    no further key comes at all.
    """

    def __init__(self, swipe_timeout_s: float = 0.5) -> None:
        self.swipe_timeout_s = swipe_timeout_s
        self._chars: list[str] = []
        self._last_at = 0.0
        self._shift: set[int] = set()
        self._discard = False
        self.ignored_keys = 0  # keys with no character in a swipe (counted, skipped)

    def __repr__(self) -> str:  # never the characters: they are card data
        return f"WedgeDecoder(in_swipe={self.in_swipe}, chars={len(self._chars)})"

    @property
    def in_swipe(self) -> bool:
        return bool(self._chars)

    @property
    def deadline(self) -> float | None:
        """When the swipe under way counts as incomplete, or None."""
        return self._last_at + self.swipe_timeout_s if self._chars else None

    def discard_current(self) -> None:
        """The swipe under way belongs to nobody (its read was cancelled): finish it silently."""
        if self._chars:
            self._discard = True

    def reset(self) -> None:
        self._chars.clear()
        self._shift.clear()
        self._discard = False

    def feed(self, code: int, value: int, timestamp: float) -> list[ReaderEvent]:
        if code in SHIFT_KEYS:
            if value == KEY_UP:
                self._shift.discard(code)
            else:
                self._shift.add(code)
            return []
        if value != KEY_DOWN:
            return []  # key-up, or an auto-repeat a reader never sends
        out: list[ReaderEvent] = []
        stale = self.expire(timestamp)
        if stale is not None:
            out.append(stale)
        if code in END_KEYS:
            if self._chars:
                done = self._finish()
                if done is not None:
                    out.append(done)
            return out
        pair = _KEYMAP.get(code)
        if pair is None:
            self.ignored_keys += 1
            return out
        ch = pair[1] if self._shift else pair[0]
        # Track data is upper case; a reader typing lower case has Caps Lock against it.
        self._chars.append(ch.upper())
        self._last_at = timestamp
        if len(self._chars) > MAX_SWIPE_CHARS:
            discard = self._discard
            self.reset()
            if not discard:
                out.append(ReadFailed(f"the reader typed more than {MAX_SWIPE_CHARS} characters "
                                      "without Enter (stuck key?)"))
        return out

    def expire(self, now: float) -> ReadFailed | None:
        """Drops a swipe whose typing stopped swipe_timeout_s ago; the ReadFailed, or None."""
        if not self._chars or now - self._last_at <= self.swipe_timeout_s:
            return None
        count, discard = len(self._chars), self._discard
        self._chars.clear()
        self._discard = False
        if discard:
            return None
        return ReadFailed(f"swipe incomplete: the reader stopped typing for more than "
                          f"{self.swipe_timeout_s} s after {count} characters; swipe again")

    def _finish(self) -> ReaderEvent | None:
        text = "".join(self._chars)
        discard = self._discard
        self._chars.clear()
        self._discard = False
        return None if discard else parse_swipe(text)


# ---- the device --------------------------------------------------------------


class KeyEventSource(Protocol):
    """What HidWedgeReader needs of an input device; EvdevKeySource is the real one."""

    name: str
    monotonic_timestamps: bool  # timestamps on asyncio's clock; else arrival time is used

    async def read_keys(self) -> list[tuple[int, int, float]]:
        """The next batch of EV_KEY events as (code, value, timestamp); OSError when gone."""
        ...

    def close(self) -> None: ...


class EvdevKeySource:
    """An evdev.InputDevice, grabbed, read through evdev's asyncio API."""

    def __init__(self, path: str, grab: bool = True) -> None:
        import evdev  # lazily: a hardware library

        try:
            self._device: Any = evdev.InputDevice(path)
        except FileNotFoundError:
            raise ReaderUnavailable(f"no input device {path}: is the card reader plugged in?") from None
        except PermissionError:
            raise ReaderUnavailable(f"permission denied opening {path}: run as a member of group "
                                    "'input' or add a udev rule") from None
        except OSError as exc:
            raise ReaderUnavailable(f"cannot open input device {path}: {exc.strerror or exc}") from None
        self.name = str(self._device.name)
        self._grabbed = False
        try:
            if grab:
                # Exclusive: the swipe must not type into the console or another program.
                self._device.grab()
                self._grabbed = True
        except OSError as exc:
            self._device.close()
            raise ReaderUnavailable(f"cannot grab {path} (another program holds it?): "
                                    f"{exc.strerror or exc}") from None
        try:
            fcntl.ioctl(self._device.fileno(), EVIOCSCLOCKID, struct.pack("i", CLOCK_MONOTONIC))
            self.monotonic_timestamps = True
        except OSError:
            self.monotonic_timestamps = False

    async def read_keys(self) -> list[tuple[int, int, float]]:
        batch = await self._device.async_read()
        return [(e.code, e.value, e.timestamp()) for e in batch if e.type == ecodes.EV_KEY]

    def close(self) -> None:
        if self._grabbed:
            with contextlib.suppress(OSError):  # already unplugged
                self._device.ungrab()
            self._grabbed = False
        # Also unregisters the fd from the loop, so a pending async_read never completes.
        self._device.close()


class HidWedgeReader:
    """firmware.ports.CardReader on a HID wedge. Swipes only: it has no chip slot, beeper or LED.

    open_source(device_path, grab) opens the device; tests pass their own event source.
    Swipes typed while no read is pending, or begun before it, are dropped (counted).
    """

    def __init__(self, device_path: str, *, grab: bool = True, swipe_timeout_s: float = 0.5,
                 open_source: Callable[[str, bool], KeyEventSource] = EvdevKeySource) -> None:
        self.path = device_path
        self.grab = grab
        self.decoder = WedgeDecoder(swipe_timeout_s)
        self.ignored_swipes = 0
        self._open_source = open_source
        self._source: KeyEventSource | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._pending: asyncio.Future[ReaderEvent] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"HidWedgeReader({self.path!r}, open={self._source is not None})"

    async def version(self) -> str:
        source = await self._start()
        return f"HID magstripe wedge: {source.name}"

    async def read(self, *, magstripe: bool = True, chip: bool = True,
                   timeout_s: float = 60.0) -> ReaderEvent:
        if not magstripe:
            raise ReaderUnavailable(f"the card reader on {self.path} is a magstripe wedge: "
                                    "it has no chip slot")
        await self._start()
        if self._pending is not None:
            raise RuntimeError("a read is already pending on this reader")
        self.decoder.discard_current()  # begun before this read: not for it
        future: asyncio.Future[ReaderEvent] = asyncio.get_running_loop().create_future()
        self._pending = future
        try:
            # asyncio.wait, not wait_for: on 3.11 wait_for swallows a cancel that arrives
            # together with a swipe, and an operator CANCEL must never be lost.
            done, _ = await asyncio.wait({future}, timeout=timeout_s if timeout_s > 0 else None)
            return future.result() if done else ReadTimedOut()
        except asyncio.CancelledError:
            self.decoder.discard_current()  # the rest of a swipe under way is nobody's
            raise
        finally:
            self._pending = None

    async def transmit(self, apdu: bytes, timeout_s: float = 5.0) -> bytes:
        """A keyboard wedge reads magstripe only: there is no chip slot to talk to."""
        raise ChipGone("no chip slot: this reader is a magstripe keyboard wedge")

    async def chip_present(self) -> bool:
        return False

    async def power_off(self) -> None:
        return None

    async def beep(self, ms: int = 100) -> None:
        """A wedge has no beeper the host can drive: nothing to do (pair it with a buzzer driver)."""
        log.debug("HID wedge %s has no beeper; beep(%d) ignored", self.path, ms)

    async def led(self, colour: str, on: bool) -> None:
        """A wedge has no host-driven LED: nothing to do."""
        log.debug("HID wedge %s has no LED; led(%s) ignored", self.path, colour)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop("the card reader driver was closed")
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer

    # ---- internals -------------------------------------------------------------

    async def _start(self) -> KeyEventSource:
        if self._closed:
            raise ReaderUnavailable(f"the card reader driver for {self.path} is closed")
        if self._source is None:
            # Opening again is how an unplugged reader is picked up once it is back.
            self._source = self._open_source(self.path, self.grab)
            self.decoder.reset()
            self._consumer = asyncio.get_running_loop().create_task(self._consume(self._source))
        return self._source

    async def _consume(self, source: KeyEventSource) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                keys = await source.read_keys()
            except OSError as exc:
                self._stop(f"its input device is gone ({exc.strerror or exc})")
                return
            arrived = loop.time()
            for code, value, stamp in keys:
                at = stamp if source.monotonic_timestamps else arrived
                for event in self.decoder.feed(code, value, at):
                    self._deliver(event)
            self._arm_expiry(loop)

    def _arm_expiry(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        deadline = self.decoder.deadline
        if deadline is not None:
            self._expiry = loop.call_at(deadline + 0.001, self._on_expiry)

    def _on_expiry(self) -> None:
        self._expiry = None
        event = self.decoder.expire(asyncio.get_running_loop().time())
        if event is not None:
            self._deliver(event)

    def _deliver(self, event: ReaderEvent) -> None:
        future = self._pending
        if future is None or future.done():
            self.ignored_swipes += 1
            log.info("HID wedge %s: a swipe came while no read was waiting; ignored", self.path)
            return
        future.set_result(event)

    def _stop(self, problem: str) -> None:
        """The device is gone (or closing): fail the pending read in words, drop the source."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._source is not None:
            with contextlib.suppress(OSError):
                self._source.close()
            self._source = None
        future = self._pending
        if future is not None and not future.done():
            future.set_exception(ReaderUnavailable(f"the card reader on {self.path}: {problem}"))
        if not self._closed:
            log.warning("HID wedge %s: %s", self.path, problem)
