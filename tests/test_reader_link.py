"""The serial-link card reader driver against the emulated reader, over real pseudo-terminals.

Covers docs/reader-link.md end to end: commands and retries, swipes, chip in/out, cancel,
timeouts, noise and split or cut frames, hang-ups with and without a come-back, NAKs,
and the emulator's own protocol handling and control interface.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from board.sim.cards import TEST_CARDS
from board.sim.reader import DEFAULT_ATR, EmulatedReader
from c_ext import posio
from c_ext import reference as ref
from drivers.reader import ReaderRefused
from drivers.reader import link_protocol as lp
from drivers.reader.serial_link import SerialLinkReader
from firmware.engine.tracks import card_from_swipe
from firmware.ports import (
    ChipInserted,
    ChipRemoved,
    MagstripeRead,
    ReaderUnavailable,
    ReadFailed,
    ReadTimedOut,
)

T = TypeVar("T")
CARD = TEST_CARDS["cup_debit"]


@pytest.fixture
def reader(tmp_path: Path):
    em = EmulatedReader(link_dir=tmp_path).start()
    yield em
    em.stop()


def drive(em: EmulatedReader, scenario: Callable[[SerialLinkReader], Awaitable[T]], **options: Any) -> T:
    """Runs scenario(driver) on a fresh event loop; the driver is always closed."""

    async def main() -> T:
        driver = SerialLinkReader(str(em.device_path), **options)
        try:
            return await scenario(driver)
        finally:
            await driver.close()

    return asyncio.run(main())


async def until(em: EmulatedReader, predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Waits (in a thread) for an emulator condition; the emulator notifies on every change."""
    assert await asyncio.to_thread(em.wait_until, predicate, timeout), "condition not reached"


async def armed(em: EmulatedReader, timeout: float = 2.0) -> None:
    assert await asyncio.to_thread(em.wait_armed, timeout), "the reader was never armed"


# ---- commands --------------------------------------------------------------------------


def test_version_beep_led_and_status_reach_the_reader(reader):
    async def scenario(drv: SerialLinkReader):
        version = await drv.version()
        await drv.beep(120)
        await drv.led("green", True)
        await drv.led("red", True)
        await drv.led("red", False)
        return version, await drv.status()

    version, status = drive(reader, scenario)
    assert version == "posreader-sim 1.0"
    assert status == (False, False)
    assert reader.beeps == [120]
    assert reader.leds == {"green": True, "red": False, "amber": False, "blue": False}
    beeps = reader.commands_of("B")
    assert [c.args for c in beeps] == [{"ms": 120}]
    assert [c.args for c in reader.commands_of("L")] == [
        {"colour": "green", "on": True}, {"colour": "red", "on": True}, {"colour": "red", "on": False}]


def test_bad_arguments_are_refused_before_anything_is_sent(reader):
    async def scenario(drv: SerialLinkReader):
        with pytest.raises(ValueError, match=r"1\.\.2000 ms"):
            await drv.beep(0)
        with pytest.raises(ValueError, match="colour"):
            await drv.led("purple", True)
        with pytest.raises(ValueError, match="magstripe, chip or both"):
            await drv.read(magstripe=False, chip=False)

    drive(reader, scenario)
    assert reader.commands_of("B") == [] and reader.commands_of("L") == []


def test_a_lost_reply_is_retried_with_the_same_seq_and_acted_on_once(reader):
    async def scenario(drv: SerialLinkReader):
        await drv.version()
        reader.drop_replies(1)
        await drv.beep(80)
        return drv.link_stats

    stats = drive(reader, scenario, reply_timeout_s=0.2)
    beeps = reader.commands_of("B")
    assert len(beeps) == 2 and beeps[0].seq == beeps[1].seq and beeps[1].repeat
    assert reader.beeps == [80]  # the repeat was answered, not beeped again
    assert stats["retries"] == 1


