"""The HID keyboard-wedge reader: the key-event decoder with synthetic evdev events, and the
driver's read / cancel / timeout / unplug logic over an injected event source.

The real evdev device path (InputDevice, grab, async_read) cannot run here: this machine
has no /dev/uinput (ENODEV) to make a virtual keyboard. Only its open-failure path runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from evdev import ecodes
from hypothesis import given, settings
from hypothesis import strategies as st

from board.sim.cards import TEST_CARDS
from drivers.reader.hid_wedge import (
    MAX_SWIPE_CHARS,
    EvdevKeySource,
    HidWedgeReader,
    WedgeDecoder,
    parse_swipe,
)
from firmware.ports import MagstripeRead, ReaderUnavailable, ReadFailed, ReadTimedOut

T = TypeVar("T")
CARD = TEST_CARDS["cup_debit"]
SHIFTED = {"%": ecodes.KEY_5, "?": ecodes.KEY_SLASH, "^": ecodes.KEY_6, "+": ecodes.KEY_EQUAL,
           ":": ecodes.KEY_SEMICOLON, "_": ecodes.KEY_MINUS}
PLAIN = {";": ecodes.KEY_SEMICOLON, "=": ecodes.KEY_EQUAL, "/": ecodes.KEY_SLASH, " ": ecodes.KEY_SPACE,
         ".": ecodes.KEY_DOT, "-": ecodes.KEY_MINUS, "\n": ecodes.KEY_ENTER}

Event = tuple[int, int, float]


def keystrokes(text: str, start: float = 100.0, step: float = 0.004,
               shift_key: int = ecodes.KEY_LEFTSHIFT) -> list[Event]:
    """What a wedge types for text on a US layout: shift down/up around shifted characters."""
    events: list[Event] = []
    at = start
    for ch in text:
        if ch in SHIFTED or ch.isupper():
            code = SHIFTED.get(ch) or getattr(ecodes, f"KEY_{ch}")
            shifted = True
        elif ch.isdigit():
            code, shifted = getattr(ecodes, f"KEY_{ch}"), False
        elif ch.islower():
            code, shifted = getattr(ecodes, f"KEY_{ch.upper()}"), False
        else:
            code, shifted = PLAIN[ch], False
        if shifted:
            events.append((shift_key, 1, at))
        events += [(code, 1, at), (code, 0, at + step / 2)]
        if shifted:
            events.append((shift_key, 0, at + step / 2))
        at += step
    return events


def feed_all(decoder: WedgeDecoder, events: list[Event]) -> list[Any]:
    out: list[Any] = []
    for event in events:
        out += decoder.feed(*event)
    return out


def swipe_text(card=CARD, *, track3: str | None = None) -> str:
    text = f"%{card.track1}?;{card.track2}?"
    if track3 is not None:
        text += f";{track3}?"
    return text + "\n"


# ---- the decoder ---------------------------------------------------------------------------


def test_a_full_swipe_gives_tracks_1_and_2():
    results = feed_all(WedgeDecoder(), keystrokes(swipe_text()))
    assert len(results) == 1
    read = results[0]
    assert isinstance(read, MagstripeRead)
    assert (read.track1, read.track2, read.track3) == (CARD.track1, CARD.track2, None)
    assert CARD.pan not in repr(read)


def test_track_3_as_a_second_semicolon_track_or_with_a_plus_sentinel():
    track3 = "011234567890123445=724724100000000000030300"
    semi = feed_all(WedgeDecoder(), keystrokes(swipe_text(track3=track3)))[0]
    assert semi.track2 == CARD.track2 and semi.track3 == track3
    plus = feed_all(WedgeDecoder(), keystrokes(f";{CARD.track2}?+{track3}?\n"))[0]
    assert (plus.track1, plus.track2, plus.track3) == (None, CARD.track2, track3)


def test_right_shift_and_caps_lock_letters_decode_the_same():
    right = feed_all(WedgeDecoder(), keystrokes(swipe_text(), shift_key=ecodes.KEY_RIGHTSHIFT))[0]
    assert right.track1 == CARD.track1
    # Caps Lock on: letters arrive unshifted (lower case); track data is upper case anyway.
    lower = swipe_text().replace("CUP DEBIT/TEST", "cup debit/test")
    assert feed_all(WedgeDecoder(), keystrokes(lower))[0].track1 == CARD.track1


def test_tracks_the_reader_marks_failed_are_none_and_all_failed_is_a_failure():
    partial = feed_all(WedgeDecoder(), keystrokes(f"%E?;{CARD.track2}?\n"))[0]
    assert partial.track1 is None and partial.track2 == CARD.track2
    assert feed_all(WedgeDecoder(), keystrokes("%E?;E?\n")) == [
        ReadFailed("the swipe could not be read on any track")]


def test_typing_that_is_not_a_swipe_is_a_failure_in_words():
    (result,) = feed_all(WedgeDecoder(), keystrokes("hello there\n"))
    assert isinstance(result, ReadFailed) and "without track sentinels" in result.reason
    # A track whose end sentinel never came is unusable; the other one still counts.
    (cut,) = feed_all(WedgeDecoder(), keystrokes(f";{CARD.track2}?%B6222\n"))
    assert isinstance(cut, MagstripeRead) and cut.track1 is None and cut.track2 == CARD.track2


def test_a_swipe_that_stops_typing_is_dropped_as_incomplete():
    decoder = WedgeDecoder(swipe_timeout_s=0.5)
    half = keystrokes(swipe_text()[:30], start=10.0)
    assert feed_all(decoder, half) == []
    assert decoder.in_swipe and decoder.deadline == pytest.approx(half[-1][2] + 0.5, abs=0.01)
    assert decoder.expire(half[-1][2] + 0.4) is None  # still within the timeout
    # The next swipe starts 0.6 s later: the stale half is reported, the new one is good.
    results = feed_all(decoder, keystrokes(swipe_text(), start=half[-1][2] + 0.6))
    assert len(results) == 2
    assert isinstance(results[0], ReadFailed) and "swipe incomplete" in results[0].reason
    assert CARD.pan[:12] not in results[0].reason
    assert results[1].track2 == CARD.track2


def test_expire_without_another_key_reports_the_incomplete_swipe_once():
    decoder = WedgeDecoder(swipe_timeout_s=0.5)
    feed_all(decoder, keystrokes(";6222021000", start=5.0))
    stale = decoder.expire(6.0)
    assert isinstance(stale, ReadFailed) and "after 11 characters" in stale.reason
    assert decoder.expire(7.0) is None and not decoder.in_swipe


def test_key_ups_repeats_and_unknown_keys_do_not_type():
    decoder = WedgeDecoder()
    events = keystrokes(swipe_text())
    noisy = [events[0], (ecodes.KEY_F1, 1, 100.0), (ecodes.KEY_5, 2, 100.0), *events[1:]]
    (read,) = feed_all(decoder, noisy)
    assert read.track2 == CARD.track2 and decoder.ignored_keys == 1


def test_a_stuck_key_flood_is_cut_off():
    decoder = WedgeDecoder()
    results = feed_all(decoder, keystrokes("1" * (MAX_SWIPE_CHARS + 1), step=0.001))
    assert len(results) == 1 and "stuck key" in results[0].reason and not decoder.in_swipe


def test_discarded_swipe_finishes_silently():
    decoder = WedgeDecoder()
    events = keystrokes(swipe_text())
    feed_all(decoder, events[:20])
    decoder.discard_current()
    assert feed_all(decoder, events[20:]) == []
    assert feed_all(decoder, keystrokes(swipe_text(), start=200.0))[0].track1 == CARD.track1


def test_decoder_repr_shows_no_card_data():
    decoder = WedgeDecoder()
    feed_all(decoder, keystrokes(";6222021000000000017"))
    assert "6222" not in repr(decoder)


track1s = st.builds(lambda pan, name, tail: f"B{pan}^{name}^{tail}",
                    st.text("0123456789", min_size=12, max_size=19),
                    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ /.", min_size=2, max_size=26),
                    st.text("0123456789", min_size=7, max_size=25))
track2s = st.builds(lambda pan, tail: f"{pan}={tail}", st.text("0123456789", min_size=12, max_size=19),
                    st.text("0123456789", min_size=7, max_size=17))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), track1s), st.one_of(st.none(), track2s), st.sampled_from([0.001, 0.01, 0.2]))
def test_generated_swipes_round_trip_at_any_typing_speed(track1, track2, step):
    text = (f"%{track1}?" if track1 else "") + (f";{track2}?" if track2 else "") + "\n"
    results = feed_all(WedgeDecoder(swipe_timeout_s=0.5), keystrokes(text, step=step))
    if track1 is None and track2 is None:
        assert results == []  # Enter alone on an empty line: nothing
        return
    assert results == [MagstripeRead(track1, track2, None)]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_parse_swipe_never_raises(text):
    assert isinstance(parse_swipe(text), MagstripeRead | ReadFailed)


# ---- the driver over an injected event source -----------------------------------------------


class FakeKeySource:
    """An input device the test types into. The real one is EvdevKeySource (untestable here)."""

    name = "Fake MSR wedge"
    monotonic_timestamps = True

    def __init__(self) -> None:
        self.queue: asyncio.Queue[list[Event] | OSError] = asyncio.Queue()
        self.closed = False

    async def read_keys(self) -> list[Event]:
        item = await self.queue.get()
        if isinstance(item, OSError):
            raise item
        return item

    def close(self) -> None:
        self.closed = True

    def type(self, text: str, *, step: float = 0.0005) -> None:
        self.queue.put_nowait(keystrokes(text, start=time.monotonic(), step=step))


class Opener:
    def __init__(self) -> None:
        self.sources: list[FakeKeySource] = []
        self.calls: list[tuple[str, bool]] = []
        self.fail: Exception | None = None

    def __call__(self, path: str, grab: bool) -> FakeKeySource:
        self.calls.append((path, grab))
        if self.fail is not None:
            raise self.fail
        self.sources.append(FakeKeySource())
        return self.sources[-1]

    @property
    def source(self) -> FakeKeySource:
        return self.sources[-1]


def drive(scenario: Callable[[HidWedgeReader, Opener], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        opener = Opener()
        reader = HidWedgeReader("/dev/input/by-id/usb-msr-event-kbd", open_source=opener, **options)
        try:
            return await scenario(reader, opener)
        finally:
            await reader.close()

    return asyncio.run(main())


async def settle() -> None:
    """Lets the consumer task take what was queued (it runs on the same loop)."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_driver_reads_a_swipe_and_grabs_the_device():
    async def scenario(reader: HidWedgeReader, opener: Opener):
        version = await reader.version()
        task = asyncio.create_task(reader.read(timeout_s=5))
        await settle()
        opener.source.type(swipe_text())
        return version, await task, opener.calls

    version, read, calls = drive(scenario)
    assert version == "HID magstripe wedge: Fake MSR wedge"
    assert isinstance(read, MagstripeRead) and read.track2 == CARD.track2
    assert calls == [("/dev/input/by-id/usb-msr-event-kbd", True)]


