"""The engine without any I/O: feed events, read actions, with a fixed clock.

Proves the write-ahead order (nothing is sent before PendingWritten), that CANCEL
before the write leaves no record, the reversal reason for each lost reply, the "failed"
results (never sent, enquiry unanswered), a 0510 that settles nothing, and each local
refusal's key and words.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from firmware.engine import events as ev
from firmware.engine.backlog import AdviceFlow, ReversalFlow
from firmware.engine.financial import FinancialFlow, FlowContext
from firmware.engine.model import CardRead, OriginalRef, TxnRecord, TxnRequest
from firmware.engine.settlement import SettlementFlow
from firmware.engine.states import TxnEvent, TxnState
from firmware.engine.validation import Limits, check_card, check_original
from firmware.host.messages import Message, SideTotals, Terminal, TxnKind, settlement_field48

NOW = datetime(2026, 11, 22, 10, 30, 0)
CTX = FlowContext(term=Terminal("12345678", "123456789012345"), batch="000001", now=NOW,
                  reply_timeout=5.0)
CARD = CardRead("swipe", "6225880000000001", "3012", "101", "6225880000000001=30121010000000000000")
PIN_CARD = CardRead("swipe", "6222021000000000017", "3012", "120",
                    "6222021000000000017=30121200000000000")


def record(state=TxnState.PENDING, **kw) -> TxnRecord:
    base = dict(id=1, kind=TxnKind.SALE, state=state, stan="000007", batch="000001",
                invoice="000003", amount=1000, currency="156", pan_masked="622588******0001",
                foreign=False, entry_mode="swipe", pin_entered=False, operator="01",
                local_date="1122", local_time="103000", created_at=0.0, pos_entry="022")
    base.update(kw)
    return TxnRecord(**base)


def drive_to_send(flow: FinancialFlow, card: CardRead = CARD) -> list:
    actions = flow.start()
    assert isinstance(actions[0], ev.AskCard)
    actions = flow.handle(ev.CardPresented(card))
    if isinstance(actions[0], ev.AskPin):
        actions = flow.handle(ev.PinEntered(b"\x11" * 8))
    assert isinstance(actions[0], ev.WritePending), actions
    return flow.handle(ev.PendingWritten(record()))


def test_nothing_is_sent_before_the_pending_record_is_written():
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    actions = drive_to_send(flow)
    assert isinstance(actions[0], ev.SendRequest)
    assert actions[0].message.fields["11"] == "000007"  # the STAN the journal consumed
    assert actions[0].mac is True


@pytest.mark.parametrize("steps", [0, 1])
def test_cancel_before_the_write_leaves_no_record(steps):
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), FlowContext(**{**CTX.__dict__}))
    flow.start()
    if steps:
        acts = flow.handle(ev.CardPresented(PIN_CARD))
        assert isinstance(acts[0], ev.AskPin)
    actions = flow.handle(ev.Cancel())
    assert not any(isinstance(a, ev.WritePending) for a in actions)
    assert isinstance(actions[-1], ev.Finish) and actions[-1].result.status == "cancelled"
    assert isinstance(actions[0], ev.AuditNote)
    # The words name the step the operator left at: waiting for the card, or for the PIN.
    step = "pin" if steps else "card"
    assert actions[-1].result.detail == f"cancelled at step {step}"
    assert actions[0].detail == f"at step {step}"


@pytest.mark.parametrize("reason,code", [("timeout", "98"), ("bad_mac", "A0"), ("link", "06"),
                                         ("malformed", "06"), ("cancelled", "06")])
def test_lost_reply_means_reversal_due_with_the_right_reason(reason, code):
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    drive_to_send(flow)
    actions = flow.handle(ev.ReplyLost(reason))
    assert actions == [ev.WriteOutcome(1, TxnEvent.LOSE_REPLY, reversal_reason=code)]
    final = flow.handle(ev.OutcomeWritten(record(TxnState.REVERSAL_DUE)))
    # The till is told the operator cancelled after the request left only when they did.
    assert final[-1].result.status == (
        "cancelled_after_send" if reason == "cancelled" else "reversal_pending")


def test_cancel_while_awaiting_the_reply_is_a_lost_reply():
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    drive_to_send(flow)
    actions = flow.handle(ev.Cancel())
    assert actions[0].event is TxnEvent.LOSE_REPLY


def test_approval_is_reported_only_after_it_is_durable():
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    drive_to_send(flow)
    reply = Message("0210", {"39": "00", "37": "123456789012", "38": "AB12CD", "63": "CUP"})
    actions = flow.handle(ev.ReplyReceived(reply))
    assert [type(a) for a in actions] == [ev.WriteOutcome]  # no Finish yet
    final = flow.handle(ev.OutcomeWritten(record(TxnState.APPROVED)))
    assert final[-1].result.status == "approved"


def test_void_needs_the_supervisor_and_names_its_original():
    orig = OriginalRef(record_id=5, kind=TxnKind.SALE, state=TxnState.APPROVED, amount=1000,
                       batch="000001", trace="000002", rrn="123456789012", auth_code="AB12CD",
                       date="1122", pan="6225880000000001")
    flow = FinancialFlow(TxnRequest(TxnKind.VOID, original=orig), CTX)
    assert isinstance(flow.start()[0], ev.AskAuthorisation)
    refused = FinancialFlow(TxnRequest(TxnKind.VOID, original=orig), CTX)
    refused.start()
    assert refused.handle(ev.Authorised(False))[-1].result.message_key == "password_wrong"
    actions = flow.handle(ev.Authorised(True))
    assert isinstance(actions[0], ev.WritePending) and actions[0].draft.orig_id == 5
    flow.handle(ev.PendingWritten(record(kind=TxnKind.VOID, orig_rrn="123456789012",
                                         orig_auth="AB12CD", orig_batch="000001",
                                         orig_stan="000002")))
    approved = flow.handle(ev.ReplyReceived(Message("0210", {"39": "00"})))
    assert approved[0].void_of == 5


# -- the failed results: nothing moved, and the words say why ----------------------------------

REFUND_OF = OriginalRef(amount=1000, rrn="123456789012", date="1120")


def drive_to_write(flow: FinancialFlow) -> None:
    """Up to the WritePending of a sale (card) or an outside-reference refund (supervisor, card)."""
    actions = flow.start()
    if isinstance(actions[0], ev.AskAuthorisation):
        actions = flow.handle(ev.Authorised(True))
    assert isinstance(actions[0], ev.AskCard), actions
    actions = flow.handle(ev.CardPresented(CARD))
    assert isinstance(actions[0], ev.WritePending), actions


@pytest.mark.parametrize(("kind", "event", "state"), [
    (TxnKind.SALE, TxnEvent.NOT_SENT, TxnState.FAILED),
    (TxnKind.REFUND, TxnEvent.QUARANTINE, TxnState.QUARANTINED),
])
def test_a_request_the_wire_cannot_carry_after_the_write_is_never_sent(kind, event, state):
    """The request is built once before the write; if the written record still cannot be sent
    (a counter the journal allocated is broken: a 7-digit STAN), nothing leaves the terminal.
    A sale ends NOT_SENT (FAILED: no money moved, nothing to reverse); a refund advice, which the
    host is owed, is QUARANTINED for the supervisor. The till is told "failed, cannot_send" with
    the reason in words."""
    flow = FinancialFlow(TxnRequest(kind, 1000, original=REFUND_OF if kind is TxnKind.REFUND
                                    else None), CTX)
    drive_to_write(flow)
    actions = flow.handle(ev.PendingWritten(record(kind=kind, stan="1234567", orig_rrn="123456789012",
                                                   orig_date="1120")))
    assert not any(isinstance(a, ev.SendRequest) for a in actions)
    assert len(actions) == 1 and actions[0].event is event
    assert "STAN" in actions[0].problem
    final = flow.handle(ev.OutcomeWritten(record(state, kind=kind)))
    result = final[-1].result
    assert (result.status, result.message_key) == ("failed", "cannot_send")
    assert "STAN (field 11) must be 6 digits" in result.detail


def test_a_balance_enquiry_whose_reply_is_lost_fails_and_is_never_reversed():
    """An enquiry moves no money: a lost reply ends it FAILED (LOSE_ENQUIRY_REPLY, no reversal
    reason), and the till is told "failed, no_reply" with why."""
    flow = FinancialFlow(TxnRequest(TxnKind.BALANCE), CTX)
    actions = drive_to_send(flow)
    assert isinstance(actions[0], ev.SendRequest)
    actions = flow.handle(ev.ReplyLost("timeout"))
    assert actions == [ev.WriteOutcome(1, TxnEvent.LOSE_ENQUIRY_REPLY)]
    final = flow.handle(ev.OutcomeWritten(record(TxnState.FAILED, kind=TxnKind.BALANCE)))
    result = final[-1].result
    assert (result.status, result.message_key, result.detail) == ("failed", "no_reply", "timeout")


def test_cancel_while_the_outcome_is_being_written_changes_nothing():
    """Once the reply is being made durable, CANCEL does nothing: the approval is reported as
    it is (no reversal, no second outcome)."""
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    drive_to_send(flow)
    flow.handle(ev.ReplyReceived(Message("0210", {"39": "00", "37": "123456789012"})))
    assert flow.handle(ev.Cancel()) == []
    final = flow.handle(ev.OutcomeWritten(record(TxnState.APPROVED)))
    assert final[-1].result.status == "approved"


# -- settlement: a 0510 that settles nothing ----------------------------------------------------

DOMESTIC, FOREIGN = SideTotals(5000, 2, 1000, 1), SideTotals(0, 0, 0, 0)


@pytest.mark.parametrize(("fields", "why"), [
    ({"39": "05", "48": settlement_field48(DOMESTIC, FOREIGN)}, "host refused the settlement (05)"),
    ({"39": "00", "48": "12345"}, "settlement reply unreadable: "),
])
def test_a_refused_or_unreadable_settlement_reply_abandons_the_settlement(fields, why):
    """A 0510 that is not 00, or whose field 48 cannot be read, settles nothing: the row is
    abandoned with the reason in words (the batch stays open, settlement may start again), no
    upload or upload end follows, and the operator is told "failed, settlement_no_reply"."""
    flow = SettlementFlow(CTX.term, "000001", "01", "156", 5.0, DOMESTIC, FOREIGN)
    assert flow.start() == [ev.AllocateStan()]
    flow.handle(ev.StanAllocated("000010"))
    sent = flow.handle(ev.SettlementBegun(7))
    assert isinstance(sent[0], ev.SendRequest) and sent[0].message.mti == "0500"
    actions = flow.handle(ev.ReplyReceived(Message("0510", fields)))
    assert len(actions) == 1 and isinstance(actions[0], ev.AbandonSettlement)
    assert actions[0].settlement_id == 7 and actions[0].reason.startswith(why)
    final = flow.handle(ev.Done())
    assert len(final) == 1 and isinstance(final[0], ev.Finish)
    result = final[0].result
    assert (result.status, result.message_key, result.detail) == (
        "failed", "settlement_no_reply", actions[0].reason)


def test_cancel_before_the_0500_leaves_ends_the_settlement_with_nothing_sent():
    """Settlement's own cancel rule (the app asks at the review, before this flow starts, but
    the engine keeps the contract): CANCEL while the STAN or the journal row is being taken
    ends it "cancelled, settlement not sent", and nothing more is asked for: a later event is
    an error. A settlement not yet started may be cancelled too."""
    for steps in ([], [ev.StanAllocated("000010")]):
        flow = SettlementFlow(CTX.term, "000001", "01", "156", 5.0, DOMESTIC, FOREIGN)
        assert flow.cancellable
        flow.start()
        for event in steps:
            assert not any(isinstance(a, ev.SendRequest) for a in flow.handle(event))
        assert flow.cancellable
        actions = flow.handle(ev.Cancel())
        assert len(actions) == 1 and isinstance(actions[0], ev.Finish)
        result = actions[0].result
        assert (result.status, result.message_key, result.detail) == (
            "cancelled", "cancelled", "settlement not sent")
        with pytest.raises(TypeError, match="at done"):
            flow.handle(ev.StanAllocated("000011"))


def test_cancel_after_the_0500_left_changes_nothing_settlement_runs_to_its_end():
    """Once the 0500 is on the wire the host may have closed the batch: CANCEL is ignored and
    the reply is still recorded."""
    flow = SettlementFlow(CTX.term, "000001", "01", "156", 5.0, DOMESTIC, FOREIGN)
    flow.start()
    flow.handle(ev.StanAllocated("000010"))
    sent = flow.handle(ev.SettlementBegun(7))
    assert isinstance(sent[0], ev.SendRequest) and sent[0].message.mti == "0500"
    assert not flow.cancellable
    assert flow.handle(ev.Cancel()) == []
    reply = Message("0510", {"39": "00", "48": settlement_field48(DOMESTIC, FOREIGN)})
    after = flow.handle(ev.ReplyReceived(reply))
    assert after and not any(isinstance(a, ev.Finish) and a.result.status == "cancelled"
                             for a in after)


# -- local refusals: each one's key and words ---------------------------------------------------

PREAUTH = OriginalRef(record_id=3, kind=TxnKind.PREAUTH, state=TxnState.APPROVED, amount=1000,
                      batch="000001", trace="000002", rrn="123456789012", auth_code="AB12CD",
                      date="1122", pan="6225880000000001")


@pytest.mark.parametrize("expiry", ["3013", "30A1", "301", "3000"])
def test_a_card_whose_expiry_cannot_be_read_is_refused_as_invalid(expiry):
    """An expiry that is not YYMM with a real month is refused "card_invalid" in words; it is
    never compared as if it were a date."""
    card = CardRead("swipe", CARD.pan, expiry, "101", CARD.track2)
    refusal = check_card(card, "2611", Limits())
    assert refusal is not None
    assert (refusal.key, refusal.detail) == ("card_invalid", "the card's expiry date cannot be read")


@pytest.mark.parametrize("kind", [TxnKind.VOID, TxnKind.REFUND, TxnKind.COMPLETION,
                                  TxnKind.PREAUTH_VOID, TxnKind.COMPLETION_VOID])
def test_a_follow_up_without_its_original_is_refused(kind):
    """A void, refund or completion that names no original is refused before anything is
    written: "original_not_found", "no original transaction was given"."""
    refusal = check_original(TxnRequest(kind, 1000), "000001")
    assert refusal is not None
    assert (refusal.key, refusal.detail) == ("original_not_found",
                                             "no original transaction was given")


def test_a_completion_over_the_preauthorised_amount_is_refused_and_up_to_it_is_not():
    """A completion may take at most what was pre-authorised: 1 fen over is refused
    "completion_over_preauth"; the whole amount is allowed."""
    refusal = check_original(TxnRequest(TxnKind.COMPLETION, 1001, original=PREAUTH), "000001")
    assert refusal is not None
    assert (refusal.key, refusal.detail) == ("completion_over_preauth",
                                             "the completion exceeds the pre-authorised amount")
    assert check_original(TxnRequest(TxnKind.COMPLETION, 1000, original=PREAUTH), "000001") is None


@pytest.mark.parametrize(("what", "value"), [("batch", "12345"), ("batch", "00000A"),
                                             ("trace", "1234567"), ("trace", "")])
def test_a_refund_naming_a_batch_or_trace_that_is_not_6_digits_is_refused(what, value):
    """A refund's original batch and trace travel in 61.1 and 61.2 as 6 digits: anything else
    is refused "original_not_found" naming the field, before anything is written."""
    original = OriginalRef(amount=1000, rrn="123456789012", date="1120", **{what: value})
    refusal = check_original(TxnRequest(TxnKind.REFUND, 500, original=original), "000001")
    assert refusal is not None
    assert (refusal.key, refusal.detail) == ("original_not_found",
                                             f"the original {what} must be 6 digits")


# -- whose card: read, or the original's --------------------------------------------------------

ORIGINAL_KIND = {TxnKind.VOID: TxnKind.SALE, TxnKind.REFUND: TxnKind.SALE,
                 TxnKind.PREAUTH_VOID: TxnKind.PREAUTH, TxnKind.COMPLETION: TxnKind.PREAUTH,
                 TxnKind.COMPLETION_VOID: TxnKind.COMPLETION}
# docs/states.md, written out by hand: these go to the card of their original.
CARD_OF_THE_ORIGINAL = {TxnKind.VOID, TxnKind.PREAUTH_VOID, TxnKind.COMPLETION,
                        TxnKind.COMPLETION_VOID}
ORIGINAL_PAN = "6222020000000000012"
GIVES_MONEY_BACK = {TxnKind.VOID, TxnKind.PREAUTH_VOID, TxnKind.COMPLETION_VOID, TxnKind.REFUND}


@pytest.mark.parametrize("kind", list(TxnKind))
def test_money_back_asks_the_supervisor_and_a_void_or_completion_uses_the_originals_card(kind):
    """docs/states.md: a void, pre-auth void, completion void and refund ask for the supervisor
    password before anything else; a sale, pre-auth, completion and balance never do. A void,
    pre-auth void, completion and completion void never ask for a card: the request
    carries the original's PAN from the journal (the money goes back where it came from, and a
    different card cannot be presented in its place). A sale, pre-auth, balance enquiry and
    refund always ask for the card before anything is written."""
    original = None
    if kind in ORIGINAL_KIND:
        original = OriginalRef(record_id=5, kind=ORIGINAL_KIND[kind], state=TxnState.APPROVED,
                               amount=5000, batch="000001", trace="000002", rrn="123456789012",
                               auth_code="AB12CD", date="1122", pan=ORIGINAL_PAN)
    amount = None if kind in (TxnKind.BALANCE, TxnKind.VOID, TxnKind.PREAUTH_VOID,
                              TxnKind.COMPLETION_VOID) else 1000
    flow = FinancialFlow(TxnRequest(kind, amount, original=original), CTX)
    actions = flow.start()
    # Whatever gives money back asks for the supervisor first; nothing else does.
    assert isinstance(actions[0], ev.AskAuthorisation) is (kind in GIVES_MONEY_BACK), actions
    if isinstance(actions[0], ev.AskAuthorisation):
        actions = flow.handle(ev.Authorised(True))
    if kind in CARD_OF_THE_ORIGINAL:
        assert isinstance(actions[0], ev.WritePending), actions
        assert actions[0].draft.pan == ORIGINAL_PAN
    else:
        assert isinstance(actions[0], ev.AskCard), actions
        assert actions[0].purpose == kind.value


# -- which follow-ups end an original's life for which (validation.check_original) ------------

# docs/states.md, by hand: (follow-up asked for, earlier live follow-up of the original) -> the
# refusal. An original is voided or refunded, never both; a completed pre-auth is neither voided
# nor completed again; a void of any kind keeps it from being voided again.
BLOCKS: dict[tuple[TxnKind, TxnKind], str] = {
    (TxnKind.VOID, TxnKind.VOID): "original_void_open",
    (TxnKind.VOID, TxnKind.REFUND): "original_refunded",
    (TxnKind.REFUND, TxnKind.VOID): "original_void_open",
    (TxnKind.REFUND, TxnKind.COMPLETION_VOID): "original_void_open",
    (TxnKind.COMPLETION_VOID, TxnKind.COMPLETION_VOID): "original_void_open",
    (TxnKind.COMPLETION_VOID, TxnKind.REFUND): "original_refunded",
    (TxnKind.PREAUTH_VOID, TxnKind.PREAUTH_VOID): "original_void_open",
    (TxnKind.PREAUTH_VOID, TxnKind.COMPLETION): "preauth_completed",
    (TxnKind.COMPLETION, TxnKind.COMPLETION): "preauth_completed",
    (TxnKind.COMPLETION, TxnKind.PREAUTH_VOID): "original_void_open",
}
FOLLOW_UPS = [TxnKind.VOID, TxnKind.REFUND, TxnKind.PREAUTH_VOID, TxnKind.COMPLETION,
              TxnKind.COMPLETION_VOID]
# The kind of original each follow-up refers to (a refund may also return a completion's money).
REFERS_TO = {TxnKind.VOID: (TxnKind.SALE,), TxnKind.REFUND: (TxnKind.SALE, TxnKind.COMPLETION),
             TxnKind.PREAUTH_VOID: (TxnKind.PREAUTH,), TxnKind.COMPLETION: (TxnKind.PREAUTH,),
             TxnKind.COMPLETION_VOID: (TxnKind.COMPLETION,)}


def _original(kind: TxnKind, follow_ups: tuple[TxnKind, ...] = (), batch: str = "000001"):
    return OriginalRef(record_id=5, kind=kind, state=TxnState.APPROVED, amount=5000, batch=batch,
                       trace="000002", rrn="123456789012", auth_code="AB12CD", date="1122",
                       pan="6225880000000001", follow_ups=follow_ups)


@pytest.mark.parametrize("kind", FOLLOW_UPS)
def test_each_follow_up_refers_to_its_own_kind_of_original_and_what_came_before_blocks_it(kind):
    """Over every follow-up, every kind of original, and every earlier live follow-up of the
    original: a follow-up is refused "original_wrong_type" unless its original is of the kind it
    refers to (a void a sale, a refund a sale or completion, a pre-auth void or completion a
    pre-auth, a completion void a completion); on the right original it is refused exactly by the
    earlier follow-ups of docs/states.md, each with its own words, and allowed after any other."""
    amount = 1000 if kind in (TxnKind.REFUND, TxnKind.COMPLETION) else None
    for original_kind in TxnKind:
        refusal = check_original(TxnRequest(kind, amount, original=_original(original_kind)),
                                 "000001")
        if original_kind in REFERS_TO[kind]:
            assert refusal is None, (original_kind, refusal)
        else:
            assert refusal is not None and refusal.key == "original_wrong_type", original_kind
    for original_kind in REFERS_TO[kind]:
        for earlier in TxnKind:
            request = TxnRequest(kind, amount, original=_original(original_kind, (earlier,)))
            refusal = check_original(request, "000001")
            key = None if refusal is None else refusal.key
            assert key == BLOCKS.get((kind, earlier)), (original_kind, earlier, refusal)


@pytest.mark.parametrize("kind", FOLLOW_UPS)
def test_only_a_void_or_completion_void_must_stay_in_the_open_batch(kind):
    """A void and a completion void of an original from a settled batch are refused
    "original_settled" (the host cannot void it: refund it instead); a refund, a pre-auth void
    and a completion may refer to an earlier batch."""
    amount = 1000 if kind in (TxnKind.REFUND, TxnKind.COMPLETION) else None
    request = TxnRequest(kind, amount, original=_original(REFERS_TO[kind][0], batch="000000"))
    refusal = check_original(request, "000001")
    key = None if refusal is None else refusal.key
    assert key == ("original_settled" if kind in (TxnKind.VOID, TxnKind.COMPLETION_VOID) else None)


@pytest.mark.parametrize(("code", "event"), [("00", TxnEvent.REVERSAL_ACKED),
                                             ("25", TxnEvent.REVERSAL_ACKED),
                                             ("96", TxnEvent.REVERSAL_FAILED),
                                             ("05", TxnEvent.REVERSAL_FAILED),
                                             ("XX", TxnEvent.REVERSAL_FAILED)])
def test_a_reversal_is_closed_by_00_or_25_and_kept_owed_by_any_other_answer(code, event):
    """docs/states.md: the host answering a 0400 with 00 (reversed) or 25 (original not found:
    nothing to reverse) closes it; any other code leaves it REVERSAL_DUE with the attempt
    counted."""
    owed = record(TxnState.REVERSAL_DUE, reversal_reason="98")
    flow = ReversalFlow(owed, "6225880000000001", CTX.term, 5.0)
    [send] = flow.start()
    assert isinstance(send, ev.SendRequest) and send.message.mti == "0400"
    [out] = flow.handle(ev.ReplyReceived(Message("0410", {"39": code})))
    assert (out.record_id, out.event, out.result.response_code) == (1, event, code)


def test_a_refusal_and_the_limits_cannot_be_changed_once_made():
    """A Refusal (what the operator is told) and the Limits every check reads are values: a
    caller cannot reword one or raise the other for every later check."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        Limits().max_amount = 1  # type: ignore[misc]
    refusal = check_original(TxnRequest(TxnKind.VOID), "000001")
    assert refusal is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        refusal.key = "approved"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        CTX.batch = "000002"  # type: ignore[misc]
    assert isinstance(CTX, FlowContext)  # the flow's context is as fixed as its limits