def test_a_reader_that_answers_neither_try_is_unavailable_then_probed(reader):
    async def scenario(drv: SerialLinkReader):
        await drv.version()
        reader.drop_replies(2)
        with pytest.raises(ReaderUnavailable, match="did not answer the beep command") as info:
            await drv.beep(50)
        await drv.led("blue", True)  # the next command first checks the reader with V
        return str(info.value)

    message = drive(reader, scenario, reply_timeout_s=0.15)
    types = [c.type for c in reader.last_commands]
    assert types[-3:] == ["B", "V", "L"] and types.count("B") == 2
    assert reader.leds["blue"] is True
    assert "2 tries" in message


def test_nak_gives_a_clear_error(reader):
    async def scenario(drv: SerialLinkReader):
        reader.refuse("B", int(lp.NakReason.BUSY))
        with pytest.raises(ReaderRefused, match="refused the beep command: busy"):
            await drv.beep(100)
        reader.refuse("L", int(lp.NakReason.UNKNOWN_COMMAND))
        with pytest.raises(ReaderRefused, match="unknown command"):
            await drv.led("green", True)
        reader.refuse("A", int(lp.NakReason.BUSY))
        with pytest.raises(ReaderRefused, match="refused to arm: busy"):
            await drv.read(timeout_s=2)
        reader.allow()
        await drv.beep(100)  # the link is fine after a NAK

    drive(reader, scenario)
    assert reader.beeps == [100]


# ---- reads -------------------------------------------------------------------------------


def test_swipe_gives_the_card(reader, caplog):
    caplog.set_level(logging.DEBUG)

    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        assert reader.swipe(CARD)
        return await task

    event = drive(reader, scenario)
    assert isinstance(event, MagstripeRead)
    assert (event.track1, event.track2, event.track3) == (CARD.track1, CARD.track2, None)
    card = card_from_swipe(event, today=date(2025, 6, 1), allow_fallback=False)
    assert (card.pan, card.expiry, card.service_code) == (CARD.pan, CARD.expiry, CARD.service_code)
    arm = reader.commands_of("A")[-1]
    assert arm.args == {"magstripe": True, "chip": True, "timeout_s": 5}
    assert CARD.pan not in caplog.text and CARD.track2 not in caplog.text


def test_partial_tracks_and_unreadable_swipes(reader):
    async def scenario(drv: SerialLinkReader):
        results = []
        for statuses in ((2, 0, 1), (2, 2, 2)):
            task = asyncio.create_task(drv.read(magstripe=True, chip=False, timeout_s=5))
            await armed(reader)
            t1 = CARD.track1 if statuses[0] == 0 else None
            t2 = CARD.track2 if statuses[1] == 0 else None
            reader.swipe_raw(t1, t2, None, statuses)
            results.append(await task)
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        reader.read_error(2)
        results.append(await task)
        return results

    partial, unreadable, chip_error = drive(reader, scenario)
    assert isinstance(partial, MagstripeRead) and partial.track1 is None and partial.track2 == CARD.track2
    assert unreadable == ReadFailed("the swipe could not be read on any track")
    assert chip_error == ReadFailed("the chip does not respond")
    assert reader.events_sent == ["M", "E", "E"]


def test_chip_insert_and_remove(reader):
    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(magstripe=False, chip=True, timeout_s=5))
        await armed(reader)
        assert reader.swipe("visa") is False  # armed for chip only: the swipe goes nowhere
        assert reader.insert_chip(DEFAULT_ATR)
        inserted = await task
        task = asyncio.create_task(drv.read(magstripe=False, chip=True, timeout_s=5))
        await armed(reader)
        assert reader.remove_chip()
        return inserted, await task, await drv.status()

    inserted, removed, status = drive(reader, scenario)
    assert inserted == ChipInserted(DEFAULT_ATR)
    assert removed == ChipRemoved()
    assert status == (False, False)


