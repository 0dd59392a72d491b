"""A chip sale through the standard Linux smart-card stack: the terminal on the sim-pcsc board
(drivers/reader/pcsc.py over pyscard), a private pcscd with vsmartcard's vpcd reader, the test
chip card as its own process behind vpcd (board/sim/vpcd.py), and the acquirer simulator that
verifies the card's ARQC and answers with its ARPC. Nothing is faked between the kernel and the
card: every APDU crosses pcscd."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import TID, run
from pcsckit import PcscRig, pcsc_rig

from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.emv.record import summary
from firmware.engine.model import TxnRequest
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind


@pytest.fixture
def pcsc(tmp_path: Path) -> Iterator[PcscRig]:
    yield from pcsc_rig(tmp_path)


def pcsc_sale(data_dir: Path, amount: int, pin: str | None):
    async def go():
        t = Terminal(AppConfig(data_dir=data_dir, board="sim-pcsc"))
        await t.start()
        try:
            return await asyncio.wait_for(
                t.financial(TxnRequest(TxnKind.SALE, amount), OperatorInput(pin=pin)), 30)
        finally:
            await t.close()
    return run(go())


def test_chip_sale_over_pcsc_is_approved_with_the_cards_tc(data_dir, sim, pcsc: PcscRig):
    pcsc.start_card("cup-debit", inserted=True)
    r = pcsc_sale(data_dir, 3210, "123456")
    assert r.status == "approved", r
    assert r.record.entry_mode == "chip" and r.record.pos_entry == "051"
    chip = summary(r.record.chip_tags)
    assert chip is not None and chip.cryptogram_name == "TC"
    assert [row.amount for row in sim.ledger.approved(TID)] == [3210]
    auth = [row for row in sim.call(sim._sim.control, {"cmd": "chip_log", "tid": TID})["chip_log"]
            if row["mti"] == "0200"]
    assert len(auth) == 1 and auth[0]["result"] == "ok"  # the host verified the ARQC


def test_card_declining_after_approval_over_pcsc_is_reversed(data_dir, sim, pcsc: PcscRig):
    pcsc.start_card("declines-2nd", inserted=True)
    r = pcsc_sale(data_dir, 3210, None)
    assert (r.status, r.message_key) == ("declined", "declined_by_card_reversed"), r
    assert r.record.state is TxnState.REVERSED and sim.ledger.approved(TID) == []