# -- PIN: how many tries, when a bypass is offered, what the record keeps -----------------------

def _pin_round(flow: FinancialFlow, code: str, state: TxnState) -> list:
    """Send the written attempt, answer it with `code`, make the outcome durable."""
    flow.handle(ev.PinEntered(b"\x11" * 8))
    sent = flow.handle(ev.PendingWritten(record()))
    assert isinstance(sent[0], ev.SendRequest), sent
    flow.handle(ev.ReplyReceived(Message("0210", {"39": code})))
    return flow.handle(ev.OutcomeWritten(record(state)))


@pytest.mark.parametrize("last", ["55", "51"])
def test_three_wrong_pins_end_the_sale_and_a_later_decline_keeps_its_own_code(last):
    """The cardholder has 3 PIN tries by default: a PIN answered 55 (wrong PIN) is asked again
    with 2, then 1 tries left; a third 55 ends the sale "pin_tries_used" after 3 PINs. Any
    other answer to the third PIN is declined with its own code (51: not "pin_tries_used")."""
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    flow.start()
    asked = flow.handle(ev.CardPresented(PIN_CARD))
    assert (asked[0].attempt, asked[0].tries_left) == (1, None)
    for attempt, left in ((2, 2), (3, 1)):
        asked = _pin_round(flow, "55", TxnState.DECLINED)
        assert isinstance(asked[0], ev.AskPin), asked
        assert (asked[0].attempt, asked[0].tries_left) == (attempt, left)
    result = _pin_round(flow, last, TxnState.DECLINED)[-1].result
    if last == "55":
        assert (result.status, result.message_key, result.detail) == (
            "declined", "pin_tries_used", "wrong PIN 3 times")
    else:
        assert (result.status, result.message_key, result.response_code) == ("declined", "51", "51")