def test_driver_timeout_and_no_chip():
    async def scenario(reader: HidWedgeReader, opener: Opener):
        started = time.monotonic()
        timed_out = await reader.read(timeout_s=0.2)
        took = time.monotonic() - started
        with pytest.raises(ReaderUnavailable, match="no chip slot"):
            await reader.read(magstripe=False, chip=True)
        await reader.beep(100)  # no beeper: documented to do nothing, and it must not fail
        await reader.led("green", True)
        return timed_out, took

    timed_out, took = drive(scenario)
    assert timed_out == ReadTimedOut() and 0.19 <= took < 0.5


def test_driver_cancel_returns_at_once_and_the_rest_of_that_swipe_is_dropped():
    async def scenario(reader: HidWedgeReader, opener: Opener):
        task = asyncio.create_task(reader.read(timeout_s=5))
        await settle()
        text = swipe_text()
        opener.source.type(text[:25])  # the operator cancels mid-swipe
        await settle()
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.perf_counter() - started
        task = asyncio.create_task(reader.read(timeout_s=5))
        await settle()
        opener.source.type(text[25:])  # the end of the cancelled swipe: nobody's
        await settle()
        opener.source.type(swipe_text(TEST_CARDS["visa"]))
        return took, await task

    took, read = drive(scenario)
    assert took < 0.1, f"cancel took {took * 1000:.1f} ms"
    assert isinstance(read, MagstripeRead) and read.track2 == TEST_CARDS["visa"].track2


