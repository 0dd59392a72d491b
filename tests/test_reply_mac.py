"""Trust only what is authenticated (issue 12, items 14 and 15).

The dialect's rule (messages.reply_needs_mac, docs/dialect.md "MAC"): every 0230 and 0410, and
every approving 0110/0210, carries field 64; a reply that lacks it (or whose MAC fails) counts as
no reply at all. Settlement and upload replies carry none: a tampered 0510 is checked against
itself and can close a batch only in plain sight (the terminal's totals and the reply's claim are
recorded).
"""

from __future__ import annotations

import dataclasses

import pytest
from helpers import PASSWORD, TID, WireSpy, assert_agree, refund, run, sale, swipe, terminal

from firmware.app.core.contract import OperatorInput
from firmware.engine.model import HostResult, PendingDraft, TxnRequest
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.messages import Message, TxnKind, reply_needs_mac


@pytest.mark.parametrize(("mti", "code", "maced"), [
    ("0110", "00", True), ("0110", "05", False), ("0210", "00", True), ("0210", "51", False),
    ("0210", "A0", False), ("0230", "00", True), ("0230", "94", True), ("0230", "12", True),
    ("0230", "A0", True), ("0410", "00", True), ("0410", "25", True), ("0410", "96", True),
    ("0510", "00", False), ("0330", "00", False), ("0810", "00", False), ("0830", "00", False),
])
def test_which_replies_carry_a_mac(mti: str, code: str, maced: bool) -> None:
    assert reply_needs_mac(mti, code) is maced


def _no_mac(sim, mti: str) -> None:
    sim.add_fault("no_mac", mti=mti, count=1)


def test_an_approval_without_a_mac_is_no_approval(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            _no_mac(sim, "0200")
            s = await sale(t, 1100)
            _no_mac(sim, "0100")
            p = await t.financial(TxnRequest(TxnKind.PREAUTH, 2200),
                                  OperatorInput(card=swipe("cup_credit")))
            return s, p, t.journal
        finally:
            await t.link.channel.close()

    s, p, journal = run(go())
    for result in (s, p):
        assert result.status in ("reversed", "reversal_pending") and result.status != "approved"
        assert result.record.reversal_reason == "A0"  # a MAC failure, said as such in the 0400
    assert_agree(journal, sim.ledger)  # reversed at the host too: nothing booked on one side


def test_a_decline_without_a_mac_is_taken_as_it_is(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            _no_mac(sim, "0200")
            return await sale(t, 2051)  # declined 51; declines carry no MAC in this dialect
        finally:
            await t.close()

    r = run(go())
    assert (r.status, r.response_code) == ("declined", "51")


@pytest.mark.parametrize("code", ["00", "94"])
def test_a_refund_acknowledgement_without_a_mac_leaves_the_refund_owed(data_dir, sim, code):
    """A 0230 with 94 and no field 64 marked the refund APPROVED."""
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 3000)).record
            if code == "94":
                sim.add_rule("94", mti="0220", count=2)
            _no_mac(sim, "0220")
            r = await refund(t, 3000, s.rrn, s.local_date)
            unmaced = t.journal.get(r.record.id)
            await t.clear_backlog()  # the same answer with its MAC is taken
            return r, unmaced, t.journal.get(r.record.id)
        finally:
            await t.close()

    r, unmaced, later = run(go())
    assert r.status == "stored" and unmaced.state is TxnState.ADVICE_DUE
    assert later.state is TxnState.APPROVED