@pytest.mark.parametrize(("allow", "card", "offered"), [
    (None, CARD, False), (False, CARD, False), (True, CARD, True),
    (True, PIN_CARD, False), (False, PIN_CARD, False)])
def test_a_pin_bypass_is_offered_only_when_allowed_and_the_card_does_not_demand_a_pin(
        allow, card, offered):
    """A balance enquiry always asks for the PIN, even of a card that does not demand one. The
    PIN may be bypassed only when the terminal allows it (it does not unless configured: None
    is the default context) and the card's service code does not demand a PIN."""
    ctx = CTX if allow is None else dataclasses.replace(CTX, allow_pin_bypass=allow)
    flow = FinancialFlow(TxnRequest(TxnKind.BALANCE), ctx)
    flow.start()
    [asked] = flow.handle(ev.CardPresented(card))
    assert isinstance(asked, ev.AskPin), asked
    assert asked.bypass_allowed is offered


def test_the_record_says_whether_a_pin_was_entered_and_an_enquiry_moves_no_amount():
    """The written record keeps whether a PIN was entered (a balance enquiry: yes; a sale on a
    card that demands none: no), and a balance enquiry is written with amount 0."""
    enquiry = FinancialFlow(TxnRequest(TxnKind.BALANCE), CTX)
    enquiry.start()
    enquiry.handle(ev.CardPresented(CARD))
    [write] = enquiry.handle(ev.PinEntered(b"\x11" * 8))
    assert (write.draft.amount, write.draft.pin_entered) == (0, True)
    sale = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    sale.start()
    [write] = sale.handle(ev.CardPresented(CARD))
    assert isinstance(write, ev.WritePending) and write.draft.pin_entered is False