def test_card_already_in_the_slot_and_removal_while_nobody_reads(reader):
    async def scenario(drv: SerialLinkReader):
        await drv.version()
        assert reader.insert_chip() is False  # not armed: reported at the next chip arm
        first = await drv.read(timeout_s=5)
        assert reader.remove_chip() is True  # R goes out unarmed: the terminal was told of the card
        await drv.status()  # its reply follows the R on the wire: the driver has seen the R
        arms_before = len(reader.commands_of("A"))
        second = await drv.read(chip=True, timeout_s=5)  # answered from what the driver learnt
        return first, second, arms_before

    first, second, arms_before = drive(reader, scenario)
    assert isinstance(first, ChipInserted) and second == ChipRemoved()
    assert len(reader.commands_of("A")) == arms_before  # no arm was needed for it


def test_removal_reported_for_an_older_arm_ends_a_pending_chip_read(reader):
    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        reader.insert_chip()
        first = await task
        k_seq = reader.commands_of("A")[-1].seq
        task = asyncio.create_task(drv.read(magstripe=True, chip=False, timeout_s=1))
        await armed(reader)
        # A removal the reader reports for the K's arm (it was not armed for chip):
        reader.send_payload(b"R" + bytes((k_seq,)))
        second = await task
        third = await asyncio.create_task(drv.read(magstripe=False, chip=True, timeout_s=1))
        return first, second, third

    first, second, third = drive(reader, scenario)
    assert isinstance(first, ChipInserted)
    assert second == ReadTimedOut()  # a magstripe-only read does not take chip news...
    assert third == ChipRemoved()  # ...the next chip read gets it at once


def test_removal_for_an_older_arm_wakes_a_pending_chip_read_and_disarms(reader):
    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        reader.insert_chip()
        await task
        k_seq = reader.commands_of("A")[-1].seq
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        reader.send_payload(b"R" + bytes((k_seq,)))  # crossed the new arm on the wire
        removed = await task
        await until(reader, lambda: not reader.armed)
        return removed

    assert drive(reader, scenario) == ChipRemoved()
    assert reader.last_commands[-1].type == "C"


def test_arm_timeout_gives_read_timed_out(reader):
    async def scenario(drv: SerialLinkReader):
        await drv.version()
        started = time.monotonic()
        event = await drv.read(timeout_s=1)
        return event, time.monotonic() - started

    event, took = drive(reader, scenario)
    assert event == ReadTimedOut()
    assert 0.9 <= took < 1.6
    assert reader.commands_of("A")[-1].args["timeout_s"] == 1
    assert reader.events_sent == ["T"] and not reader.armed


def test_cancel_returns_at_once_disarms_and_leaks_nothing(reader):
    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(timeout_s=30))
        await armed(reader)
        old_seq = reader.commands_of("A")[-1].seq
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.perf_counter() - started
        assert await asyncio.to_thread(reader.wait_command, "C")
        await until(reader, lambda: not reader.armed)
        assert reader.swipe("visa") is False  # disarmed: a swipe now goes nowhere
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        # A late event for the cancelled arm (it crossed the cancel), then the real swipe:
        reader.send_payload(b"M" + bytes((old_seq,)) + lp.magstripe_body((None, CARD.track2, None)))
        reader.swipe("mastercard")
        return took, await task, drv.link_stats

    took, event, stats = drive(reader, scenario)
    assert took < 0.1, f"cancel took {took * 1000:.1f} ms"
    assert isinstance(event, MagstripeRead) and event.track2 == TEST_CARDS["mastercard"].track2
    assert stats["stale_events"] == 1
    assert [c.type for c in reader.last_commands] == ["V", "A", "C", "A"]


def test_a_second_read_while_one_is_pending_is_refused(reader):
    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        with pytest.raises(RuntimeError, match="already pending"):
            await drv.read()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    drive(reader, scenario)


