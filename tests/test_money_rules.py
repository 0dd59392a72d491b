"""The rules between operations (issue 12, items 1-4): what may follow what, checked locally
before anything is written, in one place (engine/validation.py), and enforced again on its own
by the simulator's host.

Each test runs the terminal in-process against the simulator over real TCP with real files.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from helpers import (
    MID,
    PASSWORD,
    TID,
    WireSpy,
    assert_agree,
    open_journal,
    provision,
    record_in_state,
    refund,
    run,
    sale,
    swipe,
    terminal,
    void,
)

from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.engine import events as ev
from firmware.engine.financial import FinancialFlow, FlowContext
from firmware.engine.model import OriginalRef, PendingDraft, TxnRequest
from firmware.engine.states import TxnEvent, TxnState
from firmware.engine.validation import check_original
from firmware.host.messages import CardInput, FinancialParams, TxnKind, financial_request
from firmware.host.messages import Terminal as Term


def _draft(kind: TxnKind, amount: int, **kw) -> PendingDraft:
    pan = "6222020000000000012"  # the simulator's cup_credit
    return PendingDraft(kind, amount, "156", pan, "622202*********0012", False, "swipe", False,
                        "01", "1122", "101010", **kw)


def _txn_count(t) -> int:
    return len(t.journal.records())


def _ledger(sim) -> list[tuple[str, str, int]]:
    return [(r.kind, r.response_code, r.amount) for r in sim.ledger.approved(TID)]


# -- item 1: a refund whose original is not in this journal --------------------------------

def test_a_refund_of_a_sale_from_elsewhere_goes_with_zeros_in_61_and_blocks_nothing(tmp_path, sim):
    """The original was made on the terminal this one replaced (same TID, another journal): the
    refund names only RRN and date. It went into the journal as an advice that could never be
    encoded, and every later operation (and start-up) failed."""
    old = provision(tmp_path / "old", sim.port)
    new = provision(tmp_path / "new", sim.port)

    async def go():
        t = await terminal(old)
        original = (await sale(t, 5000)).record
        await t.close()
        t = await terminal(new)
        spy = WireSpy(t)
        try:
            r = await refund(t, 2000, original.rrn, original.local_date)
            assert r.status == "approved", r
            advice = [m for m in spy.sent if m.mti == "0220"][-1]
            assert advice.fields["61"] == "000000" + "000000" + original.local_date
            assert advice.fields["37"] == original.rrn
            assert (await sale(t, 100)).status == "approved"
        finally:
            await t.close()
        t = await terminal(new)  # and it starts again with nothing owed
        try:
            assert not any(t.journal.unresolved_counts().values())
            return t.journal.records()
        finally:
            await t.close()

    records = run(go())
    assert [(r.kind, r.state) for r in records] == [
        (TxnKind.REFUND, TxnState.APPROVED), (TxnKind.SALE, TxnState.APPROVED)]
    assert _ledger(sim) == [("sale", "00", 5000), ("refund", "00", 2000), ("sale", "00", 100)]


@pytest.mark.parametrize(("rrn", "date", "key"), [
    ("12345", "1201", "original_reference_invalid"),
    ("1234567890 1", "1201", "original_reference_invalid"),
    ("123456789012", "1301", "original_date_invalid"),
    ("123456789012", "0230", "original_date_invalid"),
    ("123456789012", "１２０１", "original_date_invalid"),
])
def test_a_refund_the_wire_cannot_carry_is_refused_in_words_and_nothing_is_written(
        data_dir, sim, rrn, date, key):
    async def go():
        t = await terminal(data_dir)
        try:
            r = await refund(t, 100, rrn, date)
            return r, _txn_count(t)
        finally:
            await t.close()

    r, count = run(go())
    assert (r.status, r.message_key) == ("refused", key) and r.detail
    assert count == 0 and sim.ledger.approved(TID) == []


def test_the_request_is_built_once_before_anything_is_written():
    """Whatever the validation misses, a request the builder refuses is never written: here a
    currency the wire cannot carry (field 49 needs 3 digits)."""
    ctx = FlowContext(term=Term(TID, MID), batch="000001", now=datetime(2026, 12, 1, 10, 0),
                      currency="1X6")
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 100), ctx)
    actions = flow.start()
    assert isinstance(actions[0], ev.AskCard)
    actions = flow.handle(ev.CardPresented(swipe("cup_credit")))
    assert not any(isinstance(a, ev.WritePending) for a in actions), actions
    finish = actions[-1]
    assert isinstance(finish, ev.Finish)
    assert finish.result.status == "refused" and finish.result.message_key == "cannot_send"
    assert "currency" in finish.result.detail


# -- item 2: refunds against a voided or fully refunded original ----------------------------

def test_a_voided_sale_cannot_be_refunded(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 3000)).record
            assert (await void(t, s.invoice)).status == "approved"
            before = _txn_count(t)
            r = await refund(t, 3000, s.rrn, s.local_date)
            return r, before, _txn_count(t), t.journal
        finally:
            await t.link.channel.close()

    r, before, after, journal = run(go())
    assert (r.status, r.message_key) == ("refused", "original_already_voided")
    assert before == after  # nothing written
    assert _ledger(sim) == [("sale", "00", 3000), ("void", "00", 3000)]
    assert_agree(journal, sim.ledger)


def test_refunds_against_one_original_never_exceed_it(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 5000)).record
            steps = [(await refund(t, amount, s.rrn, s.local_date)) for amount in
                     (3000, 2500, 2000, 1)]
            return steps, t.journal
        finally:
            await t.link.channel.close()

    steps, journal = run(go())
    assert [(r.status, r.message_key) for r in steps] == [
        ("approved", "00"), ("refused", "refund_over_original"), ("approved", "00"),
        ("refused", "refund_over_original")]
    assert "2000 fen of 5000" in steps[1].detail  # what is left, in words
    assert _ledger(sim) == [("sale", "00", 5000), ("refund", "00", 3000), ("refund", "00", 2000)]
    assert_agree(journal, sim.ledger)


def test_a_stored_refund_counts_against_its_original_before_the_host_has_it(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 5000)).record
            sim.add_fault("drop", mti="0220", count=-1, process=False)
            stored = await refund(t, 5000, s.rrn, s.local_date)
            more = await refund(t, 1, s.rrn, s.local_date)  # the first is still owed
            voided = await void(t, s.invoice)
            return stored, more, voided, t.journal.records()
        finally:
            await t.link.channel.close()

    stored, more, voided, records = run(go())
    assert stored.status == "stored"
    assert (more.status, more.message_key) == ("refused", "refund_over_original")
    assert (voided.status, voided.message_key) == ("refused", "original_refunded")
    assert [r.state for r in records] == [TxnState.APPROVED, TxnState.ADVICE_DUE]


# The refund ceiling, one kind of earlier refund at a time (issue 14): what is left to refund
# on a sale counts every refund that is approved, stored (sent or never sent yet), owed a
# reversal or set aside, and none that is declined, reversed, failed or voided.
_CEILING_CASES = [
    ("stored, never sent", TxnState.ADVICE_DUE, (), True),
    ("stored, its send got no reply", TxnState.ADVICE_DUE, (TxnEvent.ADVICE_FAILED,), True),
    ("approved", TxnState.APPROVED, (), True),
    ("owed a reversal", TxnState.REVERSAL_DUE, (), True),
    ("set aside", TxnState.QUARANTINED, (), True),
    ("declined", TxnState.DECLINED, (), False),
    ("reversed", TxnState.REVERSED, (), False),
    ("failed", TxnState.FAILED, (), False),
    ("voided", TxnState.VOIDED, (), False),
]


@pytest.mark.parametrize(("what", "state", "then", "counts"), _CEILING_CASES,
                         ids=[c[0] for c in _CEILING_CASES])
def test_the_refund_ceiling_counts_each_kind_of_earlier_refund(tmp_path, what, state, then,
                                                                counts):
    """A 50.00 sale with one earlier refund of 30.00 in the given state. The terminal's own
    lookup (journal, then validation.check_original, as the engine runs it) leaves 20.00 to
    refund when that refund counts and 50.00 when it does not, to the fen: one fen more is
    refused "refund_over_original"."""
    data_dir = provision(tmp_path / "terminal", sim_port=9)  # never connected
    j = open_journal(data_dir)
    try:
        s = record_in_state(j, _draft(TxnKind.SALE, 5000), TxnState.APPROVED)
        r = record_in_state(j, _draft(TxnKind.REFUND, 3000, orig_id=s.id, orig_rrn=s.rrn,
                                      orig_date=s.local_date), state)
        for event in then:
            r = j.apply(r.id, event)
        assert r.state is state and (r.advice_attempts, what) == (len(then), what)
        batch = j.current_batch()
    finally:
        j.close()

    async def go():
        t = Terminal(AppConfig(data_dir=data_dir))
        await t.open()
        try:
            ref, _ = t.check_follow_up(TxnKind.REFUND, OriginalRef(rrn=s.rrn, date=s.local_date))
            return ref
        finally:
            await t.close()

    ref = run(go())
    left = 2000 if counts else 5000
    assert (ref.amount, ref.refunded) == (5000, 5000 - left)
    assert check_original(TxnRequest(TxnKind.REFUND, left, original=ref), batch) is None
    over = check_original(TxnRequest(TxnKind.REFUND, left + 1, original=ref), batch)
    assert over is not None and over.key == "refund_over_original"
    assert f"{left} fen of 5000" in over.detail


# -- item 3: a refund to another card ------------------------------------------------------

def test_a_refund_goes_back_to_the_card_that_paid(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 4000, card="cup_credit")).record
            other = await refund(t, 4000, s.rrn, s.local_date, card="visa")
            same = await refund(t, 4000, s.rrn, s.local_date, card="cup_credit")
            return other, same, t.journal
        finally:
            await t.link.channel.close()

    other, same, journal = run(go())
    assert (other.status, other.message_key) == ("refused", "refund_card_differs")
    assert other.record is None and "ending" in other.detail
    assert same.status == "approved"
    assert _ledger(sim) == [("sale", "00", 4000), ("refund", "00", 4000)]
    lines = journal.audit_lines(50)
    assert any(action == "refund refused" and "not the one" in detail
               for _, _, action, detail, _ in lines)


# -- item 4: paid out twice, no fault needed -----------------------------------------------

def test_a_refunded_sale_cannot_be_voided_at_the_terminal_or_at_the_host(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 6000)).record
            assert (await refund(t, 6000, s.rrn, s.local_date)).status == "approved"
            local = await void(t, s.invoice)
            # The host on its own: the same void sent straight to it, past the terminal's check.
            params = FinancialParams(
                TxnKind.VOID, t.journal.allocate_stan(), t.journal.current_batch(), t.term, 6000,
                card=CardInput("keyed", t.journal.decrypt_pan(s.id)), orig_rrn=s.rrn,
                orig_auth=s.auth_code, orig_batch=s.batch, orig_stan=s.stan)
            reply = await t.link.request(financial_request(params), mac=True, timeout=5)
            return local, reply.fields["39"], t.journal
        finally:
            await t.link.channel.close()

    local, host_code, journal = run(go())
    assert (local.status, local.message_key) == ("refused", "original_refunded")
    assert host_code == "12"
    assert _ledger(sim) == [("sale", "00", 6000), ("refund", "00", 6000)]
    assert_agree(journal, sim.ledger)


def test_a_voided_sale_is_refused_a_refund_by_the_host_too(data_dir, sim):
    """The other order, at the host alone: a refund sent straight to it after the void."""
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 2500)).record
            assert (await void(t, s.invoice)).status == "approved"
            params = FinancialParams(
                TxnKind.REFUND, t.journal.allocate_stan(), t.journal.current_batch(), t.term, 2500,
                card=CardInput("keyed", t.journal.decrypt_pan(s.id)), orig_rrn=s.rrn,
                orig_batch=s.batch, orig_stan=s.stan, orig_date=s.local_date)
            reply = await t.link.request(financial_request(params), mac=True, timeout=5)
            return reply.fields["39"]
        finally:
            await t.close()

    assert run(go()) == "12"
    assert _ledger(sim) == [("sale", "00", 2500), ("void", "00", 2500)]


def test_a_completed_preauth_cannot_be_voided_or_completed_again(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        io = OperatorInput(card=swipe("cup_credit"))
        try:
            pre = (await t.financial(TxnRequest(TxnKind.PREAUTH, 9000), io)).record
            completion = await t.financial(TxnRequest(
                TxnKind.COMPLETION, 8000, original=OriginalRef(invoice=pre.invoice)), OperatorInput())
            again = await t.financial(TxnRequest(
                TxnKind.COMPLETION, 1000, original=OriginalRef(invoice=pre.invoice)), OperatorInput())
            pre_void = await t.financial(TxnRequest(
                TxnKind.PREAUTH_VOID, original=OriginalRef(invoice=pre.invoice)),
                OperatorInput(password=PASSWORD))
            return completion, again, pre_void
        finally:
            await t.close()

    completion, again, pre_void = run(go())
    assert completion.status == "approved"
    assert (again.status, again.message_key) == ("refused", "preauth_completed")
    assert (pre_void.status, pre_void.message_key) == ("refused", "preauth_completed")


def test_the_keypad_lookup_applies_the_same_rule(data_dir, sim):
    """What the operator is shown on naming a trace is what the void would get."""
    async def go():
        t = await terminal(data_dir)
        try:
            s = (await sale(t, 700)).record
            before, _ = t.check_follow_up(TxnKind.VOID, OriginalRef(invoice=s.invoice))
            assert (await refund(t, 100, s.rrn, s.local_date)).status == "approved"
            after, refusal = t.check_follow_up(TxnKind.VOID, OriginalRef(invoice=s.invoice))
            return before, after, refusal
        finally:
            await t.close()

    before, after, refusal = run(go())
    assert before.follow_ups == () and after.follow_ups == (TxnKind.REFUND,)
    assert refusal is not None and refusal.key == "original_refunded"