@pytest.mark.parametrize("chip", [None, True])
def test_only_a_terminal_with_a_chip_slot_says_so_in_60_4(chip):
    """docs/dialect.md: a terminal with a contact chip slot sends 60.4 = 5, 60.5 = 0 on a
    swiped sale; one without (the default context) sends neither, and the record keeps that."""
    ctx = CTX if chip is None else dataclasses.replace(CTX, chip_capable=True)
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), ctx)
    flow.start()
    [write] = flow.handle(ev.CardPresented(CARD))
    assert write.draft.read_cap == ("50" if chip else "")


# -- the reply: what is kept of it, what it closes ----------------------------------------------

def _original_of(kind: TxnKind) -> OriginalRef | None:
    if kind not in ORIGINAL_KIND:
        return None
    return OriginalRef(record_id=5, kind=ORIGINAL_KIND[kind], state=TxnState.APPROVED,
                       amount=5000, batch="000001", trace="000002", rrn="123456789012",
                       auth_code="AB12CD", date="1122", card_org="VIS", pan=CARD.pan)


def _written(kind: TxnKind) -> tuple[FinancialFlow, ev.WritePending]:
    """A flow of any kind driven to its WritePending (supervisor yes, card, PIN if asked)."""
    amount = None if kind in (TxnKind.BALANCE, TxnKind.VOID, TxnKind.PREAUTH_VOID,
                              TxnKind.COMPLETION_VOID) else 1000
    flow = FinancialFlow(TxnRequest(kind, amount, original=_original_of(kind)), CTX)
    actions = flow.start()
    if isinstance(actions[0], ev.AskAuthorisation):
        actions = flow.handle(ev.Authorised(True))
    if isinstance(actions[0], ev.AskCard):
        actions = flow.handle(ev.CardPresented(CARD))
    if isinstance(actions[0], ev.AskPin):
        actions = flow.handle(ev.PinEntered(b"\x11" * 8))
    assert isinstance(actions[0], ev.WritePending), actions
    return flow, actions[0]


