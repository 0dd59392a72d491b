"""Power loss at every step of a chip sale: before each APDU the kernel sends and before each
action of the flow, then a restart on the same files, a second chip sale and a balanced
settlement, with the journal and the host's ledger agreeing record for record.

The card is the emulated reader's (board/sim/reader.py) on a real pty; the host is the
simulator, which verifies every ARQC. The power cut abandons the Terminal as faultkit does; the
cardholder takes the card out while the terminal is dark (the reader is powered with it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chipkit import chip_terminal, emulated_reader
from faultkit import PowerCut, PowerLoss, action_label, durable_records, power_loss, shut
from helpers import PASSWORD, TID, assert_agree, provision, run

from board.sim.acquirer import SimulatorThread
from board.sim.chipcards import make_card
from board.sim.reader import EmulatedReader
from firmware.app.core.contract import OperatorInput
from firmware.app.terminal import Terminal
from firmware.engine.model import TxnRequest, TxnResult
from firmware.host.messages import TxnKind

REPLY_TIMEOUT = 1.0
CARD = "cup-debit"
# The flow's actions of a chip sale with the online PIN (proven by the first test).
ACTIONS = ("AskCard", "AskPin", "WritePending", "SendRequest/0200", "CompleteChip",
           "WriteOutcome", "Finish")
APDUS = 13  # what cup-debit's sale takes, selection to the second GENERATE AC (the first test)


# One card object per test: its ATC goes on from sale to sale, as a real card's does (a fresh
# object would start again at ATC 1, which the host refuses as a replay).
THE_CARD: list = []


@pytest.fixture(autouse=True)
def the_card():
    THE_CARD[:] = [make_card(CARD)]
    yield


@pytest.fixture
def reader(tmp_path: Path):
    yield from emulated_reader(tmp_path)


async def chip_sale(t: Terminal, reader: EmulatedReader, amount: int) -> TxnResult:
    reader.insert_chip(THE_CARD[0])
    try:
        return await t.financial(TxnRequest(TxnKind.SALE, amount), OperatorInput(pin="123456"))
    finally:
        reader.remove_chip()


class ApduCut:
    """Wraps the reader driver's transmit: the power goes just before APDU number `at`."""

    def __init__(self, t: Terminal, at: int) -> None:
        self.at = at
        self.sent = 0
        assert t.reader is not None
        self._transmit = t.reader.transmit
        t.reader.transmit = self  # type: ignore[method-assign]

    async def __call__(self, apdu: bytes, timeout_s: float = 5.0) -> bytes:
        if self.sent == self.at:
            raise PowerLoss(f"power lost before APDU {self.at}")
        self.sent += 1
        return await self._transmit(apdu, timeout_s)


def test_a_chip_sale_performs_the_expected_actions(tmp_path: Path, sim: SimulatorThread,
                                                   reader: EmulatedReader) -> None:
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)
    labels: list[str] = []

    async def go() -> TxnResult:
        t = await chip_terminal(data_dir, reader)
        try:
            cut = ApduCut(t, at=10_000)
            t.fault_hook = lambda action: labels.append(action_label(action))
            result = await chip_sale(t, reader, 1000)
            assert cut.sent == APDUS
            return result
        finally:
            await shut(t)

    assert run(go()).status == "approved"
    assert tuple(labels) == ACTIONS


CASES = ([pytest.param("apdu", n, id=f"apdu{n}") for n in range(APDUS)]
         + [pytest.param("action", k, id=f"action{k}-{(*ACTIONS, 'after')[k]}")
            for k in range(len(ACTIONS) + 1)])


@pytest.mark.parametrize(("where", "n"), CASES)
def test_power_loss_at_each_chip_step_then_restart_settles_balanced(
        tmp_path: Path, sim: SimulatorThread, reader: EmulatedReader, where: str, n: int) -> None:
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)

    async def go() -> None:
        dead: Terminal | None = None
        t2: Terminal | None = None
        try:
            dead = await chip_terminal(data_dir, reader)
            if where == "apdu":
                ApduCut(dead, n)
            elif n < len(ACTIONS):
                dead.fault_hook = PowerCut(n)
            if where == "action" and n == len(ACTIONS):
                assert (await chip_sale(dead, reader, 1000)).status == "approved"
            else:
                with pytest.raises(PowerLoss):
                    await chip_sale(dead, reader, 1000)
            await power_loss(dead)
            assert dead.reader is not None
            await dead.reader.close()  # the process is gone: so is its hold on the reader's port
            records = durable_records(data_dir)
            assert len(records) <= 1
            if records:
                assert records[0].state in ("PENDING", "APPROVED"), records
                # Never approved unless the card's TC was in the journal before the cut.
                if where == "apdu" or (where == "action" and n <= ACTIONS.index("WriteOutcome")):
                    assert records[0].state == "PENDING", (where, n, records)

            t2 = await chip_terminal(data_dir, reader)
            assert t2.service_problem is None and t2.journal is not None
            assert not any(t2.journal.unresolved_counts().values())
            if records and records[0].state == "PENDING":
                assert t2.journal.get(records[0].id).state.value == "REVERSED"
                assert sim.ledger.reversal_seen(TID, int(records[0].batch), int(records[0].stan))
            follow = await chip_sale(t2, reader, 700)
            assert follow.status == "approved", follow
            settled = await t2.settle(PASSWORD)
            assert settled.message_key == "settled_balanced", (where, n, settled)
            assert_agree(t2.journal, sim.ledger)
        finally:
            await shut(t2, dead)

    run(go())
