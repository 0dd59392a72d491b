"""Refunds are advices (0220), sent online first (issue 12, items 5 and 6): the till hears the
host's answer when it comes in time; "stored" only when it was not delivered, or the host said
"try again", and then no receipt until the host acknowledges it. A stored refund is closed only
by an acknowledgement or a final decline; a decline after "stored" is shown on the idle screen,
in the settlement review and in `status`, prints a slip and is audited.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from helpers import TID, TerminalProcess, assert_agree, refund, run, sale, terminal

from firmware.app_review import gather
from firmware.engine.states import TxnState
from firmware.ports import TextLine
from firmware.printing import layout
from firmware.printing.layout import MerchantInfo
from firmware.printing.queue import CopyKind, JobKind
from firmware.ui import core
from firmware.ui.idle import IdleScreen


def _jobs(journal, txn_id: int) -> list[tuple[str, str]]:
    return [(str(k), str(s)) for k, s in journal.read(
        "SELECT kind, state FROM print_job WHERE txn_id = ? ORDER BY id", (txn_id,))]


def test_a_declined_refund_is_told_at_once_and_prints_no_receipt(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 3000)).record
            sim.add_rule("14", mti="0220", count=1)
            r = await refund(t, 3000, s.rrn, s.local_date)
            return r, _jobs(t.journal, r.record.id)
        finally:
            await t.close()

    r, jobs = run(go())
    assert (r.status, r.response_code) == ("declined", "14")
    assert r.record.state is TxnState.DECLINED and jobs == []


def test_a_stored_refund_prints_nothing_until_the_host_acknowledges_it(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 3000)).record
            sim.add_fault("drop", mti="0220", count=1, process=False)
            r = await refund(t, 3000, s.rrn, s.local_date)
            stored_jobs = _jobs(t.journal, r.record.id)
            assert (await sale(t, 100)).status == "approved"  # the backlog sends it first
            return r, stored_jobs, t.journal.get(r.record.id), _jobs(t.journal, r.record.id)
        finally:
            await t.close()

    r, stored_jobs, later, later_jobs = run(go())
    assert r.status == "stored" and r.record.state is TxnState.ADVICE_DUE
    assert "not confirmed" in r.detail or r.message_key == "advice_stored"
    assert stored_jobs == []  # nothing that reads as a completed refund
    assert later.state is TxnState.APPROVED
    assert later_jobs == [("receipt", "QUEUED")] or later_jobs[0][0] == "receipt"


@pytest.mark.parametrize("code", ["A0", "96", "91", "68", "22"])
def test_try_again_answers_keep_a_stored_refund_until_it_is_acknowledged(data_dir, sim, code):
    """A0 (sign on again, then resend), 96, 91... are not declines: the refund stays owed and is
    sent again with the same STAN, which the host books once."""
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 2000)).record
            sim.add_rule(code, mti="0220", count=2)  # the first send and the first resend
            r = await refund(t, 2000, s.rrn, s.local_date)
            await t.clear_backlog()
            still = t.journal.get(r.record.id)
            await t.clear_backlog()
            return r, still, t.journal.get(r.record.id), t.journal
        finally:
            await t.link.channel.close()

    r, still, done, journal = run(go())
    assert r.status == "stored"
    assert still.state is TxnState.ADVICE_DUE and still.advice_attempts == 2
    assert done.state is TxnState.APPROVED and done.stan == r.record.stan
    assert [(x.kind, x.amount) for x in sim.ledger.approved(TID)] == [("sale", 2000), ("refund", 2000)]
    assert_agree(journal, sim.ledger)


def test_a_stored_refund_declined_later_is_shown_printed_and_audited(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 4200)).record
            sim.add_fault("drop", mti="0220", count=1, process=False)
            r = await refund(t, 4200, s.rrn, s.local_date)
            assert r.status == "stored"
            sim.add_rule("12", mti="0220", count=1)  # the host will not take it after all
            await t.clear_backlog()
            record = t.journal.get(r.record.id)
            status = t.status()
            review = gather(t).payload()
            jobs = _jobs(t.journal, record.id)
            audit = t.journal.audit_lines(30)
            ctx = core.UiContext(now=datetime(2026, 12, 7, 10, 0), mono=0.0, rows=8, cols=21,
                                 refunds_declined=len(t.journal.declined_after_stored()))
            idle = IdleScreen().render(ctx)
            return record, status, review, jobs, audit, idle, t
        finally:
            await t.link.channel.close()

    record, status, review, jobs, audit, idle, t = run(go())
    assert record.state is TxnState.DECLINED and record.response_code == "12"
    assert [(d["voucher"], d["amount"], d["code"]) for d in status["refunds_declined"]] == [
        (record.invoice, 4200, "12")]
    assert "Invalid transaction" in status["refunds_declined"][0]["message"]
    assert [(a["kind"], a["voucher"], a["why"]) for a in review["anomalies"]] == [
        ("refund_declined", record.invoice, "12")]
    assert jobs == [("advice_declined", "QUEUED")]
    assert any(action == "stored refund declined" and record.stan in detail
               for _, _, action, detail, _ in audit)
    assert "1 stored refund(s) DECLINED: not refunded" in " ".join(r.strip() for r in idle.rows)
    doc = t.prints.render(t.journal.print_job(t.journal.print_jobs()[-1].id), CopyKind.MERCHANT)
    text = "\n".join(b.text for b in doc.blocks if isinstance(b, TextLine))
    assert "REFUND DECLINED" in text and "THE REFUND WAS NOT MADE" in text and "42.00" in text
    assert "12 Invalid transaction" in text


def test_the_declined_refund_slip_reads_right_in_both_languages(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 1500)).record
            sim.add_fault("drop", mti="0220", count=1, process=False)
            r = await refund(t, 1500, s.rrn, s.local_date)
            sim.add_rule("25", mti="0220", count=1)
            await t.clear_backlog()
            return t.journal.get(r.record.id)
        finally:
            await t.close()

    record = run(go())
    merchant = MerchantInfo(name="TEA HOUSE", mid="123456789012345", tid=TID)
    for lang, words in (("en", "REFUND DECLINED"), ("zh_CN", "退货被拒绝")):
        for columns in (32, 48):
            doc = layout.refund_declined_slip(record, merchant, lang=lang, columns=columns,
                                              printed_at=datetime(2026, 12, 7, 10, 0), answer="25")
            assert all(len(line) <= columns for line in layout.plain_text(doc, columns).splitlines())
            text = "\n".join(b.text for b in doc.blocks if isinstance(b, TextLine))
            assert words in text and record.invoice in text and "15.00" in text
    with pytest.raises(ValueError):
        layout.refund_declined_slip(record.__class__(**{**record.__dict__, "state": TxnState.APPROVED}),
                                    merchant, lang="en", columns=32, printed_at=datetime.now(),
                                    answer="00")


def test_no_receipt_layout_for_a_refund_not_yet_acknowledged(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 900)).record
            sim.add_fault("drop", mti="0220", count=1, process=False)
            return (await refund(t, 900, s.rrn, s.local_date)).record
        finally:
            await t.close()

    record = run(go())
    assert record.state is TxnState.ADVICE_DUE
    with pytest.raises(ValueError, match="nothing was approved"):
        layout.receipt(record, CopyKind.MERCHANT, MerchantInfo(name="X", mid="1" * 15, tid=TID),
                       lang="en", columns=32)
    assert JobKind.ADVICE_DECLINED.value == "advice_declined"


def test_status_tells_the_till_of_a_later_decline_over_ecr(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        s = term.request(op="sale", amount=3300, card="cup_credit")
        assert s["result"] == "approved"
        sim.add_fault("drop", mti="0220", count=1, process=False)
        r = term.request(op="refund", amount=3300, orig_rrn=s["rrn"], orig_date=s["date"],
                         password="246810", card="cup_credit")
        assert r["result"] == "stored" and r["ok"] is False, r
        sim.add_rule("12", mti="0220", count=1)
        assert term.request(op="sale", amount=100, card="cup_credit")["result"] == "approved"
        status = term.request(op="status")
        assert [d["voucher"] for d in status["refunds_declined"]] == [r["voucher"]]
    finally:
        term.stop()