# ---- the line ------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder", [posio.FrameDecoder, ref.FrameDecoder], ids=["c", "twin"])
def test_garbage_before_and_between_frames_is_skipped_and_counted(reader, caplog, decoder):
    caplog.set_level(logging.WARNING)
    # "\x02\xf0" is a false start (LEN 240): it holds every frame behind it until the
    # inter-byte gap makes the driver flush it.
    noise = b"\xff\xfe line noise \x00\x02\xf0\x01"

    async def scenario(drv: SerialLinkReader):
        await drv.version()
        reader.send_garbage(noise)  # before a frame
        version = await drv.version()
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        reader.send_garbage(noise)  # between the arm's reply and the event
        reader.swipe(CARD)
        reader.send_garbage(b"\x03\x03\xaa")
        event = await task
        await drv.beep(10)  # still in step after the trailing noise
        return version, event, drv.link_stats

    version, event, stats = drive(reader, scenario, decoder=decoder())
    assert version == "posreader-sim 1.0"
    assert isinstance(event, MagstripeRead) and event.track2 == CARD.track2
    assert stats["noise_bytes"] >= 2 * (len(noise) - 1) and stats["truncated"] == 2
    assert "line errors skipped" in caplog.text and "noise bytes" in caplog.text
    assert "line noise" not in caplog.text and CARD.track2 not in caplog.text


def test_frames_split_across_writes_with_short_pauses_are_reassembled(reader):
    async def scenario(drv: SerialLinkReader):
        reader.set_chunking(8, 0.01)  # 10 ms pauses: well under the 50 ms inter-byte gap
        await drv.version()
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        reader.swipe(CARD)
        return await task, drv.link_stats

    event, stats = drive(reader, scenario)
    assert isinstance(event, MagstripeRead) and event.track1 == CARD.track1
    assert stats["truncated"] == 0 and stats["noise_bytes"] == 0 and stats["retries"] == 0


def test_a_frame_cut_by_a_long_pause_is_dropped_and_the_next_is_fine(reader):
    async def scenario(drv: SerialLinkReader):
        await drv.version()
        reader.split_next((3,), pause_s=0.2)  # the beep's reply: 3 bytes, 200 ms, the rest
        await drv.beep(60)
        return drv.link_stats

    stats = drive(reader, scenario, reply_timeout_s=0.4)
    assert stats["truncated"] >= 1 and stats["retries"] == 1
    assert reader.beeps == [60]


def test_a_malformed_event_ends_the_read_with_a_clear_failure(reader, caplog):
    caplog.set_level(logging.WARNING)

    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(timeout_s=5))
        await armed(reader)
        seq = reader.commands_of("A")[-1].seq
        # Track 2 claims 9 characters but carries 3 of them.
        reader.send_payload(b"M" + bytes((seq,)) + b"\x01\x00\x00\x09123")
        return await task, drv.link_stats

    event, stats = drive(reader, scenario)
    assert isinstance(event, ReadFailed) and "damaged" in event.reason
    assert stats["bad_messages"] == 1
    assert "claims 9 characters" in caplog.text


def test_idle_driver_uses_no_cpu(reader):
    async def scenario(drv: SerialLinkReader):
        await drv.version()
        task = asyncio.create_task(drv.read(timeout_s=30))  # armed and waiting: still idle
        await armed(reader)
        cpu = time.process_time()
        await asyncio.sleep(0.5)
        used = time.process_time() - cpu
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return used

    used = drive(reader, scenario)
    assert used < 0.05, f"{used * 1000:.0f} ms CPU in 500 ms idle"


# ---- hang-ups --------------------------------------------------------------------------------


def test_reader_unplugged_and_back_mid_read_still_completes(reader):
    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(timeout_s=10))
        await armed(reader)
        reader.disconnect()
        await asyncio.sleep(0.3)  # unplugged for a while: the driver's reopen attempts fail
        reader.reconnect()
        await armed(reader, timeout=5)  # re-armed after answering V
        reader.swipe(CARD)
        return await task, drv.link_stats

    event, stats = drive(reader, scenario, reopen_backoff_s=(0.05, 0.2))
    assert isinstance(event, MagstripeRead) and event.track2 == CARD.track2
    assert stats["reconnects"] == 1
    types = [c.type for c in reader.last_commands]
    assert types[-2:] == ["V", "A"]  # after the come-back: probe, then the arm again
    assert reader.commands_of("A")[-1].args["timeout_s"] <= 10