def _sent(kind: TxnKind) -> FinancialFlow:
    flow, write = _written(kind)
    d = write.draft
    sent = flow.handle(ev.PendingWritten(record(
        kind=kind, amount=d.amount, entry_mode=d.entry_mode, pin_entered=d.pin_entered,
        orig_rrn=d.orig_rrn, orig_auth=d.orig_auth, orig_batch=d.orig_batch,
        orig_stan=d.orig_stan, orig_date=d.orig_date, orig_card_org=d.orig_card_org,
        pos_entry=d.pos_entry, read_cap=d.read_cap)))
    assert isinstance(sent[0], ev.SendRequest), sent
    return flow


@pytest.mark.parametrize("kind", [TxnKind.VOID, TxnKind.REFUND])
def test_only_a_refund_sends_back_the_originals_card_organisation(kind):
    """docs/dialect.md "Refunds send back the card organisation (63)": a refund of an original
    in this journal keeps the card organisation its reply named (VIS) to send in 63; a void of
    the same kind of original keeps none."""
    _, write = _written(kind)
    assert write.draft.orig_card_org == ("VIS" if kind is TxnKind.REFUND else None)


@pytest.mark.parametrize("kind", list(TxnKind))
def test_an_approval_marks_the_original_voided_only_for_a_void_and_prints_unless_an_enquiry(kind):
    """An approved void, pre-auth void or completion void names its original, which the
    journal marks voided in the same commit; no other approval (a refund included: it counts
    against its original, it does not void it) names one. Every approval queues its receipt
    but a balance enquiry's (nothing moved; the balance is shown). The card organisation is the
    first 3 characters of 63, the auth code is 38 without its padding, and the issuing and
    acquiring institutions (printed on the slip) are the two 11-character halves of 44."""
    flow = _sent(kind)
    reply = {"39": "00", "37": "123456789012", "38": "AB12  ", "63": "VISA CREDIT",
             "44": "01020000   48020000   "}
    [out] = flow.handle(ev.ReplyReceived(Message("0230" if kind is TxnKind.REFUND else "0210",
                                                 reply)))
    voids = (TxnKind.VOID, TxnKind.PREAUTH_VOID, TxnKind.COMPLETION_VOID)
    assert out.void_of == (5 if kind in voids else None)
    assert out.receipt is (kind is not TxnKind.BALANCE)
    assert (out.result.card_org, out.result.rrn) == ("VIS", "123456789012")
    assert (out.result.issuer_id, out.result.acquirer_id) == ("01020000", "48020000")


