"""Refunds are advices (0220), sent online first (issue 12, items 5 and 6): the till hears the
host's answer when it comes in time; "stored" only when it was not delivered, or the host said
"try again", and then no receipt until the host acknowledges it. A stored refund is closed only
by an acknowledgement or a final decline; a decline after "stored" is shown on the idle screen,
in the settlement review and in `status`, prints a slip and is audited.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from helpers import MID, TID, TerminalProcess, assert_agree, refund, run, sale, terminal

from firmware.app.services.review import gather
from firmware.engine import events as ev
from firmware.engine.backlog import AdviceFlow
from firmware.engine.codes import CODES, ActionClass, advice_answer
from firmware.engine.model import TxnRecord
from firmware.engine.states import TxnEvent, TxnState, next_state
from firmware.host.messages import Message, Terminal, TxnKind
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


# -- the backlog's answer to a stored refund (docs/dialect.md, "Answers") -----------------------

PAN = "6222020000000000012"


def _stored_refund(**kw: object) -> TxnRecord:
    base: dict[str, object] = dict(
        id=7, kind=TxnKind.REFUND, state=TxnState.ADVICE_DUE, stan="000011", batch="000001",
        invoice="000005", amount=2000, currency="156", pan_masked="622202*********0012",
        foreign=False, entry_mode="swipe", pin_entered=False, operator="01", local_date="1122",
        local_time="103000", created_at=0.0, pos_entry="022", orig_batch="000001",
        orig_stan="000003", orig_rrn="123456789012", orig_date="1122", advice_attempts=1)
    base.update(kw)
    return TxnRecord(**base)  # type: ignore[arg-type]


def _resend() -> AdviceFlow:
    flow = AdviceFlow(_stored_refund(), PAN, Terminal(TID, MID), 5.0)
    [send] = flow.start()
    assert isinstance(send, ev.SendRequest) and send.message.mti == "0220", send
    return flow


@pytest.mark.parametrize("lost", [ev.ReplyLost("timeout"), ev.ReplyLost("link"),
                                  ev.ReplyLost("bad_mac"), ev.ReplyLost("malformed"), ev.Cancel()],
                         ids=["timeout", "link", "bad_mac", "malformed", "cancel"])
def test_a_stored_refund_whose_resend_gets_no_reply_stays_stored_to_retry(lost: object):
    """No reply (or one that cannot be trusted) tells nothing about the refund: it stays
    ADVICE_DUE with one more attempt counted, to be sent again; never DECLINED (that would
    print "THE REFUND WAS NOT MADE" for a refund the host may have made)."""
    flow = _resend()
    assert flow.handle(lost) == [ev.WriteOutcome(7, TxnEvent.ADVICE_FAILED)]
    assert next_state(TxnState.ADVICE_DUE, TxnEvent.ADVICE_FAILED) is TxnState.ADVICE_DUE
    flow.handle(ev.OutcomeWritten(_stored_refund(advice_attempts=2)))
    assert flow.resolved is False


@pytest.mark.parametrize("code", ["00", "94"])
def test_a_stored_refund_answered_00_or_94_is_acknowledged_and_its_receipt_prints(code: str):
    """00, and 94 (the host already has it: an earlier send got through, its reply was lost),
    both close a refund: APPROVED, receipt queued in the same commit, no "declined" slip."""
    flow = _resend()
    [out] = flow.handle(ev.ReplyReceived(Message("0230", {"39": code, "11": "000011"})))
    assert (out.event, out.receipt, out.declined_after_stored) == (
        TxnEvent.ADVICE_ACKED, True, False), out
    assert out.result is not None and out.result.response_code == code
    assert next_state(TxnState.ADVICE_DUE, out.event) is TxnState.APPROVED
    flow.handle(ev.OutcomeWritten(_stored_refund(state=TxnState.APPROVED, advice_attempts=2)))
    assert flow.resolved is True


def test_a_stored_refund_whose_resend_gets_no_reply_is_kept_and_sent_later(data_dir, sim):
    """On the wire: the first send and the first resend get no reply (the host never saw
    them). The refund stays owed, nothing is printed, nothing says it was declined; the next
    resend gets through and the host books it once."""
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 2500)).record
            sim.add_fault("drop", mti="0220", count=2, process=False)
            r = await refund(t, 2500, s.rrn, s.local_date)
            await t.clear_backlog()
            kept = t.journal.get(r.record.id)
            kept_jobs = _jobs(t.journal, r.record.id)
            declined = t.journal.declined_after_stored()
            host_then = [(x.kind, x.amount) for x in sim.ledger.approved(TID)]
            await t.clear_backlog()
            done = t.journal.get(r.record.id)
            return r, kept, kept_jobs, declined, host_then, done, _jobs(t.journal, r.record.id), t.journal
        finally:
            await t.link.channel.close()

    r, kept, kept_jobs, declined, host_then, done, done_jobs, journal = run(go())
    assert r.status == "stored"
    assert kept.state is TxnState.ADVICE_DUE and kept.advice_attempts == 2
    assert kept_jobs == [] and declined == []
    assert host_then == [("sale", 2500)]
    assert done.state is TxnState.APPROVED and done.advice_attempts == 3
    assert done_jobs == [("receipt", "QUEUED")]
    assert [(x.kind, x.amount) for x in sim.ledger.approved(TID)] == [("sale", 2500), ("refund", 2500)]
    assert_agree(journal, sim.ledger)


@pytest.mark.parametrize("when", ["first send", "resend"])
def test_a_refund_answered_94_is_approved_with_its_receipt_and_nothing_says_declined(
        data_dir, sim, when: str):
    """The host answers 94 ("duplicate: I already have it") to the refund, online or on a
    resend from the backlog: the refund is made. It is APPROVED with the answer kept, its
    receipt is queued, no slip says it was not made, and settlement is not held up by it."""
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 1800)).record
            if when == "resend":
                sim.add_fault("drop", mti="0220", count=1, process=False)
            sim.add_rule("94", mti="0220", count=1)
            r = await refund(t, 1800, s.rrn, s.local_date)
            if when == "resend":
                assert r.status == "stored", r
                await t.clear_backlog()
            else:
                assert r.status == "approved", r
            return (t.journal.get(r.record.id), _jobs(t.journal, r.record.id),
                    t.journal.declined_after_stored(), t.journal.unresolved_counts(), t.status())
        finally:
            await t.link.channel.close()

    record, jobs, declined, unresolved, status = run(go())
    assert record.state is TxnState.APPROVED and record.response_code == "94"
    assert jobs == [("receipt", "QUEUED")]
    assert declined == [] and status["refunds_declined"] == []
    assert not any(unresolved.values()), unresolved


def test_what_each_host_answer_does_to_a_stored_refund_is_the_documented_one():
    """docs/dialect.md, over every code of the catalog and one it does not know: 00 and 94
    acknowledge the refund; a "do not retry" code, and 30 (a format error comes back for the
    same bytes every time), finally decline it; everything else (96, 91, 98, 68, A0 and the
    other sign-on codes, an unknown code) keeps it stored to send again."""
    acked = {"00", "94"}
    declined = {c for c, rc in CODES.items() if rc.action is ActionClass.DO_NOT_RETRY} - acked
    declined |= {"30"}
    for code in [*CODES, "N7"]:
        want = "acked" if code in acked else "declined" if code in declined else "retry"
        assert advice_answer(code) == want, code
    assert {"96", "91", "98", "68", "A0", "22", "77", "99", "06", "55", "N7"} <= {
        c for c in [*CODES, "N7"] if advice_answer(c) == "retry"}
    assert {"05", "51", "30", "25"} <= {c for c in CODES if advice_answer(c) == "declined"}