def test_reader_that_never_comes_back_is_unavailable_in_words(reader):
    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(timeout_s=1.5))
        await armed(reader)
        started = time.monotonic()
        reader.disconnect()
        with pytest.raises(ReaderUnavailable) as info:
            await task
        took = time.monotonic() - started
        with pytest.raises(ReaderUnavailable, match="cannot be opened"):
            await drv.version()
        return str(info.value), took

    message, took = drive(reader, scenario, reopen_backoff_s=(0.05, 0.2), reconnect_window_s=0.5)
    assert took < 2.5
    assert "is not available" in message and "reader-tty" in message


def test_a_reader_that_goes_silent_is_probed_reopened_and_reported(reader):
    async def scenario(drv: SerialLinkReader):
        await drv.version()
        reader.drop_replies(1000)  # alive on the line, but every answer is lost
        started = time.monotonic()
        with pytest.raises(ReaderUnavailable) as info:
            await drv.read(timeout_s=1)
        took = time.monotonic() - started
        reader.drop_replies(0)
        version = await drv.version()  # answers again: usable at once
        return str(info.value), took, version

    message, took, version = drive(reader, scenario, reply_timeout_s=0.1, reopen_backoff_s=(0.05, 0.1))
    assert "does not answer" in message and took < 2.0
    assert version == "posreader-sim 1.0"
    types = [c.type for c in reader.last_commands]
    assert types.count("A") == 2 and types.count("V") >= 4  # A twice, then V probes after reopening


def test_hang_up_while_idle_is_noticed_by_the_next_command(reader):
    async def scenario(drv: SerialLinkReader):
        await drv.version()
        reader.disconnect()
        reader.reconnect()
        await drv.beep(30)
        return drv.link_stats

    stats = drive(reader, scenario, reopen_backoff_s=(0.05, 0.2))
    assert reader.beeps == [30] and stats["reconnects"] == 1


def test_missing_device_at_start_is_unavailable(tmp_path):
    async def scenario() -> str:
        drv = SerialLinkReader(str(tmp_path / "no-such-tty"), reconnect_window_s=0.3,
                               reopen_backoff_s=(0.05, 0.1))
        try:
            with pytest.raises(ReaderUnavailable) as info:
                await drv.version()
            return str(info.value)
        finally:
            await drv.close()

    message = asyncio.run(scenario())
    assert "no-such-tty" in message and "cannot be opened" in message


# ---- the decode path, without a port ------------------------------------------------------


@st.composite
def reader_traffic(draw: st.DrawFn) -> list[tuple[bytes, bool]]:
    """What the pump hands _take: reads of link traffic (messages nobody waits for, events
    for no arm, payloads that break the protocol, noise, damaged and cut frames), each with
    whether the inter-byte gap ended it (then often with no bytes, as when a read times out)."""
    parts = []
    for _ in range(draw(st.integers(0, 14))):
        kind = draw(st.sampled_from(["reply", "event", "bad", "noise", "flip", "cut"]))
        seq = draw(st.integers(0, 255))
        body = draw(st.binary(max_size=30) | st.binary(min_size=200, max_size=lp.BODY_MAX))
        letter = draw(st.sampled_from(sorted(lp.EVENTS)) if kind == "event" else st.sampled_from("vabsxn"))
        frame = lp.encode(letter, seq, body)
        if kind == "bad":  # a good frame whose payload is not a message
            frame = posio.encode_frame(draw(st.binary(max_size=3)))
        elif kind == "noise":
            frame = draw(st.binary(min_size=1, max_size=20))
        elif kind == "flip":
            i = draw(st.integers(0, len(frame) - 1))
            frame = frame[:i] + bytes([frame[i] ^ draw(st.integers(1, 255))]) + frame[i + 1 :]
        elif kind == "cut":
            frame = frame[: draw(st.integers(1, len(frame) - 1))]
        parts.append(frame)
    stream = b"".join(parts)
    cuts = sorted(set(draw(st.lists(st.integers(0, len(stream)), max_size=12))))
    reads = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        gap = draw(st.booleans())
        reads.append((stream[start:end], gap))
        if gap and draw(st.booleans()):
            reads.append((b"", True))
    return reads