def test_a_reversal_acknowledgement_without_a_mac_leaves_the_reversal_owed(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            sim.add_fault("drop", mti="0200", count=1, process=True)
            sim.add_fault("no_mac", mti="0400", count=-1)
            r = await sale(t, 1300)
            owed = t.journal.get(r.record.id)
            sim.clear_faults()
            await t.clear_backlog()
            return r, owed, t.journal.get(r.record.id)
        finally:
            await t.close()

    r, owed, later = run(go())
    assert r.status == "reversal_pending" and owed.state is TxnState.REVERSAL_DUE
    assert owed.reversal_attempts >= 1
    assert later.state is TxnState.REVERSED


def test_management_and_settlement_replies_carry_no_mac_and_need_none(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            assert (await sale(t, 800)).status == "approved"
            for mti in ("0820", "0500", "0320"):
                sim.add_fault("bad_mac", mti=mti, count=-1)  # a MAC nobody can check is ignored
            ok, _, _ = await t.echo()
            settled = await t.settle(PASSWORD)
            return ok, settled
        finally:
            await t.close()

    ok, settled = run(go())
    assert ok and settled.status == "settled"


# -- item 15: a tampered 0510 --------------------------------------------------------------

def _forge_0510(t, results: str, totals_too: bool = False) -> None:
    """An attacker between terminal and host rewrites the 0510's result digits (and totals)."""
    real = t.link.request

    async def tampered(msg: Message, *, mac: bool, timeout: float) -> Message:
        reply = await real(msg, mac=mac, timeout=timeout)
        if reply.mti != "0510":
            return reply
        f48 = reply.fields["48"]
        dom, fgn = f48[:31], f48[31:]
        if totals_too:
            dom = "999999999999" + dom[12:]
        forged = dom[:30] + results[0] + fgn[:30] + results[1]
        return dataclasses.replace(reply, fields={**reply.fields, "48": forged})

    t.link.request = tampered


def _book_unknown_sale(t, amount: int) -> None:
    """A sale approved in the terminal's journal that the host never booked: the batch is
    unbalanced, and an honest 0510 says so."""
    j = t.journal
    record = j.begin(PendingDraft(TxnKind.SALE, amount, "156", "6222020000000000012",
                                  "622202******0012", False, "swipe", False, "01", "1201", "101010"))
    j.apply(record.id, TxnEvent.APPROVE, HostResult("00", rrn="999999999999", auth_code="000001"))


def test_a_0510_calling_other_totals_balanced_is_refused_and_nothing_settles(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            assert (await sale(t, 1000)).status == "approved"
            batch = t.journal.current_batch()
            _forge_0510(t, "11", totals_too=True)
            result = await t.settle(PASSWORD)
            return result, batch, t.journal.current_batch(), t.journal.settlements(1)[0]
        finally:
            await t.close()

    result, before, after, row = run(go())
    assert result.status == "failed" and "called balanced over totals" in result.detail
    assert before == after and row.state == "ABANDONED"


def test_a_forged_balanced_0510_closes_the_batch_only_in_plain_sight(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        spy = WireSpy(t)
        try:
            assert (await sale(t, 1000)).status == "approved"
            _book_unknown_sale(t, 500)
            _forge_0510(t, "11")  # the honest host said "2" (unbalanced) for the domestic side
            result = await t.settle(PASSWORD)
            row = t.journal.settlements(1)[0]
            jobs = t.journal.print_jobs(open_only=False)
            audit = t.journal.audit_lines(40)
            return result, row, jobs, audit, spy.mtis(), t.journal.records()
        finally:
            await t.close()

    result, row, jobs, audit, mtis, records = run(go())
    assert result.status == "settled"  # the dialect has no MAC to tell a forgery by...
    # ...but nothing is lost: the terminal's own totals (both sales) and the claim it got are
    # kept, the batch's records stay (tied to the settlement), the Z report prints them, and the
    # host's own books record the batch as unbalanced.
    assert row.state == "DONE" and (row.result_domestic, row.result_foreign) == ("1", "1")
    assert row.domestic[:2] == (1500, 2)
    assert all(r.settlement_id == row.id for r in records)
    assert any(j.kind.value == "settlement" and j.settlement_id == row.id for j in jobs)
    assert any(action == "settlement reply" and "domestic 1 foreign 1" in detail
               for _, _, action, detail, _ in audit)
    assert "0320" in mtis  # the upload end went out, so the host closed the batch...
    host = sim.ledger.settlements(TID)[-1]
    assert host["result_dom"] == "2", host  # ...which it booked as unbalanced
