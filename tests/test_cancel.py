"""CANCEL at every step of a transaction does exactly what cancel-semantics.md says.

Before anything is sent: no financial record, an audit line, "Cancelled". After the
request is durable and sent: REVERSAL_DUE, the reversal goes at once, "Cancelled -
reversal sent"; the host's late reply never turns into an approval.
"""

from __future__ import annotations

import asyncio

from helpers import PASSWORD, TID, assert_agree, pin_for, provision, run, sale, swipe, terminal

from firmware.app.core.contract import OperatorInput
from firmware.engine import events as ev
from firmware.engine.model import OriginalRef, TxnRequest
from firmware.host.messages import TxnKind


async def cancel_when(t, predicate, after: float = 0.0):
    """Press CANCEL as soon as the executor is about to perform a matching action."""
    fired = asyncio.Event()

    def hook(action):
        if not fired.is_set() and predicate(action):
            fired.set()
            asyncio.get_running_loop().call_later(after, t.cancel)

    t.fault_hook = hook
    return fired


def test_cancel_while_waiting_for_the_card(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        await cancel_when(t, lambda a: isinstance(a, ev.AskCard), after=0.05)
        r = await t.financial(TxnRequest(TxnKind.SALE, 1000), OperatorInput())
        return r, t.journal.records(), t.journal.audit_lines(5)

    r, records, audit = run(go())
    assert r.status == "cancelled" and "card" in r.detail
    assert records == []
    assert any("cancelled" in line[2] and "card" in line[3] for line in audit)
    assert sim.ledger.rows(TID) == []


def test_cancel_before_pin_entry_sends_nothing(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        # A PIN card with no PIN offered (the cardholder walked away) and bypass off.
        r = await t.financial(TxnRequest(TxnKind.SALE, 1000), OperatorInput(card=swipe("cup_debit")))
        return r, t.journal.records()

    r, records = run(go())
    assert r.status == "cancelled" and "pin" in r.detail
    assert records == [] and sim.ledger.rows(TID) == []


def test_cancel_while_awaiting_the_reply_reverses(tmp_path, sim):
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=5.0)

    async def go():
        t = await terminal(data_dir)
        sim.add_fault("delay", mti="0200", seconds=1.0)  # the host books it, replies late
        await cancel_when(t, lambda a: isinstance(a, ev.SendRequest) and a.message.mti == "0200",
                          after=0.2)
        r = await sale(t, 2500)
        await asyncio.sleep(1.2)  # the late 0210 arrives and must be ignored
        t.fault_hook = None
        follow = await sale(t, 100)
        return r, follow, t.journal

    r, follow, journal = run(go())
    assert r.status == "reversed" and r.message_key == "reversal_sent", r
    assert r.record.state.value == "REVERSED" and r.record.reversal_reason == "06"
    assert follow.status == "approved"
    assert_agree(journal, sim.ledger)


def test_cancel_after_approval_is_not_possible_the_way_back_is_void(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        s = await sale(t, 4200)
        t.cancel()  # a CANCEL pressed after the result: nothing to undo
        v = await t.financial(TxnRequest(TxnKind.VOID, original=OriginalRef(invoice=s.record.invoice)),
                              OperatorInput(password=PASSWORD))
        return s, v, t.journal

    s, v, journal = run(go())
    assert s.status == "approved" and v.status == "approved"
    assert journal.get(s.record.id).state.value == "VOIDED"
    assert_agree(journal, sim.ledger)


def test_settlement_refused_while_a_reversal_is_due_then_allowed(tmp_path, sim):
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=1.0)

    async def go():
        t = await terminal(data_dir)
        await sale(t, 1000)
        sim.add_fault("drop", mti="0200")
        sim.add_rule("96", mti="0400")  # the host keeps failing the reversal
        lost = await sale(t, 2000)
        refused = await t.settle(PASSWORD)
        sim.clear_rules()
        sim.clear_faults()
        allowed = await t.settle(PASSWORD)
        return lost, refused, allowed, t.journal

    lost, refused, allowed, journal = run(go())
    assert lost.status == "reversal_pending" and lost.record.reversal_attempts == 3
    assert refused.status == "refused" and refused.message_key == "settlement_blocked"
    assert "1 reversal" in refused.detail
    assert allowed.status == "settled" and allowed.message_key == "settled_balanced"
    assert_agree(journal, sim.ledger)


def test_host_unreachable_refuses_before_writing_anything(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        sim.add_fault("refuse", seconds=0)
        await asyncio.sleep(0.05)
        r = await sale(t, 1000)
        sim.clear_faults()
        return r, t.journal.records()

    r, records = run(go())
    assert r.status == "failed" and r.message_key == "host_unreachable", r
    assert records == []


def test_pin_is_encrypted_at_once_and_never_kept(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        io = OperatorInput(card=swipe("cup_debit"), pin=pin_for("cup_debit"))
        r = await t.financial(TxnRequest(TxnKind.SALE, 3300), io)
        return r, io

    r, io = run(go())
    assert r.status == "approved"
    assert io.pin is None  # the clear PIN was dropped the moment it became a block
