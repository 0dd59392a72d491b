"""Keypad drivers: key maps, the evdev key decoder, EvdevKeypad on an injected event source,
TerminalKeypad on a real pseudo-terminal.

There is no /dev/input or /dev/uinput here, so EvdevKeypad reads a real pipe carrying real
struct input_event records; the evdev.InputDevice path itself is exercised on the QEMU board.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import itertools
import logging
import os
import struct
import termios
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from evdev import InputEvent, ecodes

from drivers.keypad import KeypadUnavailable
from drivers.keypad.decoder import EV_KEY, EV_SYN, SYN_DROPPED, KeyDecoder
from drivers.keypad.evdev_keypad import MAX_PENDING_KEYS, EvdevKeypad, EvdevSource, find_keypad
from drivers.keypad.keymaps import KEYMAPS, PC, POS_KEYPAD, keymap
from drivers.keypad.terminal_keypad import KEY_HELP, TerminalKeypad, TerminalKeyParser
from firmware.ports import Key, KeyPress

E = ecodes.ecodes
PRESS, RELEASE, REPEAT = 1, 0, 2


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Runs an async test on a fresh event loop, bounded in time (no pytest-asyncio here)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 20))

    return wrapper


# ---- key maps --------------------------------------------------------------


def test_pc_map_reaches_every_firmware_key() -> None:
    assert set(PC.values()) == set(Key)


@pytest.mark.parametrize("name", ["pc", "pos_keypad", "qemu"])
def test_every_map_has_what_a_sale_and_a_pin_need(name: str) -> None:
    keys = set(keymap(name).values())
    assert {Key(str(n)) for n in range(10)} | {Key.DOT, Key.ENTER, Key.CANCEL, Key.CLEAR, Key.D00,
                                                Key.UP, Key.DOWN, Key.MENU} <= keys


def test_qemu_map_is_the_pc_map_and_maps_are_copies() -> None:
    assert KEYMAPS["qemu"] == PC
    mine = keymap("pc")
    mine.clear()
    assert keymap("pc") == PC


@pytest.mark.parametrize(("name", "code", "key"), [
    ("pc", "KEY_KP7", Key.D7), ("pc", "KEY_7", Key.D7), ("pc", "KEY_ESC", Key.CANCEL),
    ("pc", "KEY_BACKSPACE", Key.CLEAR), ("pc", "KEY_F10", Key.MENU), ("pc", "KEY_M", Key.MENU),
    ("pc", "KEY_D", Key.D00), ("pc", "KEY_KPENTER", Key.ENTER), ("pc", "KEY_F3", Key.F3),
    ("pos_keypad", "KEY_KPPLUS", Key.D00), ("pos_keypad", "KEY_KPSLASH", Key.UP),
    ("pos_keypad", "KEY_KPASTERISK", Key.DOWN), ("pos_keypad", "KEY_KPMINUS", Key.MENU),
    ("pos_keypad", "KEY_KPDOT", Key.DOT),
])
def test_documented_choices(name: str, code: str, key: Key) -> None:
    assert keymap(name)[E[code]] is key


def test_pos_keypad_has_no_letter_keys() -> None:
    assert E["KEY_M"] not in POS_KEYPAD and E["KEY_D"] not in POS_KEYPAD


def test_unknown_map_is_refused_in_words() -> None:
    with pytest.raises(ValueError, match=r"unknown key map 'ps2'; known key maps: pc, pos_keypad, qemu"):
        keymap("ps2")


# ---- decoder ---------------------------------------------------------------


def key_event(dec: KeyDecoder, name: str, value: int, at: float) -> KeyPress | None:
    return dec.feed(EV_KEY, E[name], value, at)


def test_press_gives_the_key_and_release_gives_nothing() -> None:
    dec = KeyDecoder(PC)
    assert key_event(dec, "KEY_KP5", PRESS, 10.0) == KeyPress(Key.D5, 10.0)
    assert key_event(dec, "KEY_KP5", RELEASE, 10.08) is None
    assert key_event(dec, "KEY_ENTER", PRESS, 10.2) == KeyPress(Key.ENTER, 10.2)


def test_contact_bounce_within_debounce_is_dropped() -> None:
    dec = KeyDecoder(PC, debounce_ms=30)
    assert key_event(dec, "KEY_1", PRESS, 1.000) is not None
    assert key_event(dec, "KEY_1", RELEASE, 1.050) is None
    assert key_event(dec, "KEY_1", PRESS, 1.060) is None  # 10 ms after the release: bounce
    assert key_event(dec, "KEY_1", RELEASE, 1.065) is None
    assert key_event(dec, "KEY_1", PRESS, 1.0949) is None  # still 29.9 ms after that release
    assert key_event(dec, "KEY_1", RELEASE, 1.10) is None
    assert key_event(dec, "KEY_1", PRESS, 1.131) == KeyPress(Key.D1, 1.131)  # 31 ms: a real press
    assert dec.bounced == 2


def test_bounce_is_per_key() -> None:
    dec = KeyDecoder(PC)
    key_event(dec, "KEY_1", PRESS, 1.0)
    key_event(dec, "KEY_1", RELEASE, 1.05)
    assert key_event(dec, "KEY_2", PRESS, 1.051) == KeyPress(Key.D2, 1.051)


def test_second_press_without_release_is_dropped() -> None:
    dec = KeyDecoder(PC)
    assert key_event(dec, "KEY_ENTER", PRESS, 1.0) is not None
    assert key_event(dec, "KEY_ENTER", PRESS, 2.0) is None
    assert dec.bounced == 1
    key_event(dec, "KEY_ENTER", RELEASE, 2.1)
    assert key_event(dec, "KEY_ENTER", PRESS, 3.0) is not None


def held(dec: KeyDecoder, name: str, *, start: float, until: float, kernel_rate_s: float) -> list[KeyPress]:
    """A key held from start to until, the kernel repeating it every kernel_rate_s after 250 ms."""
    out = [key_event(dec, name, PRESS, start)]
    t = start + 0.250
    while t < until:
        out.append(key_event(dec, name, REPEAT, t))
        t += kernel_rate_s
    out.append(key_event(dec, name, RELEASE, until))
    return [p for p in out if p is not None]


def test_held_clear_repeats_after_the_delay_at_the_interval() -> None:
    dec = KeyDecoder(PC, repeat_delay_ms=500, repeat_interval_ms=100)
    presses = held(dec, "KEY_BACKSPACE", start=0.0, until=1.0, kernel_rate_s=0.033)
    assert presses[0] == KeyPress(Key.CLEAR, 0.0)
    repeats = presses[1:]
    assert all(p.repeat and p.key is Key.CLEAR for p in repeats)
    assert repeats[0].at >= 0.5
    gaps = [b.at - a.at for a, b in itertools.pairwise(repeats)]
    assert gaps and min(gaps) >= 0.1 - 1e-9
    # Kernel repeats at 0.250 + k * 0.033 s: the first past 500 ms, then the first >= 100 ms later.
    assert [p.at for p in repeats] == pytest.approx([0.514, 0.646, 0.778, 0.910])


@pytest.mark.parametrize("name", ["KEY_ENTER", "KEY_KPENTER", "KEY_ESC", "KEY_5", "KEY_F1"])
def test_held_key_outside_repeat_keys_gives_one_press(name: str) -> None:
    dec = KeyDecoder(PC)
    presses = held(dec, name, start=0.0, until=3.0, kernel_rate_s=0.033)
    assert len(presses) == 1 and not presses[0].repeat


@pytest.mark.parametrize("key", [Key.ENTER, Key.CANCEL])
def test_enter_and_cancel_may_not_be_made_to_repeat(key: Key) -> None:
    with pytest.raises(ValueError, match="may never auto-repeat"):
        KeyDecoder(PC, repeat_keys={Key.UP, key})


def test_repeat_of_a_key_never_seen_down_is_ignored() -> None:
    dec = KeyDecoder(PC)  # the key was held when the terminal started
    assert key_event(dec, "KEY_UP", REPEAT, 5.0) is None


def test_unmapped_codes_are_ignored_and_counted_once_per_press() -> None:
    dec = KeyDecoder(POS_KEYPAD)
    assert key_event(dec, "KEY_A", PRESS, 1.0) is None
    for i in range(10):
        assert key_event(dec, "KEY_A", REPEAT, 1.5 + i * 0.03) is None
    assert key_event(dec, "KEY_NUMLOCK", PRESS, 2.0) is None
    assert dec.unmapped == 2
    assert key_event(dec, "KEY_KP1", PRESS, 2.1) == KeyPress(Key.D1, 2.1)


def test_other_event_types_are_ignored() -> None:
    dec = KeyDecoder(PC)
    assert dec.feed(ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70059, 1.0) is None
    assert dec.feed(EV_SYN, ecodes.SYN_REPORT, 0, 1.0) is None
    assert dec.feed(ecodes.EV_LED, ecodes.LED_NUML, 1, 1.0) is None
    assert dec.unmapped == 0


def test_shift_is_no_key_and_changes_no_key() -> None:
    dec = KeyDecoder(PC)
    assert key_event(dec, "KEY_LEFTSHIFT", PRESS, 1.0) is None
    assert key_event(dec, "KEY_1", PRESS, 1.1) == KeyPress(Key.D1, 1.1)  # not '!'
    assert key_event(dec, "KEY_DOT", PRESS, 1.2) == KeyPress(Key.DOT, 1.2)  # not '>'
    assert key_event(dec, "KEY_LEFTSHIFT", RELEASE, 1.3) is None


def test_syn_dropped_forgets_keys_whose_release_may_be_lost() -> None:
    dec = KeyDecoder(PC)
    key_event(dec, "KEY_3", PRESS, 1.0)
    dec.feed(EV_SYN, SYN_DROPPED, 0, 1.5)  # the release was in the lost events
    assert key_event(dec, "KEY_3", PRESS, 2.0) == KeyPress(Key.D3, 2.0)


def test_pin_entry_through_the_decoder_logs_nothing_and_repr_shows_no_key(
        caplog: pytest.LogCaptureFixture) -> None:
    dec = KeyDecoder(PC)
    caplog.set_level(logging.DEBUG)
    t = 0.0
    for digit in "4071":
        t += 0.2
        key_event(dec, f"KEY_{digit}", PRESS, t)
    assert caplog.records == []
    assert repr(dec) == f"KeyDecoder(keys={len(PC)}, unmapped=0, bounced=0)"  # counts, no key state


def test_negative_timings_are_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        KeyDecoder(PC, debounce_ms=-1)


# ---- EvdevKeypad on an injected source -----------------------------------------

EVENT = struct.Struct("llHHi")  # struct input_event on 64-bit Linux: timeval, type, code, value


class PipeEventSource:
    """A stand-in for evdev.InputDevice: real struct input_event records on a real pipe."""

    def __init__(self, path: str, name: str = "Test POS Keypad") -> None:
        self.path, self.name = path, name
        self.monotonic_timestamps = True
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._partial = b""
        self.calls: list[str] = []
        self.grab_error: OSError | None = None
        self.read_error: OSError | None = None

    def send(self, *events: tuple[int, int, int, float]) -> None:
        data = b"".join(EVENT.pack(int(at), round(at % 1 * 1e6), t, c, v) for t, c, v, at in events)
        os.write(self._w, data)

    def fileno(self) -> int:
        return self._r

    def read(self) -> list[InputEvent]:
        if self.read_error is not None:
            raise self.read_error
        data = self._partial + os.read(self._r, EVENT.size * 64)  # BlockingIOError when empty
        whole = len(data) - len(data) % EVENT.size
        self._partial = data[whole:]
        return [InputEvent(*EVENT.unpack_from(data, i)) for i in range(0, whole, EVENT.size)]

    def grab(self) -> None:
        self.calls.append("grab")
        if self.grab_error is not None:
            raise self.grab_error

    def ungrab(self) -> None:
        self.calls.append("ungrab")

    def close(self) -> None:
        self.calls.append("close")
        for fd in (self._r, self._w):
            os.close(fd)


def tap(name: str, at: float, hold: float = 0.06) -> list[tuple[int, int, int, float]]:
    """A key pressed and released, with the SYN_REPORTs and MSC_SCANs a real keyboard sends."""
    return [(ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70000, at), (EV_KEY, E[name], PRESS, at),
            (EV_SYN, ecodes.SYN_REPORT, 0, at), (EV_KEY, E[name], RELEASE, at + hold),
            (EV_SYN, ecodes.SYN_REPORT, 0, at + hold)]


@pytest.fixture
def source() -> Iterator[PipeEventSource]:
    src = PipeEventSource("/dev/input/event7")
    yield src


def open_keypad(src: PipeEventSource, **options: object) -> EvdevKeypad:
    return EvdevKeypad(src.path, PC, open_device=lambda path: src, **options)  # type: ignore[arg-type]


@run_async
async def test_evdev_keypad_reads_keys_in_order_and_grabs(source: PipeEventSource) -> None:
    pad = open_keypad(source)
    assert source.calls == ["grab"]
    t0 = time.monotonic()
    source.send(*tap("KEY_KP1", t0), *tap("KEY_KP1", t0 + 0.2), *tap("KEY_KPDOT", t0 + 0.4),
                *tap("KEY_A", t0 + 0.5), *tap("KEY_KPENTER", t0 + 0.6))
    got = [await pad.next_key() for _ in range(4)]
    assert [p.key for p in got] == [Key.D1, Key.D1, Key.DOT, Key.ENTER]
    assert got[0].at == pytest.approx(t0, abs=1e-6)
    assert pad.decoder.unmapped == 1
    pad.close()
    assert source.calls == ["grab", "ungrab", "close"]
    pad.close()  # twice is harmless
    assert source.calls == ["grab", "ungrab", "close"]


@run_async
async def test_evdev_keypad_without_grab_does_not_grab(source: PipeEventSource) -> None:
    pad = open_keypad(source, grab=False)
    pad.close()
    assert source.calls == ["close"]


@run_async
async def test_evdev_keypad_applies_bounce_through_the_device_timestamps(source: PipeEventSource) -> None:
    pad = open_keypad(source)
    t0 = time.monotonic()
    source.send(*tap("KEY_5", t0, hold=0.05), *tap("KEY_5", t0 + 0.06), *tap("KEY_6", t0 + 0.3))
    assert (await pad.next_key()).key is Key.D5
    assert (await pad.next_key()).key is Key.D6
    assert pad.decoder.bounced == 1
    pad.close()


@run_async
async def test_cancelled_next_key_loses_no_key_and_unregisters_the_fd(source: PipeEventSource) -> None:
    pad = open_keypad(source)
    waiting = asyncio.create_task(pad.next_key())
    await asyncio.sleep(0)  # let it reach its wait on the fd
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert asyncio.get_running_loop().remove_reader(source.fileno()) is False  # nobody left on the fd
    source.send(*tap("KEY_9", time.monotonic()))
    assert (await asyncio.wait_for(pad.next_key(), 5)).key is Key.D9
    pad.close()


@run_async
async def test_close_wakes_a_waiting_next_key(source: PipeEventSource) -> None:
    pad = open_keypad(source)
    waiting = asyncio.create_task(pad.next_key())
    await asyncio.sleep(0)
    pad.close()
    with pytest.raises(KeypadUnavailable, match="was closed"):
        await waiting
    with pytest.raises(KeypadUnavailable, match="is closed"):
        await pad.next_key()


@run_async
async def test_unplugged_device_raises_in_words(source: PipeEventSource) -> None:
    pad = open_keypad(source)
    source.read_error = OSError(errno.ENODEV, "No such device")
    source.send(*tap("KEY_1", time.monotonic()))
    with pytest.raises(KeypadUnavailable, match=r"/dev/input/event7 vanished: keypad unplugged\?"):
        await pad.next_key()
    pad.close()


def test_device_grabbed_elsewhere_is_refused_and_closed(source: PipeEventSource) -> None:
    source.grab_error = OSError(errno.EBUSY, "Device or resource busy")
    with pytest.raises(KeypadUnavailable, match="grabbed by another program"):
        open_keypad(source)
    assert source.calls == ["grab", "close"]


@run_async
async def test_a_flood_of_keys_is_capped_not_queued_without_end(source: PipeEventSource) -> None:
    pad = open_keypad(source)
    t0 = time.monotonic()
    names = [f"KEY_{n}" for n in range(10)]
    events = [ev for i in range(100) for ev in tap(names[i % 10], t0 + i * 0.1)]
    source.send(*events[:300])  # 60 taps fit the pipe in one write; read in one batch of 64 events
    source.send(*events[300:])
    got = [await pad.next_key() for _ in range(MAX_PENDING_KEYS)]
    assert [p.key for p in got[:12]] == [Key(str(i % 10)) for i in range(12)]
    assert pad.overflowed == 0  # 64 events per read: far fewer keys than the cap per batch
    pad.close()


@run_async
async def test_arrival_time_is_used_when_the_device_clock_is_not_monotonic(source: PipeEventSource) -> None:
    source.monotonic_timestamps = False
    pad = open_keypad(source)
    before = time.monotonic()
    source.send(*tap("KEY_2", 12345.0))  # a wall-clock-like stamp the keypad must not trust
    press = await pad.next_key()
    assert before <= press.at <= time.monotonic()
    pad.close()


def test_real_source_missing_device_is_named() -> None:
    with pytest.raises(KeypadUnavailable, match=r"no input device /dev/input/event99: is the keypad plugged"):
        EvdevSource("/dev/input/event99")


def test_real_source_on_a_file_that_is_no_input_device(tmp_path) -> None:
    fake = tmp_path / "event0"
    fake.write_bytes(b"\0" * 64)
    with pytest.raises(KeypadUnavailable, match=f"cannot open input device {fake}"):
        EvdevSource(str(fake))


def test_find_keypad_without_dev_input_says_so(tmp_path) -> None:
    missing = r"nothing on this machine: no input devices to search for 'POS'"
    with pytest.raises(KeypadUnavailable, match=missing):
        find_keypad("POS", str(tmp_path / "nothing"))
    (tmp_path / "event0").write_bytes(b"")  # a file, not a character device
    unreadable = r"no input device named like 'POS' in .*; devices: none readable"
    with pytest.raises(KeypadUnavailable, match=unreadable):
        find_keypad("POS", str(tmp_path))


# ---- TerminalKeypad on a real pty ------------------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    yield master, slave
    for fd in (master, slave):
        with contextlib.suppress(OSError):  # a test may have closed it already
            os.close(fd)


def unread(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


async def until_read(slave: int) -> None:
    """Bounded wait until the keypad has taken every byte out of the tty."""
    deadline = time.monotonic() + 5
    while unread(slave):
        assert time.monotonic() < deadline, "keypad did not read the tty"
        await asyncio.sleep(0.001)


TERMINAL_KEYS: list[tuple[bytes, Key]] = [
    *[(str(n).encode(), Key(str(n))) for n in range(10)],
    (b".", Key.DOT), (b"d", Key.D00), (b"D", Key.D00), (b"\r", Key.ENTER), (b"\n", Key.ENTER),
    (b"\x7f", Key.CLEAR), (b"\x08", Key.CLEAR), (b"\x1b[3~", Key.CLEAR),
    (b"\x1b[A", Key.UP), (b"\x1b[B", Key.DOWN), (b"\x1bOA", Key.UP), (b"\x1bOB", Key.DOWN),
    (b"\x1b[1;5A", Key.UP),
    (b"\x1bOP", Key.F1), (b"\x1bOQ", Key.F2), (b"\x1bOR", Key.F3), (b"\x1bOS", Key.F4),
    (b"\x1b[11~", Key.F1), (b"\x1b[12~", Key.F2), (b"\x1b[13~", Key.F3), (b"\x1b[14~", Key.F4),
    (b"\x1b[[A", Key.F1), (b"\x1b[[D", Key.F4),
    (b"m", Key.MENU), (b"M", Key.MENU), (b"\x1b[21~", Key.MENU),
    (b"\x1bOM", Key.ENTER), (b"\x1bOt", Key.D4), (b"\x1bOn", Key.DOT),
]


@run_async
async def test_terminal_keypad_every_key_in_one_write(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    with TerminalKeypad(slave, escape_timeout_s=1.0) as pad:
        os.write(master, b"".join(data for data, _ in TERMINAL_KEYS))
        got = [(await asyncio.wait_for(pad.next_key(), 5)).key for _ in TERMINAL_KEYS]
    assert got == [key for _, key in TERMINAL_KEYS]


@run_async
async def test_terminal_keypad_escape_sequences_split_across_writes(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    sequences = [(data, key) for data, key in TERMINAL_KEYS if data.startswith(b"\x1b")]
    with TerminalKeypad(slave, escape_timeout_s=2.0) as pad:
        for data, key in sequences:
            reading = asyncio.create_task(pad.next_key())
            for i in range(len(data)):
                os.write(master, data[i:i + 1])
                await until_read(slave)
                assert not reading.done() or i == len(data) - 1
            assert (await asyncio.wait_for(reading, 5)).key is key, data


@run_async
async def test_terminal_keypad_lone_esc_is_cancel_after_the_timeout(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    with TerminalKeypad(slave, escape_timeout_s=0.05) as pad:
        started = time.monotonic()
        os.write(master, b"\x1b")
        press = await asyncio.wait_for(pad.next_key(), 5)
        assert press.key is Key.CANCEL
        assert time.monotonic() - started >= 0.05
        os.write(master, b"\x1b5")  # Esc then a digit, typed together
        assert [(await pad.next_key()).key for _ in range(2)] == [Key.CANCEL, Key.D5]


@run_async
async def test_terminal_keypad_ignores_unknown_bytes(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    with TerminalKeypad(slave) as pad:
        os.write(master, "x\t€\x1b[C\x1b[99~\x1bOZ\x1b[1;2;3;4;5;6;7;8;9;10X".encode() + b"7")
        assert (await asyncio.wait_for(pad.next_key(), 5)).key is Key.D7
        assert pad.ignored == 2 + 3 + 4  # x, tab, three bytes of the euro sign, four sequences


@run_async
async def test_cancelled_terminal_next_key_loses_nothing(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    with TerminalKeypad(slave) as pad:
        waiting = asyncio.create_task(pad.next_key())
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        os.write(master, b"8")
        assert (await asyncio.wait_for(pad.next_key(), 5)).key is Key.D8


@run_async
async def test_terminal_hang_up_is_reported(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    with TerminalKeypad(slave) as pad:
        os.close(master)
        with pytest.raises(KeypadUnavailable, match="hung up"):
            await asyncio.wait_for(pad.next_key(), 5)


def test_terminal_mode_and_flags_restored_on_close_and_on_exception(pty_pair: tuple[int, int]) -> None:
    _, slave = pty_pair
    before = termios.tcgetattr(slave)
    flags = fcntl.fcntl(slave, fcntl.F_GETFL)
    pad = TerminalKeypad(slave)
    during = termios.tcgetattr(slave)
    assert not during[3] & (termios.ICANON | termios.ECHO)
    assert fcntl.fcntl(slave, fcntl.F_GETFL) & os.O_NONBLOCK
    pad.close()
    assert termios.tcgetattr(slave) == before and fcntl.fcntl(slave, fcntl.F_GETFL) == flags
    with pytest.raises(RuntimeError, match="boom"), TerminalKeypad(slave):
        raise RuntimeError("boom")
    assert termios.tcgetattr(slave) == before and fcntl.fcntl(slave, fcntl.F_GETFL) == flags


def test_terminal_keypad_refuses_a_pipe() -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(KeypadUnavailable, match=f"fd {r} is not a terminal"):
            TerminalKeypad(r)
    finally:
        os.close(r)
        os.close(w)


def test_parser_gives_the_same_keys_however_the_bytes_are_split() -> None:
    stream = b"".join(data for data, _ in TERMINAL_KEYS)
    expected = [key for _, key in TERMINAL_KEYS]
    for cut in range(1, len(stream)):
        parser = TerminalKeyParser()
        assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == expected, cut
    bytewise = TerminalKeyParser()
    assert [k for b in stream for k in bytewise.feed(bytes([b]))] == expected


def test_parser_flush_drops_a_cut_off_sequence_and_keeps_lone_esc() -> None:
    parser = TerminalKeyParser()
    assert parser.feed(b"\x1b[1") == [] and parser.pending
    assert parser.flush() == [] and parser.ignored == 1 and not parser.pending
    assert parser.feed(b"\x1b") == [] and parser.flush() == [Key.CANCEL]
    assert parser.feed(b"\x1b\x1b[B") == [Key.CANCEL, Key.DOWN]


def test_key_help_names_every_terminal_key() -> None:
    for word in ("0-9", "Enter", "Esc", "Backspace", "Up", "F1-F4", "F10", "00"):
        assert word in KEY_HELP
