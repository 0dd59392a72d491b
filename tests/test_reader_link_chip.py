"""The chip session over the serial reader link (docs/reader-link.md, "Chip commands"): the
driver (drivers/reader/serial_link.py) against the emulated reader (board/sim/reader.py) over
real pseudo-terminals, with a tiny card app in the slot: power on and ATR, APDU round trips
(long ones in parts), removal mid-exchange, a mute card, lost and late replies, garbage on the
line, a transmit with no card, cancel, the busy rule, and a reader that goes away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pyemv import tlv

from board.sim.reader import EmulatedReader, make_chip_card
from drivers.reader import ReaderRefused
from drivers.reader import link_protocol as lp
from drivers.reader.serial_link import SerialLinkReader
from firmware.ports import ChipGone, ChipInserted, ChipRemoved, ReaderUnavailable
from tests.test_reader_link import RawTerminal

T = TypeVar("T")

SELECT_PSE = bytes.fromhex("00A404000E315041592E5359532E444446303100")
GEN_AC = bytes.fromhex("80AE80001D") + bytes(29) + b"\x00"
READ_LONG = bytes.fromhex("00B2010C00")  # the tiny card answers 256 data bytes
SW_OK = b"\x90\x00"


class TinyCard:
    """A ChipCardApp small enough to read: SELECT answers an FCI, GENERATE AC counts (an ATC
    that shows whether a command ran twice), READ RECORD answers 256 bytes, PUT DATA answers
    the length of what it got; everything else 6D00."""

    atr = bytes.fromhex("3B021450")

    def __init__(self) -> None:
        self.atc = 0
        self.power_ups = 0
        self.power_downs = 0
        self.commands: list[bytes] = []

    def power_up(self) -> bytes:
        self.power_ups += 1
        return self.atr

    def power_down(self) -> None:
        self.power_downs += 1

    def apdu(self, command: bytes) -> bytes:
        self.commands.append(command)
        ins = command[1]
        if ins == 0xA4:
            return bytes.fromhex("6F0A840E") + command[5:5 + 6] + SW_OK
        if ins == 0xAE:
            self.atc += 1
            return bytes.fromhex("9F3602") + self.atc.to_bytes(2, "big") + SW_OK
        if ins == 0xB2:
            return bytes(i & 0xFF for i in range(256)) + SW_OK
        if ins == 0xDA:
            return len(command).to_bytes(2, "big") + SW_OK
        return b"\x6d\x00"


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[EmulatedReader]:
    em = EmulatedReader(link_dir=tmp_path, card_time_s=1.0).start()
    yield em
    em.stop()


@pytest.fixture
def raw(reader: EmulatedReader) -> Iterator[RawTerminal]:
    link = RawTerminal(reader.device_path)
    yield link
    link.close()


def drive(em: EmulatedReader, scenario: Callable[[SerialLinkReader], Awaitable[T]], **options: Any) -> T:
    async def main() -> T:
        driver = SerialLinkReader(str(em.device_path), **options)
        try:
            return await scenario(driver)
        finally:
            await driver.close()

    return asyncio.run(main())


async def until(em: EmulatedReader, predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    assert await asyncio.to_thread(em.wait_until, predicate, timeout), "condition not reached"


async def inserted(drv: SerialLinkReader, em: EmulatedReader, card: TinyCard) -> None:
    """The card goes in while the driver reads for chip, as in a sale."""
    task = asyncio.create_task(drv.read(magstripe=False, chip=True, timeout_s=5))
    await until(em, lambda: em.armed)
    assert em.insert_chip(card)
    assert await task == ChipInserted(TinyCard.atr)


# ---- power on, round trips ---------------------------------------------------------------


def test_power_on_returns_the_atr_and_status_shows_the_session(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        atr = await drv.power_on()
        flags = lp.parse_status_flags((await drv._command(lp.STATUS)).body)
        present = await drv.chip_present()
        await drv.power_off()
        return atr, flags, present, reader.chip_powered

    atr, flags, present, powered_after = drive(reader, scenario)
    assert atr == TinyCard.atr and card.power_ups == 1
    assert flags == (False, True, True)  # not armed, card in, powered
    assert present is True
    assert powered_after is False and card.power_downs == 1


def test_apdu_round_trip_powers_the_card_once(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        first = await drv.transmit(SELECT_PSE)
        second = await drv.transmit(GEN_AC)
        return first, second

    first, second = drive(reader, scenario)
    assert first == bytes.fromhex("6F0A840E") + SELECT_PSE[5:11] + SW_OK
    assert second == bytes.fromhex("9F36020001") + SW_OK
    assert card.power_ups == 1  # P once, at the session's first APDU
    assert card.commands == [SELECT_PSE, GEN_AC]
    assert [c.type for c in reader.last_commands if c.type in "PXO"] == ["P", "X", "X"]
    # Only the instruction and length are recorded, never the APDU's bytes.
    assert reader.commands_of("X")[1].args == {"ins": 0xAE, "length": len(GEN_AC)}


def test_long_response_and_long_command_travel_in_parts(reader):
    card = TinyCard()
    long_command = bytes.fromhex("80DA9F4FFF") + bytes(range(255)) + b"\x00"  # 261 bytes

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        return await drv.transmit(READ_LONG), await drv.transmit(long_command)

    record, echoed = drive(reader, scenario)
    assert record == bytes(i & 0xFF for i in range(256)) + SW_OK  # 258 bytes: x, then G
    assert len(reader.commands_of("G")) == 1
    assert card.commands[-1] == long_command  # W then X, reassembled
    assert echoed == (261).to_bytes(2, "big") + SW_OK
    assert [c.args["offset"] for c in reader.commands_of("W")] == [0]


def test_bad_apdu_lengths_are_refused_before_anything_is_sent(reader):
    async def scenario(drv: SerialLinkReader):
        for apdu in (b"\x00\xa4\x04", bytes(262)):
            with pytest.raises(ValueError, match=r"4\.\.261 bytes"):
                await drv.transmit(apdu)

    drive(reader, scenario)
    assert reader.commands_of("P") == [] and reader.commands_of("X") == []


# ---- the card goes away ---------------------------------------------------------------------


def test_removal_mid_exchange_is_chip_gone_at_once_and_stays_gone(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.transmit(SELECT_PSE)
        reader.set_card_delay(5.0)  # the card takes its time over GENERATE AC...
        task = asyncio.create_task(drv.transmit(GEN_AC, timeout_s=8.0))
        await until(reader, lambda: reader.exchanging)
        started = time.monotonic()
        assert reader.remove_chip()  # ...and is pulled meanwhile
        with pytest.raises(ChipGone, match="removed during an exchange"):
            await task
        took = time.monotonic() - started
        xs_before = len(reader.commands_of("X"))
        with pytest.raises(ChipGone, match="removed"):
            await drv.transmit(GEN_AC)  # the session is over: not even sent
        return took, xs_before, await drv.read(chip=True, timeout_s=5)

    took, xs_before, event = drive(reader, scenario)
    assert took < 1.0
    assert len(reader.commands_of("X")) == xs_before
    assert card.atc == 0  # the card never got the GENERATE AC
    assert event == ChipRemoved()  # the unarmed R reached the driver too


def test_removal_between_exchanges_ends_the_session(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.transmit(SELECT_PSE)
        assert reader.remove_chip()  # R goes out unarmed, for the K's arm
        await drv.status()  # its reply follows the R: the driver has seen it
        with pytest.raises(ChipGone, match="removed"):
            await drv.transmit(GEN_AC)

    drive(reader, scenario)
    assert card.atc == 0


def test_mute_card_is_chip_gone_within_the_card_time(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.transmit(SELECT_PSE)
        reader.set_card_mute(True)
        started = time.monotonic()
        with pytest.raises(ChipGone, match="does not respond"):
            await drv.transmit(GEN_AC, timeout_s=5.0)
        return time.monotonic() - started

    took = drive(reader, scenario)
    assert 0.9 <= took < 2.0  # the reader's card time (1 s here), not the driver's 5 s
    assert not reader.chip_powered  # the reader deactivated the mute card


def test_transmit_with_no_card_is_chip_gone_then_a_new_card_works(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        started = time.monotonic()
        with pytest.raises(ChipGone, match="no card in the chip slot"):
            await drv.transmit(SELECT_PSE)
        took = time.monotonic() - started
        await inserted(drv, reader, card)  # a new card: a new session
        return took, await drv.transmit(SELECT_PSE)

    took, answer = drive(reader, scenario)
    assert took < 1.0
    assert answer.endswith(SW_OK) and card.power_ups == 1


# ---- lost, late and damaged replies ------------------------------------------------------------


def test_a_lost_exchange_reply_is_replayed_never_run_twice(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.transmit(SELECT_PSE)
        reader.drop_replies(1)
        return await drv.transmit(GEN_AC), drv.link_stats

    answer, stats = drive(reader, scenario, reply_timeout_s=0.3)
    assert answer == bytes.fromhex("9F36020001") + SW_OK
    xs = reader.commands_of("X")
    assert xs[-1].repeat and xs[-1].seq == xs[-2].seq
    assert card.atc == 1 and stats["retries"] == 1


def test_a_slow_card_gets_one_resend_which_the_reader_does_not_act_on(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.transmit(SELECT_PSE)
        reader.set_card_delay(0.8)  # longer than the 300 ms reply timeout
        started = time.monotonic()
        answer = await drv.transmit(GEN_AC)
        return answer, time.monotonic() - started

    answer, took = drive(reader, scenario, reply_timeout_s=0.3)
    assert answer == bytes.fromhex("9F36020001") + SW_OK
    assert 0.7 <= took < 1.5
    assert card.atc == 1 and reader.commands_of("X")[-1].repeat


def test_garbage_and_split_replies_do_not_disturb_an_exchange(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        reader.send_garbage(b"\xff\x02\x09junk\x02\xfb")
        reader.split_next((3, 9), 0.01)  # the `p` in three pieces
        reader.set_chunking(7, 0.0)
        answer = await drv.transmit(READ_LONG)
        reader.set_chunking(None)
        return answer, drv.link_stats

    answer, stats = drive(reader, scenario)
    assert answer == bytes(i & 0xFF for i in range(256)) + SW_OK
    assert stats["noise_bytes"] > 0


def test_a_damaged_chip_reply_ends_the_session_in_words(reader, monkeypatch):
    """A well-framed `x` that breaks the rules (a length its bytes do not match): the driver
    cannot trust the card's answer, so the session is over; a NAK is the reader's refusal
    (the card got nothing), in words, and the session goes on."""
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.power_on()
        reader.refuse("X", 2)
        with pytest.raises(ReaderRefused, match="bad body"):
            await drv.transmit(SELECT_PSE)
        reader.allow()
        assert (await drv.transmit(SELECT_PSE)).endswith(SW_OK)
        # The emulated reader's encoder, broken on purpose: length 9, three bytes.
        monkeypatch.setattr(lp, "exchange_reply_body", lambda rapdu: b"\x00\x00\x09" + rapdu[:3])
        with pytest.raises(ChipGone, match="damaged chip reply"):
            await drv.transmit(GEN_AC)
        with pytest.raises(ChipGone, match="damaged chip reply"):
            await drv.transmit(GEN_AC)  # over: not sent again
        return drv.link_stats

    stats = drive(reader, scenario)
    assert stats["bad_messages"] == 1 and card.atc == 1
    with pytest.raises(lp.LinkError, match="carries 3 response bytes of 9"):
        lp.parse_chip_reply(b"\x00\x00\x09\x6f\x00\x90", exchange=True)
    with pytest.raises(lp.LinkError, match="chip status 9"):
        lp.parse_chip_reply(b"\x09", exchange=False)


# ---- cancel, busy, a reader that goes away ---------------------------------------------------


def test_cancel_returns_at_once_and_the_next_apdu_waits_for_the_abandoned_reply(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.transmit(SELECT_PSE)
        reader.set_card_delay(0.6)
        task = asyncio.create_task(drv.transmit(GEN_AC))
        await until(reader, lambda: reader.exchanging)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.monotonic() - started
        reader.set_card_delay(0.0)
        # Sent while the card still works on the cancelled one: waits, is not NAKed busy.
        answer = await drv.transmit(GEN_AC)
        return took, answer, drv.link_stats

    took, answer, stats = drive(reader, scenario)
    assert took < 0.2
    assert answer == bytes.fromhex("9F36020002") + SW_OK  # the cancelled GEN AC ran on the card
    assert card.atc == 2 and stats["stray_replies"] == 1
    assert not any(c.args.get("busy") for c in reader.last_commands)


def test_arming_while_the_chip_is_powered_is_refused_in_words(reader, raw):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.transmit(SELECT_PSE)
        arms = len(reader.commands_of("A"))
        with pytest.raises(ReaderRefused, match="power_off"):
            await drv.read(chip=True, timeout_s=1)
        assert len(reader.commands_of("A")) == arms  # refused before anything was sent
        await drv.power_off()
        task = asyncio.create_task(drv.read(chip=True, timeout_s=5))
        await until(reader, lambda: reader.armed)
        reader.remove_chip()
        return await task

    assert drive(reader, scenario) == ChipRemoved()
    # The reader's own rule, on the raw link: A while powered is NAK 3 (busy).
    reader.insert_chip(TinyCard())
    assert raw.command("P", 1).body[:1] == b"\x00"
    assert raw.command("A", 2, lp.arm_body(True, True, 0)) == lp.Message("n", 2, b"\x03")
    assert raw.command("O", 3) == lp.Message("o", 3)
    assert raw.command("A", 4, lp.arm_body(True, False, 0)).type == "a"


def test_the_reader_going_away_mid_exchange_is_unavailable_and_loses_the_session(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.transmit(SELECT_PSE)
        reader.set_card_delay(5.0)
        task = asyncio.create_task(drv.transmit(GEN_AC))
        await until(reader, lambda: reader.exchanging)
        reader.disconnect()
        with pytest.raises(ReaderUnavailable, match="hung up"):
            await task
        reader.reconnect()
        reader.set_card_delay(0.0)
        with pytest.raises(ChipGone, match="link was lost"):
            await drv.transmit(GEN_AC)  # the reader powered up idle: no session to go on with
        await drv.power_off()
        return await drv.transmit(SELECT_PSE)  # a new session on the same card

    assert drive(reader, scenario).endswith(SW_OK)
    assert card.atc == 0 and card.power_ups == 2


# ---- the emulator on the raw link ------------------------------------------------------------


def test_emulator_chip_commands_on_the_raw_link(reader, raw):
    assert raw.command("P", 1) == lp.Message("p", 1, b"\x01" + b"no card in the chip slot")
    reader.insert_chip(TinyCard())
    assert raw.command("X", 2, b"\x00\x00" + SELECT_PSE).body[:1] == bytes([lp.ChipStatus.NOT_POWERED])
    assert raw.command("P", 3) == lp.Message("p", 3, b"\x00" + TinyCard.atr)
    bad = [(b"W", b"\x00\x05\x00"), (b"X", b"\x00\x00\x00\xa4"), (b"X", b"\x00"),
           (b"G", b"\x00\x00"), (b"P", b"\x00"), (b"O", b"x")]
    for seq, (kind, body) in enumerate(bad, start=10):
        assert raw.command(kind.decode(), seq, body) == lp.Message("n", seq, b"\x02"), (kind, body)
    reply = raw.command("X", 20, b"\x00\x00" + READ_LONG)
    parsed = lp.parse_chip_reply(reply.body, exchange=True)
    assert parsed.total == 258 and len(parsed.data) == lp.FIRST_RESPONSE_MAX
    # A repeated X (same SEQ, same bytes, right after it) is answered again, not run again.
    assert raw.command("X", 20, b"\x00\x00" + READ_LONG) == reply
    assert reader.apdus_seen == [(0xB2, len(READ_LONG))]
    assert raw.command("G", 21, (245).to_bytes(2, "big")).body == bytes(range(245, 256)) + SW_OK
    assert reader.control("card_delay", seconds=0.5) == {"ok": True}
    raw.send(lp.encode("X", 22, b"\x00\x00" + GEN_AC))
    assert raw.command("O", 23) == lp.Message("n", 23, b"\x03")  # busy: the card is working
    assert raw.next(2000).type == "x"
    assert reader.control("card_mute")["ok"] and reader.control("card_delay", seconds=-1)["ok"] is False
    assert reader.control("insert_chip", card="nope")["ok"] is False


def test_the_reader_going_away_between_exchanges_loses_the_session(reader):
    card = TinyCard()

    async def scenario(drv: SerialLinkReader):
        await inserted(drv, reader, card)
        await drv.transmit(SELECT_PSE)
        reader.disconnect()
        reader.reconnect()
        # The driver has seen the hang-up and is back: under load its first reopen may still
        # meet the old hang-up ("keeps hanging up"); it answers once the new link is up.
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                await drv.version()
                break
            except ReaderUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "the driver never came back"
                await asyncio.sleep(0.1)
        with pytest.raises(ChipGone, match="link was lost"):
            await drv.transmit(GEN_AC)  # never sent to a card the reader powered down

    drive(reader, scenario)
    assert card.atc == 0


def test_a_reader_without_a_chip_slot_is_chip_gone_no_chip_slot(reader, monkeypatch):
    """What the RP2040 reader of board/pico answers (chip status 5, tests/test_pico.py), through
    the driver: ChipGone("no chip slot ..."), as firmware.ports.CardReader asks."""
    real = lp.chip_error_body
    monkeypatch.setattr(lp, "chip_error_body", lambda status, text="": real(lp.ChipStatus.NO_CHIP_SLOT))

    async def scenario(drv: SerialLinkReader):
        with pytest.raises(ChipGone, match=r"^no chip slot"):
            await drv.transmit(SELECT_PSE)
        await drv.power_off()

    drive(reader, scenario)


# ---- the test chip card of board.sim.chipcards -------------------------------------------------


def _afl_reads(gpo_response: bytes) -> list[bytes]:
    """READ RECORD commands for the AFL (94) of a format 2 GPO response."""
    afl = tlv.decode(gpo_response[:-2])["77"]["94"]
    reads = []
    for i in range(0, len(afl), 4):
        sfi, first, last = afl[i] >> 3, afl[i + 1], afl[i + 2]
        reads += [bytes((0x00, 0xB2, rec, (sfi << 3) | 4, 0x00)) for rec in range(first, last + 1)]
    return reads


def test_the_default_chip_card_through_the_console_controls(reader):
    """The dev console's `i` and `r` hot keys send insert_chip / remove_chip with no arguments:
    the default card, cup-debit, goes in and answers a real EMV start (SELECT, GPO, the records
    of its AFL) byte for byte as the card itself does."""
    select_aid = bytes.fromhex("00A4040008A00000033301010100")
    pdol_data = bytes.fromhex("0156") + bytes.fromhex("000000001234") + bytes.fromhex("11223344")
    gpo = bytes.fromhex("80A80000") + bytes((len(pdol_data) + 2, 0x83, len(pdol_data))) + pdol_data + b"\x00"
    twin = make_chip_card("cup-debit")  # the card the brief names, asked directly
    twin.power_up()

    async def scenario(drv: SerialLinkReader):
        task = asyncio.create_task(drv.read(magstripe=True, chip=True, timeout_s=5))
        await until(reader, lambda: reader.armed)
        assert reader.control("insert_chip") == {"ok": True, "delivered": True}  # the `i` key
        event = await task
        answers = [await drv.transmit(apdu) for apdu in (SELECT_PSE, select_aid, gpo)]
        reads = _afl_reads(answers[-1])
        answers += [await drv.transmit(apdu) for apdu in reads]
        await drv.power_off()
        task = asyncio.create_task(drv.read(magstripe=False, chip=True, timeout_s=5))
        await until(reader, lambda: reader.armed)
        assert reader.control("remove_chip") == {"ok": True, "delivered": True}  # the `r` key
        return event, [SELECT_PSE, select_aid, gpo, *reads], answers, await task

    event, apdus, answers, removed = drive(reader, scenario)
    assert event == ChipInserted(twin.atr)
    assert all(a.endswith(SW_OK) for a in answers)
    assert answers == [twin.apdu(apdu) for apdu in apdus]
    assert removed == ChipRemoved()