BALANCE_54 = [("1002156C100000012345", 100000012345), ("1002156D000000012345", -12345),
              ("1002156C100000012345" + "1001156C000000099999", 100000012345),
              ("1002156C00000001234", None), ("1002156C0000000123A5", None), (None, None)]


@pytest.mark.parametrize(("field54", "balance"), BALANCE_54)
def test_a_balance_is_read_from_the_first_20_characters_of_54_signed_by_c_or_d(field54, balance):
    """Field 54 of an enquiry's reply: account type 2, amount type 2, currency 3, then C (credit)
    or D (debit) and 12 digits. The first balance is the one shown (a second may follow); D
    makes it negative; a 54 shorter than 20 characters or with a non-digit amount, or none,
    shows no balance."""
    flow = _sent(TxnKind.BALANCE)
    fields = {"39": "00"} | ({"54": field54} if field54 is not None else {})
    [out] = flow.handle(ev.ReplyReceived(Message("0210", fields)))
    assert out.result.balance == balance


def test_a_finished_flow_takes_no_further_event():
    """Once the result is given the flow is over: any later event (even CANCEL) is an error,
    never a second result."""
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    drive_to_send(flow)
    flow.handle(ev.ReplyReceived(Message("0210", {"39": "00"})))
    assert flow.handle(ev.OutcomeWritten(record(TxnState.APPROVED)))[-1].result.status == "approved"
    with pytest.raises(RuntimeError, match="finished"):
        flow.handle(ev.Cancel())


# -- the backlog: what a reversal says, what an acknowledged advice keeps ----------------------