def test_swipes_while_no_read_waits_are_ignored():
    async def scenario(reader: HidWedgeReader, opener: Opener):
        await reader.version()
        opener.source.type(swipe_text(TEST_CARDS["visa"]))
        await settle()
        task = asyncio.create_task(reader.read(timeout_s=5))
        await settle()
        opener.source.type(swipe_text())
        return await task, reader.ignored_swipes

    read, ignored = drive(scenario)
    assert read.track2 == CARD.track2 and ignored == 1


def test_a_swipe_that_stops_typing_fails_the_read_after_the_swipe_timeout():
    async def scenario(reader: HidWedgeReader, opener: Opener):
        task = asyncio.create_task(reader.read(timeout_s=5))
        await settle()
        started = time.monotonic()
        opener.source.type(swipe_text()[:40])
        return await task, time.monotonic() - started

    result, took = drive(scenario, swipe_timeout_s=0.15)
    assert isinstance(result, ReadFailed) and "swipe incomplete" in result.reason
    assert 0.14 <= took < 0.5


def test_unplugged_device_fails_the_read_in_words_and_is_reopened_next_time():
    async def scenario(reader: HidWedgeReader, opener: Opener):
        task = asyncio.create_task(reader.read(timeout_s=5))
        await settle()
        first = opener.source
        first.queue.put_nowait(OSError(19, "No such device"))
        with pytest.raises(ReaderUnavailable, match=r"input device is gone \(No such device\)"):
            await task
        assert first.closed
        task = asyncio.create_task(reader.read(timeout_s=5))  # plugged back in: opened again
        await settle()
        opener.source.type(swipe_text())
        read = await task
        opener.fail = ReaderUnavailable("no input device /dev/input/x: is the card reader plugged in?")
        opener.source.queue.put_nowait(OSError(19, "No such device"))
        await settle()
        with pytest.raises(ReaderUnavailable, match="plugged in"):
            await reader.read(timeout_s=1)
        return read, len(opener.calls)

    read, opened = drive(scenario)
    assert read.track2 == CARD.track2 and opened == 3


def test_close_fails_a_pending_read_and_closes_the_device():
    async def scenario(reader: HidWedgeReader, opener: Opener):
        task = asyncio.create_task(reader.read(timeout_s=5))
        await settle()
        await reader.close()
        with pytest.raises(ReaderUnavailable, match="closed"):
            await task
        with pytest.raises(ReaderUnavailable, match="closed"):
            await reader.read()
        return opener.source.closed

    assert drive(scenario) is True


def test_the_real_device_source_fails_in_words_for_a_missing_device(tmp_path):
    with pytest.raises(ReaderUnavailable, match=r"no input device .* plugged in"):
        EvdevKeySource(str(tmp_path / "event99"))
    # A file that is not an input device: evdev's ioctl fails; the error still names the path.
    not_input = tmp_path / "event0"
    not_input.write_bytes(b"")
    with pytest.raises(ReaderUnavailable, match="event0"):
        EvdevKeySource(str(not_input))
