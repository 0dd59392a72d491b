"""drivers/reader/pcsc.py against a real pcscd with vsmartcard's vpcd reader and the virtual
card of board/sim/vpcd.py (tests/pcsckit.py): insertion and its ATR, an APDU round trip with a
test chip card, T=0's 61xx / 6Cxx handled in the driver, T=1 passed as is, removal mid-exchange,
a cancelled read, and pcscd absent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pcsckit import HANG, T0_ATR, PcscRig, T0App, T1App, pcsc_rig

from board.sim.chipcard import ATR as EMV_ATR
from drivers.reader.pcsc import PcscReader
from firmware.ports import ChipGone, ChipInserted, ChipRemoved, ReaderUnavailable, ReadTimedOut

SELECT_PSE = bytes.fromhex("00A404000E315041592E5359532E444446303100")
WAIT_S = 15.0  # every wait below is bounded by this


@pytest.fixture
def pcsc(tmp_path: Path) -> Iterator[PcscRig]:
    yield from pcsc_rig(tmp_path)


async def _inserted(reader: PcscReader) -> ChipInserted:
    event = await reader.read(chip=True, timeout_s=WAIT_S)
    assert isinstance(event, ChipInserted), event
    return event


def test_insert_reports_the_atr_and_an_apdu_round_trips(pcsc: PcscRig) -> None:
    pcsc.start_card("cup-debit")

    async def run() -> None:
        reader = PcscReader("Virtual PCD")
        try:
            assert "POS Virtual PCD" in await reader.version()
            event = await _inserted(reader)
            assert event.atr == EMV_ATR
            assert await reader.chip_present()
            fci = await reader.transmit(SELECT_PSE)
            assert fci[-2:] == b"\x90\x00" and fci[0] == 0x6F, fci.hex()
            assert b"1PAY.SYS.DDF01" in fci
        finally:
            await reader.close()

    asyncio.run(run())


def test_t0_61xx_and_6cxx_are_handled_by_the_driver(pcsc: PcscRig) -> None:
    pcsc.start_card("t0", factory="pcsckit:make_test_app")

    async def run() -> None:
        reader = PcscReader("POS Virtual PCD")
        try:
            assert (await _inserted(reader)).atr == T0_ATR
            # SELECT answers 61 0C: the driver fetches the FCI with GET RESPONSE.
            assert await reader.transmit(bytes.fromhex("00A4040007A000000333010100")) == (
                T0App.FCI + b"\x90\x00")
            # GET DATA ATC with Le 00 answers 6C 02: resent with Le 02.
            assert await reader.transmit(bytes.fromhex("80CA9F3600")) == b"\x00\x07\x90\x00"
            echo = bytes.fromhex("80EE000003ABCDEF")
            assert await reader.transmit(echo) == bytes.fromhex("ABCDEF9000")
        finally:
            await reader.close()

    asyncio.run(run())


def test_t1_answers_pass_as_they_are(pcsc: PcscRig) -> None:
    pcsc.start_card("t1", factory="pcsckit:make_test_app")

    async def run() -> None:
        reader = PcscReader("POS Virtual PCD")
        try:
            assert (await _inserted(reader)).atr == T1App.atr
            # Under T=1 a 61xx is the card's own answer: no GET RESPONSE behind the caller.
            select = await reader.transmit(bytes.fromhex("00A4040007A000000333010100"))
            assert select == bytes([0x61, len(T0App.FCI)])
        finally:
            await reader.close()

    asyncio.run(run())


def test_removal_mid_exchange_is_chip_gone_then_chip_removed(pcsc: PcscRig) -> None:
    pcsc.start_card("t0", factory="pcsckit:make_test_app")

    async def run() -> None:
        reader = PcscReader("POS Virtual PCD")
        try:
            await _inserted(reader)
            exchange = asyncio.ensure_future(reader.transmit(HANG, timeout_s=WAIT_S))
            deadline = time.monotonic() + WAIT_S
            while "busy" not in await asyncio.to_thread(pcsc.ctl, "status"):
                assert time.monotonic() < deadline, "the hanging APDU never reached the card"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(pcsc.ctl, "remove")
            with pytest.raises(ChipGone, match="removed"):
                await asyncio.wait_for(exchange, WAIT_S)
            assert isinstance(await reader.read(chip=True, timeout_s=WAIT_S), ChipRemoved)
            assert not await reader.chip_present()
            with pytest.raises(ChipGone):
                await reader.transmit(bytes.fromhex("80EE000001AA"))
            # Put back in: reported again, and it answers.
            await asyncio.to_thread(pcsc.ctl, "insert")
            await _inserted(reader)
            assert await reader.transmit(bytes.fromhex("80EE000001AA")) == b"\xaa\x90\x00"
        finally:
            await reader.close()

    asyncio.run(run())


def test_a_cancelled_read_returns_at_once_and_the_next_one_works(pcsc: PcscRig) -> None:
    pcsc.start_card("cup-credit", inserted=False)

    async def run() -> None:
        reader = PcscReader("POS Virtual PCD")
        try:
            assert not await reader.chip_present()
            task = asyncio.ensure_future(reader.read(chip=True, timeout_s=60))
            await asyncio.sleep(0.3)  # let it block inside SCardGetStatusChange
            assert not task.done()
            started = time.monotonic()
            task.cancel()
            await asyncio.wait({task}, timeout=WAIT_S)
            assert task.cancelled()
            assert time.monotonic() - started < 1.0, "the cancel waited for the reader"
            # A short arm times out; then an insertion is seen by the next arm.
            assert isinstance(await reader.read(chip=True, timeout_s=0.3), ReadTimedOut)
            pending = asyncio.ensure_future(reader.read(chip=True, timeout_s=WAIT_S))
            await asyncio.to_thread(pcsc.ctl, "insert")
            event = await asyncio.wait_for(pending, WAIT_S + 1)
            assert isinstance(event, ChipInserted) and event.atr == EMV_ATR
        finally:
            await reader.close()

    asyncio.run(run())


def test_pcscd_absent_or_no_reader_is_reader_unavailable_in_words(pcsc: PcscRig) -> None:
    async def run() -> None:
        wrong = PcscReader("Some CCID Reader")
        with pytest.raises(ReaderUnavailable, match=r"no PC/SC reader matching .*POS Virtual PCD"):
            await wrong.read(chip=True, timeout_s=1)
        await wrong.close()
        # pcscd stops while a read waits: the read ends in words, not at its timeout.
        waiting = PcscReader("POS Virtual PCD")
        read = asyncio.ensure_future(waiting.read(chip=True, timeout_s=60))
        await asyncio.sleep(0.3)
        assert not read.done()
        await asyncio.to_thread(pcsc.stop_pcscd)
        with pytest.raises(ReaderUnavailable, match="pcscd stopped during the wait"):
            await asyncio.wait_for(read, WAIT_S)
        await waiting.close()
        reader = PcscReader("POS Virtual PCD")
        with pytest.raises(ReaderUnavailable, match="pcscd is not running"):
            await reader.read(chip=True, timeout_s=1)
        await reader.close()

    asyncio.run(run())


def test_the_sim_pcsc_board_makes_a_pcsc_reader() -> None:
    from firmware.app.boards import profile
    from firmware.app.devices import make_reader

    class Paths:
        printer_path = None
        reader_path = None

    reader = make_reader(profile("sim-pcsc"), Paths())
    assert isinstance(reader, PcscReader) and reader.name == "POS Virtual PCD"


def test_the_virtual_card_takes_loopback_only_and_says_what_it_wants() -> None:
    from board.sim.vpcd import check_loopback

    for host in ("127.0.0.1", "::1", "localhost"):
        check_loopback(host)
    for host in ("0.0.0.0", "192.0.2.7", "example.org"):
        with pytest.raises(SystemExit, match="only a loopback address"):
            check_loopback(host)
