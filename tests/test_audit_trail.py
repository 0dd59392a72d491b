"""The audit log: every state change of a financial record has its audit line in the same SQL
commit (watched on the journal's own connection while real flows run against the simulator),
and every CANCEL is audited with who and from where, but only while something runs."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from typing import Any

from helpers import PASSWORD, refund, run, sale, swipe, terminal, void

from firmware.app.core.contract import OperatorInput
from firmware.engine import events as ev
from firmware.engine.model import PendingDraft, TxnRequest
from firmware.engine.states import TxnEvent
from firmware.host.messages import TxnKind
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault


class Watch:
    """Every txn state change and every audit line written on one journal connection, in
    order, with the SQL transactions around them (temporary triggers: nothing on disk)."""

    def __init__(self, journal: Journal) -> None:
        self.events: list[tuple[Any, ...]] = []
        db: sqlite3.Connection = journal._db
        db.create_function("watched", 3, lambda *e: self.events.append(e))
        for name, sql in (
            ("w_txn_insert", "AFTER INSERT ON txn BEGIN SELECT watched('change', NEW.stan, NEW.state)"),
            ("w_txn_state", "AFTER UPDATE OF state ON txn BEGIN "
                            "SELECT watched('change', NEW.stan, NEW.state)"),
            ("w_audit", "AFTER INSERT ON audit BEGIN SELECT watched('audit', NEW.detail, NEW.outcome)"),
        ):
            db.execute(f"CREATE TEMP TRIGGER {name} {sql}; END")
        db.set_trace_callback(self._statement)

    def _statement(self, sql: str) -> None:
        if sql in ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"):
            self.events.append((sql,))

    def unaudited(self) -> list[tuple[str, str]]:
        """The (trace, new state) changes that no audit line of the same commit names."""
        missing: list[tuple[str, str]] = []
        changes: list[tuple[str, str]] = []
        lines: Counter[tuple[str, str]] = Counter()
        for event in self.events:
            if event[0] == "change":
                changes.append((event[1], event[2]))
            elif event[0] == "audit":
                lines[(event[1], event[2])] += 1
            elif event[0] == "COMMIT":
                for stan, state in changes:
                    match = next((key for key, n in lines.items()
                                  if n and key[1] == state and f"trace {stan}" in key[0]), None)
                    if match is None:
                        missing.append((stan, state))
                    else:
                        lines[match] -= 1
                changes, lines = [], Counter()
            else:  # BEGIN or ROLLBACK: nothing of an unfinished transaction counts
                changes, lines = [], Counter()
        return missing

    def changes(self) -> list[str]:
        return [event[2] for event in self.events if event[0] == "change"]


def test_every_state_change_of_a_record_has_its_audit_line_in_the_same_commit(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        watch = Watch(t.journal)
        try:
            first = await sale(t, 2000)
            await sale(t, 1051)  # declined (51)
            await void(t, first.record.invoice)
            other = await sale(t, 3000, card="visa")
            await refund(t, 500, other.record.rrn, other.record.local_date)
            sim.add_fault("drop", mti="0200")  # the reply is lost: reversed at once
            await sale(t, 700)
            sim.clear_faults()
            await t.financial(TxnRequest(TxnKind.BALANCE), OperatorInput(card=swipe("cup_debit"),
                                                                         pin="123456"))
            await t.settle(PASSWORD)
            return watch
        finally:
            await t.close()

    watch = run(go())
    assert {"APPROVED", "DECLINED", "VOIDED", "REVERSAL_DUE", "REVERSED"} <= set(watch.changes())
    assert watch.unaudited() == []


def test_recovery_and_manual_resolution_audit_each_record(tmp_path):
    journal = Journal.open(tmp_path / "journal.db", CardVault(b"k" * 32))
    try:
        watch = Watch(journal)
        draft = PendingDraft(kind=TxnKind.SALE, amount=100, currency="156", pan="6225880000000001",
                             pan_masked="622588******0001", foreign=False, entry_mode="swipe",
                             pin_entered=False, operator="01", local_date="0314",
                             local_time="092653")
        lost = [journal.begin(draft) for _ in range(3)]  # the power went with three on the wire
        journal.recover()
        journal.apply(lost[0].id, TxnEvent.REVERSAL_FAILED)
        journal.resolve_manually(lost[0].id, "supervisor", "host says not booked")
        assert watch.changes().count("REVERSAL_DUE") == 4
        assert watch.unaudited() == []
    finally:
        journal.close()


# -- CANCEL -------------------------------------------------------------------------------

def _cancels(journal: Journal) -> list[tuple[str, str, str]]:
    return [(line[1], line[3], line[4]) for line in journal.audit_lines(50) if line[2] == "cancel"]


def test_cancel_is_audited_with_who_and_from_where_only_while_something_runs(data_dir, sim):
    from drivers.display.capture import CaptureDisplay
    from firmware.app.frontends.panel import FrontPanel
    from firmware.ui import core as ui

    async def go():
        t = await terminal(data_dir)
        panel = FrontPanel(t, None, CaptureDisplay(4, 16))
        try:
            t.cancel()  # at idle: not an event
            panel._execute(ui.CancelOp())
            idle = _cancels(t.journal)
            asked = asyncio.Event()
            t.fault_hook = lambda action: asked.set() if isinstance(action, ev.AskCard) else None
            waiting = asyncio.create_task(
                t.financial(TxnRequest(TxnKind.SALE, 1000), OperatorInput(source="ecr tcp 10.0.0.7")))
            await asked.wait()
            panel._execute(ui.CancelOp())  # the keypad's CANCEL while the till's sale waits
            first = await waiting
            asked.clear()
            waiting = asyncio.create_task(
                t.financial(TxnRequest(TxnKind.SALE, 1000), OperatorInput(source="keypad")))
            await asked.wait()
            t.cancel()  # the ECR server's call: "ecr" until it names its peer
            second = await waiting
            return idle, first, second, _cancels(t.journal)
        finally:
            await panel.close()
            await t.close()

    idle, first, second, cancels = run(go())
    assert idle == []
    assert first.status == second.status == "cancelled"
    assert sorted(cancels) == sorted([
        # the keypad's row names its operator too (no operators set up: the implicit one, 01)
        ("01 keypad", "while sale from ecr tcp 10.0.0.7 ran", "requested"),
        ("ecr", "while sale from keypad ran", "requested"),
    ])