@pytest.mark.parametrize(("reason", "auth", "reversal_auth", "f39", "f38"), [
    ("98", None, None, "98", None),
    (None, None, None, "06", None),
    ("A0", None, "ZZ9999", "A0", "ZZ9999"),
    ("06", "AB12CD", None, "06", "AB12CD"),
])
def test_a_reversal_says_why_and_names_the_authorisation_it_undoes(reason, auth, reversal_auth,
                                                                    f39, f38):
    """docs/dialect.md: the 0400's 39 is the reason kept with the record (98 timeout, A0 MAC
    failure), 06 when none was kept; its 38 is the record's own auth code, else the one an
    untrusted reply named (reversal_auth), else none."""
    owed = record(TxnState.REVERSAL_DUE, reversal_reason=reason, auth_code=auth,
                  reversal_auth=reversal_auth)
    [send] = ReversalFlow(owed, CARD.pan, CTX.term, 5.0).start()
    assert isinstance(send, ev.SendRequest) and send.message.mti == "0400", send
    assert (send.message.fields["39"], send.message.fields.get("38")) == (f39, f38)


def test_an_acknowledged_advice_keeps_the_hosts_auth_code_and_card_organisation_and_prints():
    """A stored refund the host acknowledges (00) is made: the journal keeps the reply's RRN,
    auth code and card organisation (the first 3 characters of 63) and its receipt is queued in
    the same commit."""
    owed = record(TxnState.ADVICE_DUE, kind=TxnKind.REFUND, orig_rrn="123456789012",
                  orig_date="1120", orig_batch="000000", orig_stan="000000")
    flow = AdviceFlow(owed, CARD.pan, CTX.term, 5.0)
    [send] = flow.start()
    assert isinstance(send, ev.SendRequest) and send.message.mti == "0220", send
    reply = Message("0230", {"39": "00", "37": "223456789012", "38": "XY34ZW", "63": "MCC00001"})
    [out] = flow.handle(ev.ReplyReceived(reply))
    assert (out.event, out.receipt) == (TxnEvent.ADVICE_ACKED, True)
    assert (out.result.rrn, out.result.auth_code, out.result.card_org) == (
        "223456789012", "XY34ZW", "MCC")


# -- settlement, in-process: the steps from the 0500 to batch + 1 -------------------------------

def _reply48(dom: SideTotals, dom_result: str, fgn: SideTotals, fgn_result: str) -> str:
    """A 0510's field 48: the request's layout with each side's result digit set."""
    s = settlement_field48(dom, fgn)
    return s[:30] + dom_result + s[31:61] + fgn_result


def _settle_to_reply(results: tuple[str, str], totals: SideTotals = DOMESTIC
                     ) -> tuple[SettlementFlow, list]:
    flow = SettlementFlow(CTX.term, "000001", "01", "156", 5.0, DOMESTIC, FOREIGN)
    flow.start()
    flow.handle(ev.StanAllocated("000010"))
    [sent] = flow.handle(ev.SettlementBegun(7))
    assert sent.message.mti == "0500" and sent.mac is False  # settlement carries no MAC
    reply = Message("0510", {"39": "00", "48": _reply48(totals, results[0], FOREIGN, results[1])})
    return flow, flow.handle(ev.ReplyReceived(reply))


def test_an_unbalanced_settlement_uploads_in_chunks_of_8_without_mac_and_ends_once():
    """docs/dialect.md: the 0500, each 0320 upload and the upload end carry no MAC; the records
    of the unbalanced side are loaded 8 at a time (up to 8 per 0320) and each loaded chunk is
    marked uploaded once the host answers 00; the end (202: unbalanced) counts them, and the
    finished settlement takes no further event."""
    flow, recorded = _settle_to_reply(("2", "1"))
    assert recorded == [ev.RecordSettlementReply(7, "2", "1")]
    assert flow.handle(ev.Done()) == [ev.LoadUploadItems(7, 8)]
    items = tuple((record(id=i, stan=f"{i:06d}"), CARD.pan) for i in (1, 2))
    assert flow.handle(ev.UploadItemsLoaded(items)) == [ev.AllocateStan()]
    [upload] = flow.handle(ev.StanAllocated("000011"))
    assert (upload.message.mti, upload.message.fields["60"][8:11], upload.mac) == (
        "0320", "201", False)
    assert flow.handle(ev.ReplyReceived(Message("0330", {"39": "00"}))) == [
        ev.MarkUploaded(7, (1, 2))]
    assert flow.handle(ev.Done()) == [ev.LoadUploadItems(7, 8)]
    assert flow.handle(ev.UploadItemsLoaded(())) == [ev.AllocateStan()]
    assert flow.handle(ev.StanAllocated("000012")) == [ev.RecordEndStan(7, "000012")]
    [end] = flow.handle(ev.Done())
    assert (end.message.fields["60"][8:11], end.message.fields["48"], end.mac) == (
        "202", "0002", False)
    assert flow.handle(ev.ReplyReceived(Message("0330", {"39": "00"}))) == [
        ev.FinishSettlement(7)]
    [done] = flow.handle(ev.Done())
    assert (done.result.status, done.result.message_key) == ("settled", "settled_unbalanced")
    with pytest.raises(TypeError, match="at done"):
        flow.handle(ev.Done())


def test_a_settlement_balanced_on_both_sides_goes_straight_to_its_end():
    """Both sides balanced (1, 1): nothing is loaded for upload; the next step is the upload
    end's STAN, and the end is 207 with 0 records."""
    flow, _ = _settle_to_reply(("1", "1"))
    assert flow.handle(ev.Done()) == [ev.AllocateStan()]
    flow.handle(ev.StanAllocated("000011"))
    [end] = flow.handle(ev.Done())
    assert (end.message.fields["60"][8:11], end.message.fields["48"]) == ("207", "0000")


