"""Reports on paper end to end: a terminal paired with the simulated host settles a batch and
its PrintDesk prints the settlement (Z) report on the emulated printer over a real pty; a
reprint (in Chinese) is marked REPRINT; the X report and the transaction list of the next batch
print too. No full card number reaches the paper.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import MID, PASSWORD, run, sale, void

from board.sim.printer import EmulatedPrinter
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.printing.queue import JobKind, PrintState

FULL_PAN = re.compile(r"\d{13,19}")


@pytest.fixture
def printer(tmp_path: Path):
    p = EmulatedPrinter(tmp_path).start()
    yield p
    p.stop()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def squeeze(text: str) -> str:
    """Runs of spaces as one: the amounts' alignment is the layout tests' business."""
    return re.sub(r" +", " ", text)


def test_settlement_prints_its_report_and_reprints_are_marked(data_dir, sim, printer):
    async def go():
        t = Terminal(AppConfig(data_dir=data_dir, printer_path=str(printer.path), print_poll_s=0.05))
        await t.start()
        try:
            assert t.journal is not None and t.prints is not None
            first = await sale(t, 12345)
            await sale(t, 20000, card="visa")
            await void(t, first.record.invoice)
            await until(lambda: len(printer.slips) == 6)  # 2 copies of each receipt
            batch = t.journal.current_batch()
            result = await t.settle(PASSWORD)
            assert result.status == "settled", result
            z = t.journal.last_report_job(JobKind.SETTLEMENT)
            assert z is not None and z.batch == batch and not z.reprint
            # firmware/app/core/flows.py wakes the spooler after FinishSettlement; one more wake
            # here is harmless (the test was written before that line was).
            t.prints.wake()
            await until(lambda: len(printer.slips) == 7)
            await until(lambda: t.journal.print_job(z.id).state is PrintState.DONE)

            t.settings["display"]["language"] = "zh_CN"
            again = t.prints.settlement_report()
            assert not isinstance(again, str) and again.reprint
            await until(lambda: len(printer.slips) == 8)
            t.settings["display"]["language"] = "en"

            await sale(t, 500)
            await until(lambda: len(printer.slips) == 10)
            t.prints.subtotals()
            t.prints.transaction_list()
            await until(lambda: len(printer.slips) == 12)
            return batch, first.record
        finally:
            await t.close()

    batch, voided = run(go())
    slips = [s.text for s in printer.slips]
    z, reprint, x, listing = slips[6], slips[7], slips[10], slips[11]

    z_flat = squeeze(z)
    assert "SETTLEMENT" in z and "REPRINT" not in z
    assert f"BATCH NO.: {batch}" in z_flat
    assert "SALES 2 323.45" in z_flat and "VOIDS 1 123.45" in z_flat  # by type, both sides
    assert "NET 200.00" in z_flat  # the voided sale and its void net to nothing
    assert "SALES 1 123.45\nVOIDS 1 123.45\nNET 0.00" in z_flat  # domestic cards
    assert "SALES 1 200.00\nNET 200.00" in z_flat  # foreign cards
    assert z_flat.count("RECONCILIATION: BALANCED") == 2
    assert printer.slips[6].cut

    assert "REPRINT" in reprint and "重打印" in reprint and "结算单" in reprint
    assert "对账平 BALANCED" in reprint and "323.45" in reprint

    x_flat = squeeze(x)
    assert "SUBTOTALS" in x and "NOT SETTLED" in x and "SALES 1 5.00" in x_flat
    assert f"BATCH NO.: {int(batch) + 1:06d}" in x_flat
    assert "TRANSACTION LIST" in listing and "TOTAL: 1" in squeeze(listing)
    # The settled batch's records are not in the new batch's list.
    assert not [line for line in listing.splitlines() if line.startswith(voided.stan)]

    for text in slips[6:]:
        assert [m for m in FULL_PAN.findall(text) if m != MID] == []
    assert printer.unknown_commands == []