def _fed(decoder: posio.LinkDecoder) -> tuple[SerialLinkReader, list[bytes]]:
    """A driver (never opened) on decoder, and the list of payloads its _dispatch acts on."""
    drv = SerialLinkReader("/dev/null/not-opened", decoder=decoder)
    seen: list[bytes] = []
    dispatch = drv._dispatch

    def spy(records: bytes, start: int, end: int) -> None:
        seen.append(records[start:end])
        dispatch(records, start, end)

    drv._dispatch = spy  # type: ignore[method-assign]
    return drv, seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reader_traffic())
def test_driver_decodes_reads_as_feed_and_flush_did_with_c_and_twin(reads):
    """The driver's read path (_take: records, flush at a gap, line-error stats, dispatch)
    acts on exactly the payloads FrameDecoder.feed()/flush() give, in order, and counts the
    same, with the C decoder and with the twin."""
    c_dec, py_dec, plain = posio.FrameDecoder(), ref.FrameDecoder(), posio.FrameDecoder()
    c_drv, c_seen = _fed(c_dec)
    py_drv, py_seen = _fed(py_dec)
    want: list[bytes] = []
    try:
        for data, gap in reads:
            for drv in (c_drv, py_drv):
                drv._take(data, gap_ended=gap and not data)
            # What the driver did before the records form (feed, then flush at a gap).
            want += plain.feed(data) if data else []
            if gap and not data and plain.buffered:
                want += plain.flush()
            assert c_seen == py_seen == want
            assert c_dec.frames == py_dec.frames == len(want)  # each driver used its own
            assert c_drv.link_stats == py_drv.link_stats
            assert {k: c_drv.link_stats[k] for k in plain.errors} == plain.errors
    finally:
        asyncio.run(c_drv.close())
        asyncio.run(py_drv.close())


def test_driver_counts_what_its_dispatch_found(caplog):
    """One read with a reply nobody waits for, an event for no arm, a payload that is no
    message, noise and a frame the gap cut short: each lands in its own count."""
    caplog.set_level(logging.WARNING)
    drv, seen = _fed(posio.FrameDecoder())
    read = (b"\xff" + lp.encode("v", 7, b"1.0") + lp.encode("M", 9) + posio.encode_frame(b"?")
            + lp.encode("b", 1, b"xyz")[:5])
    try:
        drv._take(read, gap_ended=False)
        assert seen == [b"v\x071.0", b"M\x09", b"?"]
        drv._take(b"", gap_ended=True)
    finally:
        asyncio.run(drv.close())
    stats = drv.link_stats
    assert (stats["stray_replies"], stats["stale_events"], stats["bad_messages"]) == (1, 1, 1)
    assert stats["noise_bytes"] == 1 + 4 and stats["truncated"] == 1
    assert caplog.text.count("line errors skipped") == 2


_MESSAGES = st.builds(lambda letter, seq, body: letter.encode() + bytes((seq,)) + body,
                      st.sampled_from("AMTvxn"), st.integers(0, 255), st.binary(max_size=30))


@given(st.binary(max_size=8), _MESSAGES | st.binary(max_size=4), st.binary(max_size=8))
def test_parse_within_bounds_is_parse_of_the_slice(before, payload, after):
    buf, start = before + payload + after, len(before)
    end = start + len(payload)
    try:
        want: lp.Message | str = lp.parse(payload)
    except lp.LinkError as exc:
        want = str(exc)
    try:
        got: lp.Message | str = lp.parse(buf, start, end)
    except lp.LinkError as exc:
        got = str(exc)
    assert got == want
    if isinstance(got, lp.Message):
        assert got.body == payload[2:] and type(got.body) is bytes