def test_balanced_over_other_totals_is_refused_in_words_unbalanced_over_them_is_not():
    """A 0510 side called balanced (1) over totals other than those sent is malformed: the
    settlement is abandoned, the words naming the side and both sets of totals (debit amount,
    debit count, credit amount, credit count); afterwards it takes no further event. The same
    other totals called unbalanced (2) are what unbalanced means: the reply is recorded."""
    theirs = SideTotals(5000, 2, 1500, 1)
    flow, actions = _settle_to_reply(("1", "1"), theirs)
    assert actions == [ev.AbandonSettlement(
        7, "settlement reply malformed: the domestic side is called balanced over totals "
           "(5000, 2, 1500, 1), not the (5000, 2, 1000, 1) sent")]
    assert flow.handle(ev.Done())[-1].result.message_key == "settlement_no_reply"
    with pytest.raises(TypeError, match="at done"):
        flow.handle(ev.Done())
    _, actions = _settle_to_reply(("2", "1"), theirs)
    assert actions == [ev.RecordSettlementReply(7, "2", "1")]


@pytest.mark.parametrize("answer", [ev.ReplyReceived(Message("0330", {"39": "96"})),
                                    ev.ReplyLost("timeout")])
def test_an_interrupted_settlement_reports_once_and_takes_no_further_event(answer):
    """A batch upload the host refuses (96) or leaves unanswered stops the settlement
    "interrupted" (it resumes at the next start or settle), nothing is marked uploaded, and
    that is its one result: a later event is an error, never a "settled"."""
    flow, _ = _settle_to_reply(("2", "1"))
    flow.handle(ev.Done())
    flow.handle(ev.UploadItemsLoaded(((record(), CARD.pan),)))
    flow.handle(ev.StanAllocated("000011"))
    [stop] = flow.handle(answer)
    assert isinstance(stop, ev.Finish), stop
    assert (stop.result.status, stop.result.message_key) == ("interrupted", "settlement_interrupted")
    with pytest.raises(TypeError, match="at done"):
        flow.handle(ev.Done())


# -- the limits at their edges ------------------------------------------------------------------

def test_the_amount_limit_is_100000_yuan_inclusive_and_an_amount_is_at_least_one_fen():
    """Default limit 10,000,000 fen (100,000.00): exactly the limit is taken, one fen more is
    refused in words; zero, negative, fractional and true/false amounts are refused."""
    from firmware.engine.validation import check_amount

    def refusal(amount):
        found = check_amount(TxnRequest(TxnKind.SALE, amount), Limits())
        return None if found is None else (found.key, found.detail)

    assert Limits().max_amount == 10_000_000
    assert refusal(10_000_000) is None and refusal(1) is None
    assert refusal(10_000_001) == ("amount_over_limit",
                                   "the amount exceeds the limit of 10000000 fen")
    for bad in (0, -1, 1.5, True):
        assert refusal(bad) == ("invalid_amount",
                                "the amount must be a positive whole number of fen"), bad


def test_a_card_expiring_this_month_is_taken_and_last_months_is_expired():
    """Expiry YYMM: months 01 to 12 are read, 00 and 13 are not; a card that expires this
    month still pays, one that expired last month is refused with its date."""
    def refusal(expiry, today="2611"):
        card = CardRead("swipe", CARD.pan, expiry, "101", CARD.track2)
        found = check_card(card, today, Limits())
        return None if found is None else (found.key, found.detail)

    assert refusal("2611") is None and refusal("2701") is None and refusal("2712") is None
    assert refusal("2610") == ("card_expired", "the card expired (YYMM 2610)")
    for unreadable in ("2600", "2613", "2113"):
        assert refusal(unreadable) == ("card_invalid", "the card's expiry date cannot be read")


def test_a_swiped_chip_card_is_sent_to_the_chip_reader_unless_fallback_is_allowed():
    """Service code 2xx/6xx marks a chip card: swiped, it is refused "insert chip" by default;
    with fallback allowed it pays; inserted, or a magstripe-only card swiped, it is not refused."""
    chip = CardRead("swipe", CARD.pan, "3012", "201", CARD.track2)
    assert Limits().allow_fallback_swipe is False
    refused = check_card(chip, "2611", Limits())
    assert refused is not None and (refused.key, refused.detail) == (
        "insert_chip", "this is a chip card: insert it instead of swiping")
    assert check_card(chip, "2611", Limits(allow_fallback_swipe=True)) is None
    assert check_card(dataclasses.replace(chip, entry_mode="chip"), "2611", Limits()) is None
    assert check_card(CARD, "2611", Limits()) is None


def test_an_original_date_is_a_real_month_and_day_29_february_included():
    """MMDD of an original (a refund's date): the year is not known, so 0229 is a date; 0230,
    month 00 or 13, day 00 or 32, and anything not 4 digits are not."""
    from firmware.engine.validation import valid_mmdd

    for good in ("0101", "0229", "0131", "1231", "0430"):
        assert valid_mmdd(good) is True, good
    for bad in ("0230", "0431", "0001", "1301", "0100", "0132", "123", "01011", "12a1", None):
        assert valid_mmdd(bad) is False, bad


def test_an_original_of_the_wrong_kind_is_refused_naming_the_kinds_that_would_do():
    """A void or refund whose original is a pre-authorisation names what it may refer to."""
    wrong = dataclasses.replace(PREAUTH, kind=TxnKind.PREAUTH)
    refusal = check_original(TxnRequest(TxnKind.VOID, 1000, original=wrong), "000001")
    assert refusal is not None and refusal.key == "original_wrong_type"
    assert refusal.detail == "the original is a preauth, not a sale"
    refusal = check_original(TxnRequest(TxnKind.REFUND, 1000, original=wrong), "000001")
    assert refusal is not None and refusal.detail == "the original is a preauth, not a completion or sale"
