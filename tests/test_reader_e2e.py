"""The terminal with the emulated card reader on a real pty: a sale whose card is swiped
at the reader, CANCEL while the reader waits (the reader is disarmed at once), a bad
swipe asked again, a chip card swiped refused with "insert chip"."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from helpers import TID, HeldUpReader, run

from board.sim.reader import EmulatedReader
from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.engine.model import TxnRequest
from firmware.host.messages import TxnKind


@pytest.fixture
def reader(tmp_path: Path):
    r = EmulatedReader(link_dir=tmp_path).start()
    yield r
    r.stop()


async def reader_terminal(data_dir: Path, reader: EmulatedReader) -> Terminal:
    t = Terminal(AppConfig(data_dir=data_dir, reader_path=str(reader.device_path)))
    await t.start()
    return t


async def armed(reader: EmulatedReader, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not reader.armed:
        assert time.monotonic() < deadline, "the terminal never armed the reader"
        await asyncio.sleep(0.01)


def test_sale_with_the_card_swiped_at_the_reader(data_dir, sim, reader):
    async def go():
        t = await reader_terminal(data_dir, reader)
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 1888), OperatorInput()))
        await armed(reader)
        reader.swipe("cup_credit")
        r = await task
        await t.close()
        return r

    r = run(go())
    assert r.status == "approved" and r.record.entry_mode == "swipe"
    assert r.record.pan_masked.startswith("622") and "*" in r.record.pan_masked
    assert [row.amount for row in sim.ledger.rows(TID)] == [1888]


def test_cancel_at_the_reader_disarms_it_at_once_and_sends_nothing(data_dir, sim, reader):
    async def go():
        t = await reader_terminal(data_dir, reader)
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 500), OperatorInput()))
        await armed(reader)
        held = HeldUpReader(reader)  # it can answer nothing: the cancel must not wait for it
        t.cancel()
        r = await task
        at_once = held.holding
        held.release()
        # the C went out from the cancelled read itself; the reader lets go once it reads it
        disarmed = reader.wait_until(lambda: not reader.armed and bool(reader.commands_of("C")), 5.0)
        await t.close()
        return r, at_once, disarmed

    r, at_once, disarmed = run(go())
    assert r.status == "cancelled"
    assert at_once, "the cancel waited for the reader"
    assert disarmed
    assert sim.ledger.rows(TID) == []


def test_a_bad_swipe_is_asked_again_and_a_chip_card_must_be_inserted(data_dir, sim, reader):
    async def go():
        t = await reader_terminal(data_dir, reader)
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, 700), OperatorInput()))
        await armed(reader)
        reader.read_error(1)  # swipe unreadable: the reader lets go, the terminal arms again
        await armed(reader)
        unreadable_notice = t.status()["card_refused"]["message"]
        reader.swipe("cup_chip")  # a chip card swiped: refused at the reader, asked again
        await armed(reader)
        chip_notice = t.status()["card_refused"]["message"]
        reader.swipe("visa")
        r = await task
        await t.close()
        return r, unreadable_notice, chip_notice

    r, unreadable_notice, chip_notice = run(go())
    assert "swipe again" in unreadable_notice
    assert "insert" in chip_notice.lower()
    assert r.status == "approved"
    assert len(sim.ledger.rows(TID)) == 1