# ---- the emulated reader on its own ----------------------------------------------------------


class RawTerminal:
    """The terminal's side of the pty without the driver: exact frames in and out."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.decoder = posio.FrameDecoder()
        self.pending: list[bytes] = []

    def send(self, data: bytes) -> None:
        posio.write_all(self.fd, data, 256, 500)

    def command(self, cmd: str, seq: int, body: bytes = b"") -> lp.Message:
        self.send(lp.encode(cmd, seq, body))
        return self.next()

    def next(self, timeout_ms: int = 1000) -> lp.Message:
        deadline = time.monotonic() + timeout_ms / 1000
        while not self.pending:
            left = int((deadline - time.monotonic()) * 1000)
            assert left > 0, "no frame from the reader"
            self.pending += self.decoder.feed(posio.read_until(self.fd, 512, 0, left))
        return lp.parse(self.pending.pop(0))

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def raw(reader):
    term = RawTerminal(reader.device_path)
    yield term
    term.close()


def test_emulator_answers_exactly_as_the_protocol_says(reader, raw):
    assert raw.command("V", 1) == lp.Message("v", 1, b"posreader-sim 1.0")
    assert raw.command("Z", 2) == lp.Message("n", 2, bytes((lp.NakReason.UNKNOWN_COMMAND,)))
    assert raw.command("B", 3, b"\x00") == lp.Message("n", 3, bytes((lp.NakReason.BAD_BODY,)))
    assert raw.command("B", 4, b"\x07\xd1") == lp.Message("n", 4, bytes((lp.NakReason.BAD_BODY,)))
    assert raw.command("A", 5, b"\x00\x00\x05") == lp.Message("n", 5, bytes((lp.NakReason.BAD_BODY,)))
    assert raw.command("L", 6, b"\x04\x01") == lp.Message("n", 6, bytes((lp.NakReason.BAD_BODY,)))
    assert raw.command("S", 7) == lp.Message("s", 7, b"\x00")
    # The doc's worked example, byte for byte: arm seq 7 for both, 60 s.
    raw.send(bytes.fromhex("0205410703003C037F"))
    assert posio.read_until(raw.fd, 64, 20, 1000) == bytes.fromhex("020261070367")
    assert reader.armed and reader.arm_flags == (True, True)
    assert raw.command("S", 8) == lp.Message("s", 8, b"\x01")
    # ...and the example's swipe: track 1 blank, track 2 read (37 characters), track 3 blank.
    assert len(CARD.track2) == 37
    reader.swipe((None, CARD.track2, None))
    frame = posio.read_until(raw.fd, 128, 20, 1000)
    assert frame[:8] == bytes.fromhex("022D4D0701000025") and frame[8:45] == CARD.track2.encode()
    assert frame[45:48] == bytes.fromhex("010003") and frame[48] == posio.lrc(frame[1:48])
    assert len(frame) == 49 and not reader.armed


def test_emulator_replays_a_repeated_seq_without_acting_twice(reader, raw):
    assert raw.command("B", 9, b"\x00\x64") == lp.Message("b", 9)
    assert raw.command("B", 9, b"\x00\x64") == lp.Message("b", 9)
    assert reader.beeps == [100]
    assert raw.command("B", 10, b"\x00\x64") == lp.Message("b", 10)  # a new SEQ acts again
    assert reader.beeps == [100, 100]


def test_emulator_drops_frames_without_type_and_seq_and_survives_noise(reader, raw):
    raw.send(posio.encode_frame(b"V"))  # one byte: no SEQ to answer with
    raw.send(b"\xff\x02\x09garbage")
    assert raw.command("V", 11).type == "v"
    assert reader.bad_payloads == 1


def test_emulator_events_carry_the_arm_seq_and_end_the_arm(reader, raw):
    assert raw.command("A", 20, lp.arm_body(True, False, 0)).type == "a"
    assert raw.command("A", 21, lp.arm_body(False, True, 0)).type == "a"  # replaces the first arm
    reader.insert_chip(b"\x3b\x00")
    assert raw.next() == lp.Message("K", 21, b"\x3b\x00")
    assert not reader.armed
    reader.remove_chip()  # unarmed, but the terminal knows the card: R with the K's SEQ
    assert raw.next() == lp.Message("R", 21)
    assert raw.command("A", 22, lp.arm_body(True, False, 1)).type == "a"
    assert raw.next(2000) == lp.Message("T", 22)
    assert raw.command("C", 23) == lp.Message("c", 23)  # cancel when idle is still answered


def test_emulator_reports_a_k_again_when_it_crossed_a_cancel(reader, raw):
    reader.insert_chip(b"\x3b\x01")
    assert raw.command("A", 30, lp.arm_body(False, True, 0)).type == "a"
    assert raw.next() == lp.Message("K", 30, b"\x3b\x01")  # card already in: reported at once
    assert raw.command("C", 31).type == "c"  # the terminal had given up on arm 30
    assert raw.command("A", 32, lp.arm_body(False, True, 0)).type == "a"
    assert raw.next() == lp.Message("K", 32, b"\x3b\x01")


def test_control_interface_takes_json_like_requests(reader, raw):
    assert reader.control("swipe", card="cup_debit") == {
        "ok": True, "delivered": False, "note": "the reader is not armed for magstripe: nothing was sent"}
    assert raw.command("A", 40, lp.arm_body(True, True, 0)).type == "a"
    assert reader.control("swipe", card="cup_debit") == {"ok": True, "delivered": True}
    msg = raw.next()
    assert msg.type == "M" and lp.parse_magstripe(msg.body)[1].track2 == CARD.track2
    status = reader.control("status")
    assert status["ok"] and status["armed"] is False and status["version"] == "posreader-sim 1.0"
    assert reader.control("insert_chip", atr="3B00")["ok"]
    assert reader.control("insert_chip") == {"ok": False, "error": "a card is already in the chip slot: "
                                             "remove it first"}
    assert reader.control("swipe", card="nope")["error"].startswith("no test card named 'nope'")
    assert reader.control("fly")["error"].startswith("unknown reader command 'fly'")
    assert "bad arguments" in reader.control("swipe", colour="red")["error"]
    assert reader.control("insert_chip", atr="zz")["ok"] is False
    assert reader.control("read_error", code=9)["error"] == "read error code must be 1, 2 or 3, got 9"
    assert reader.control("garbage", hex="FF00")["sent"] == 2
    commands = reader.control("commands", last=1)["commands"]
    assert commands == [{"type": "A", "seq": 40, "args": {"magstripe": True, "chip": True, "timeout_s": 0},
                         "repeat": False}]
    assert reader.control("disconnect") == {"ok": True}
    assert not reader.device_path.exists()
    assert reader.control("disconnect")["error"] == "the reader is already disconnected"
    assert reader.control("reconnect")["ok"] and reader.device_path.exists()


def test_a_noisy_line_is_logged_once_a_second_and_counted_exactly(caplog):
    """Fifty reads in a row each carrying a noise byte and a good frame: the warning is written
    once (not fifty times: a noisy line must not flood the log), and the counters read after
    them hold all fifty bytes."""
    caplog.set_level(logging.WARNING)
    drv, seen = _fed(posio.FrameDecoder())
    try:
        for k in range(50):
            drv._take(b"\xff" + lp.encode("M", k % 200), gap_ended=False)
        assert len(seen) == 50
        assert caplog.text.count("line errors skipped") == 1
        assert drv.link_stats["noise_bytes"] == 50
        assert caplog.text.count("line errors skipped") == 2  # reading them logged the rest
    finally:
        asyncio.run(drv.close())
