"""The financial transaction flow: authorise, card, PIN, write ahead, send, record.

Theory of operation: the flow is a state machine with one handler per step
(STEPS below is its table). Nothing is written before the complete request has
been built once from what will be written (a request the wire cannot carry is
refused in words, never stored); nothing is sent before WritePending has been
acknowledged with PendingWritten, so the record and the counters it consumed
are durable first; nothing is shown before OutcomeWritten. A lost, late,
malformed or bad-MAC reply, and CANCEL after the request was written, all end
in REVERSAL_DUE. A refund advice goes online first: the host's answer is the
till's answer; only when it was not delivered (or the host said "try again")
is it kept ADVICE_DUE and reported "stored", with no receipt until the host
acknowledges it. CANCEL before the write ends the flow with no financial record.

A chip card (docs/chip.md) adds one step after the host's answer: CompleteChip asks the app to
finish the card's side (issuer authentication, scripts, the second GENERATE AC). Only when the
host approved AND the card accepted is the transaction approved; a card that declines after the
host approved (or is pulled, or the cashier cancels then) makes it REVERSAL_DUE, written before
the reversal is sent. A card that declined before anything was written (offline decline, no
common application) ends the flow with nothing written or sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from firmware.digits import is_digits
from firmware.engine import events as ev
from firmware.engine.cardclass import is_foreign
from firmware.engine.codes import advice_answer, lookup
from firmware.engine.model import (
    CardRead,
    HostResult,
    PendingDraft,
    TxnRecord,
    TxnRequest,
    TxnResult,
    institution_ids,
    slip_expiry,
)
from firmware.engine.states import TxnEvent, TxnState
from firmware.engine.validation import (
    Limits,
    Refusal,
    check_amount,
    check_card,
    check_original,
    check_refund_card,
)
from firmware.host.errors import LocalProtocolError
from firmware.host.messages import (
    DEFAULT_FALLBACK_ENTRY_CODE,
    WIRE,
    CardInput,
    FinancialParams,
    Message,
    Terminal,
    TxnKind,
    financial_request,
    mask_pan,
)

# Kinds whose card comes from the original record instead of a fresh read.
CARD_FROM_ORIGINAL: frozenset[TxnKind] = frozenset(
    {TxnKind.VOID, TxnKind.PREAUTH_VOID, TxnKind.COMPLETION, TxnKind.COMPLETION_VOID}
)
NEEDS_SUPERVISOR: frozenset[TxnKind] = frozenset(
    {TxnKind.VOID, TxnKind.REFUND, TxnKind.PREAUTH_VOID, TxnKind.COMPLETION_VOID}
)
# Reversal reason (field 39 of the 0400) for each way of losing the reply.
REVERSAL_REASON: dict[str, str] = {"timeout": "98", "bad_mac": "A0"}
# Why a chip transaction the host approved is reversed (the card declined it, was pulled, or the
# cashier cancelled before the card's second GENERATE AC): "06", as for any other cause.
CARD_DECLINED = "card_declined"
# Stands in for the STAN and invoice the journal allocates, when the request is built once
# before the write to prove the wire can carry it.
_PROBE_STAN = "000001"


class Step(StrEnum):
    AUTHORISE = "authorise"
    CARD = "card"
    PIN = "pin"
    WRITE_PENDING = "write_pending"
    AWAIT_REPLY = "await_reply"
    CHIP_COMPLETE = "chip_complete"
    WRITE_OUTCOME = "write_outcome"
    DONE = "done"


@dataclass(frozen=True)
class FlowContext:
    term: Terminal
    batch: str
    now: datetime  # local time, passed in: the engine reads no clock
    currency: str = "156"
    limits: Limits = field(default_factory=Limits)
    reply_timeout: float = 30.0
    pin_tries: int = 3
    allow_pin_bypass: bool = False
    chip_capable: bool = False  # the terminal has a contact chip slot: 60.4 = 5 (docs/dialect.md)
    fallback_entry_code: str = DEFAULT_FALLBACK_ENTRY_CODE  # 22 of a fallback swipe, per acquirer
    card_from_original: frozenset[TxnKind] = CARD_FROM_ORIGINAL


def reversal_reason(no_reply_reason: str) -> str:
    return REVERSAL_REASON.get(no_reply_reason, "06")


def card_input_for(pan: str, card: CardRead | None, pin_block: bytes | None) -> CardInput:
    """The card as the request carries it: from this read, or from the journal's PAN alone."""
    if card is not None:
        return CardInput(
            entry_mode=card.entry_mode, pan=card.pan, expiry=card.expiry, track2=card.track2,
            track3=card.track3, card_seq=card.card_seq, icc_data=card.icc_data, pin_block=pin_block,
        )
    # Built from the journal: only the PAN survives, so it travels in field 2 as keyed.
    return CardInput(entry_mode="keyed", pan=pan, pin_block=pin_block)


def params_for(record: TxnRecord | PendingDraft, term: Terminal, card: CardInput, *,
               stan: str | None = None, batch: str | None = None,
               chip_capable: bool = False,
               fallback_entry_code: str = DEFAULT_FALLBACK_ENTRY_CODE) -> FinancialParams:
    """The request's parameters from a journal record, or from a draft about to be written
    (then stan and batch stand in for the counters the journal will allocate, and 22 and
    60.4/60.5 come from the card read; a record's come from what the journal kept)."""
    pos_entry = read_cap = None
    if isinstance(record, TxnRecord):
        stan, batch = record.stan, record.batch
        pos_entry, read_cap = record.pos_entry, record.read_cap
    assert stan is not None and batch is not None, "a draft needs a stand-in STAN and batch"
    return FinancialParams(
        kind=record.kind, stan=stan, batch=batch, term=term, amount=record.amount,
        currency=record.currency, card=card, orig_rrn=record.orig_rrn, orig_auth=record.orig_auth,
        orig_batch=record.orig_batch, orig_stan=record.orig_stan, orig_date=record.orig_date,
        orig_card_org=record.orig_card_org, pos_entry=pos_entry, read_cap=read_cap,
        chip_capable=chip_capable, fallback_entry_code=fallback_entry_code,
    )


class FinancialFlow:
    """One sale / void / refund / balance / pre-auth family transaction."""

    def __init__(self, request: TxnRequest, ctx: FlowContext) -> None:
        self.request = request
        self.ctx = ctx
        self.step = Step.AUTHORISE
        self.wire = WIRE[request.kind]
        self.card: CardRead | None = None
        self.pin_block: bytes | None = None
        self.pin_attempt = 0
        self.record: TxnRecord | None = None
        self.reply: HostResult | None = None
        self.lost_reason: str | None = None
        self.not_sent: str | None = None  # the request could not be built after the write
        self.chip_refusal = ""  # why the card declined after the host approved (words)
        self._handlers: dict[Step, Callable[[object], list[ev.Action]]] = {
            Step.AUTHORISE: self._on_authorise,
            Step.CARD: self._on_card,
            Step.PIN: self._on_pin,
            Step.WRITE_PENDING: self._on_pending_written,
            Step.AWAIT_REPLY: self._on_reply,
            Step.CHIP_COMPLETE: self._on_chip_completed,
            Step.WRITE_OUTCOME: self._on_outcome_written,
        }

    # -- entry points ---------------------------------------------------------

    def start(self) -> list[ev.Action]:
        refusal = check_amount(self.request, self.ctx.limits) or check_original(
            self.request, self.ctx.batch
        )
        if refusal is not None:
            return self._refuse(refusal)
        if self.request.kind in NEEDS_SUPERVISOR:
            return [ev.AskAuthorisation(self.request.kind.value)]
        return self._after_authorisation()

    def handle(self, event: object) -> list[ev.Action]:
        if self.step is Step.DONE:
            raise RuntimeError("the flow has finished")
        if isinstance(event, ev.Cancel):
            return self._on_cancel()
        return self._handlers[self.step](event)

    # -- steps ----------------------------------------------------------------

    def _on_authorise(self, event: object) -> list[ev.Action]:
        assert isinstance(event, ev.Authorised)
        if not event.ok:
            return self._finish(
                TxnResult("refused", "password_wrong", detail="wrong supervisor password"),
                audit=("authorise", "wrong supervisor password", "refused"),
            )
        return self._after_authorisation()

    def _after_authorisation(self) -> list[ev.Action]:
        if self.request.kind in self.ctx.card_from_original:
            return self._after_card()
        self.step = Step.CARD
        return [ev.AskCard(self.request.kind.value)]

    def _on_card(self, event: object) -> list[ev.Action]:
        if isinstance(event, ev.CardDeclined):
            return self._finish(TxnResult("declined", event.key, detail=event.detail),
                                audit=(f"{self.request.kind.value} declined by card",
                                       event.detail, "declined"))
        assert isinstance(event, ev.CardPresented)
        refusal = (check_card(event.card, self.ctx.now.strftime("%y%m"), self.ctx.limits)
                   or check_refund_card(self.request, event.card))
        if refusal is not None:
            return self._refuse(refusal)
        self.card = event.card
        return self._after_card()

    def _after_card(self) -> list[ev.Action]:
        # An advice carries no PIN: it is store-and-forward, resent later from the journal.
        if self.card is not None and self._pin_needed() and not self.wire.advice:
            return self._ask_pin()
        return self._write_pending()

    def _pin_needed(self) -> bool:
        assert self.card is not None
        return self.card.pin_required or self.request.kind is TxnKind.BALANCE

    def _ask_pin(self) -> list[ev.Action]:
        assert self.card is not None
        self.step = Step.PIN
        self.pin_attempt += 1
        bypass = self.ctx.allow_pin_bypass and not self.card.pin_required
        return [ev.AskPin(mask_pan(self.card.pan), self.pin_attempt, bypass, self._tries_left())]

    def _tries_left(self) -> int | None:
        """Tries left, this one included, once a PIN was wrong (None at the first ask)."""
        return self.ctx.pin_tries - self.pin_attempt + 1 if self.pin_attempt > 1 else None

    def _on_pin(self, event: object) -> list[ev.Action]:
        if isinstance(event, ev.NoPinAgain):
            left = self._tries_left()
            key = "pin_wrong_last" if left == 1 else "pin_wrong_left"
            return self._finish(TxnResult("declined", key, self.record, response_code="55",
                                          detail=f"wrong PIN, {left} tries left", pin_tries_left=left))
        assert isinstance(event, ev.PinEntered)
        self.pin_block = event.pin_block
        return self._write_pending()

    def _write_pending(self) -> list[ev.Action]:
        draft = self._draft()
        probe = self._probe(draft)
        if isinstance(probe, str):
            return self._finish(
                TxnResult("refused", "cannot_send", detail=probe),
                audit=(f"{self.request.kind.value} refused", f"cannot be sent: {probe}", "refused"))
        # The record keeps how the card was read as the wire says it, for its reversal.
        draft = replace(draft, pos_entry=probe.fields["22"], read_cap=probe.fields["60"][11:])
        self.step = Step.WRITE_PENDING
        return [ev.WritePending(draft)]

    def _probe(self, draft: PendingDraft) -> Message | str:
        """Build the request once from the draft: what the wire cannot carry is never stored
        (the words why are returned instead)."""
        try:
            return financial_request(params_for(draft, self.ctx.term, self._card_input(draft),
                                                stan=_PROBE_STAN, batch=self.ctx.batch,
                                                chip_capable=self.ctx.chip_capable,
                                                fallback_entry_code=self.ctx.fallback_entry_code))
        except LocalProtocolError as exc:
            return str(exc)

    def _card_input(self, record: TxnRecord | PendingDraft) -> CardInput:
        if self.wire.advice:
            # Byte for byte what a resend from the journal will be, so that the host's
            # duplicate check replays its real outcome instead of answering 94.
            return card_input_for(self._pan(), None, None)
        return card_input_for(self._pan(), self.card, self.pin_block)

    def _draft(self) -> PendingDraft:
        req, orig = self.request, self.request.original
        pan = self.card.pan if self.card is not None else (orig.pan if orig else None)
        if not pan:
            raise ValueError("no card number for this transaction")
        amount = req.amount
        if amount is None:
            amount = orig.amount if orig is not None and orig.amount is not None else 0
        # An outside-reference refund names no original batch and trace: the dialect sends zeros
        # in 61.1 and 61.2 and the host finds the original by RRN and date (docs/dialect.md).
        orig_batch = orig.batch if orig else None
        orig_stan = orig.trace if orig else None
        if req.kind is TxnKind.REFUND:
            orig_batch, orig_stan = orig_batch or "000000", orig_stan or "000000"
        return PendingDraft(
            kind=req.kind,
            amount=amount,
            currency=self.ctx.currency,
            pan=pan,
            pan_masked=mask_pan(pan),
            foreign=is_foreign(pan),
            entry_mode=self.card.entry_mode if self.card is not None else "keyed",
            pin_entered=self.pin_block is not None,
            operator=req.operator,
            local_date=self.ctx.now.strftime("%m%d"),
            local_time=self.ctx.now.strftime("%H%M%S"),
            advice=self.wire.advice,
            reference=req.reference,
            orig_id=orig.record_id if orig else None,
            orig_batch=orig_batch,
            orig_stan=orig_stan,
            orig_rrn=orig.rrn if orig else None,
            orig_auth=orig.auth_code if orig else None,
            orig_date=orig.date if orig else None,
            orig_card_org=orig.card_org if orig and req.kind is TxnKind.REFUND else None,
            orig_invoice=orig.invoice if orig else None,
            held_order_id=req.held_order_id,
            request_key=req.request_key,
            expiry_shown=slip_expiry(self.card.expiry if self.card is not None else None),
            card_seq=self.card.card_seq if self._chip() else None,
            icc_data=self.card.icc_data if self._chip() and self.card else None,
            chip_tags=self.card.chip_tags if self._chip() and self.card else None,
        )

    def _chip(self) -> bool:
        """The card was read from its chip: the card has a word after the host's."""
        return self.card is not None and self.card.entry_mode == "chip"

    def _on_pending_written(self, event: object) -> list[ev.Action]:
        assert isinstance(event, ev.PendingWritten)
        self.record = event.record
        try:
            message: Message = financial_request(
                params_for(event.record, self.ctx.term, self._card_input(event.record)))
        except LocalProtocolError as exc:
            # Built once before the write, so only a counter can have broken it: nothing left
            # the terminal, and an advice is set aside for the supervisor.
            self.not_sent = str(exc)
            self.step = Step.WRITE_OUTCOME
            event_ = TxnEvent.QUARANTINE if self.wire.advice else TxnEvent.NOT_SENT
            return [ev.WriteOutcome(event.record.id, event_, problem=str(exc))]
        self.step = Step.AWAIT_REPLY
        return [ev.SendRequest(message, mac=True, timeout=self.ctx.reply_timeout)]

    def _pan(self) -> str:
        if self.card is not None:
            return self.card.pan
        assert self.request.original is not None and self.request.original.pan
        return self.request.original.pan

    def _on_reply(self, event: object) -> list[ev.Action]:
        assert self.record is not None
        if isinstance(event, ev.ReplyLost):
            return self._reply_lost(event.reason, event.auth_code)
        assert isinstance(event, ev.ReplyReceived)
        fields = event.message.fields
        code = fields.get("39", "")
        issuer, acquirer = institution_ids(fields.get("44"))
        result = HostResult(
            response_code=code,
            rrn=fields.get("37"),
            auth_code=(fields.get("38") or "").strip() or None,
            card_org=(fields.get("63") or "")[:3].strip() or None,
            balance=_parse_balance(fields.get("54")),
            issuer_id=issuer,
            acquirer_id=acquirer,
        )
        self.reply = result
        self.step = Step.WRITE_OUTCOME
        if self.wire.advice:
            answer = advice_answer(code)
            if answer == "retry":  # not taken now; kept and sent again: "stored"
                self.lost_reason = f"host answered {code}"
                return [ev.WriteOutcome(self.record.id, TxnEvent.ADVICE_FAILED)]
            acked = answer == "acked"
            kind = TxnEvent.ADVICE_ACKED if acked else TxnEvent.DECLINE
            return [ev.WriteOutcome(self.record.id, kind, result, receipt=acked)]
        if self._chip():
            self.step = Step.CHIP_COMPLETE
            return [ev.CompleteChip(code, fields.get("55"))]
        return self._outcome(result)

    def _outcome(self, result: HostResult, chip_tags: str | None = None) -> list[ev.Action]:
        assert self.record is not None
        self.step = Step.WRITE_OUTCOME
        if result.response_code == "00":
            void_of = None
            if self.request.kind in (TxnKind.VOID, TxnKind.PREAUTH_VOID, TxnKind.COMPLETION_VOID):
                void_of = self.request.original.record_id if self.request.original else None
            return [ev.WriteOutcome(self.record.id, TxnEvent.APPROVE, result, void_of=void_of,
                                    receipt=self.request.kind is not TxnKind.BALANCE,
                                    chip_tags=chip_tags)]
        return [ev.WriteOutcome(self.record.id, TxnEvent.DECLINE, result, chip_tags=chip_tags)]

    def _on_chip_completed(self, event: object) -> list[ev.Action]:
        assert isinstance(event, ev.ChipCompleted) and self.record is not None
        assert self.reply is not None
        if self.reply.response_code != "00" or event.accepted or not self.wire.reversible:
            return self._outcome(self.reply, event.chip_tags)
        # The host approved, the card did not (or the cashier cancelled before it could): the
        # approval is reversed, written first. The reply is genuine, so its auth code goes
        # back in 38 for the host to find.
        self.lost_reason = "cancelled" if event.reason == "cancelled" else CARD_DECLINED
        self.chip_refusal = event.reason
        self.step = Step.WRITE_OUTCOME
        approved = HostResult("", auth_code=self.reply.auth_code) if self.reply.auth_code else None
        return [ev.WriteOutcome(self.record.id, TxnEvent.LOSE_REPLY, approved,
                                reversal_reason=reversal_reason(CARD_DECLINED),
                                chip_tags=event.chip_tags)]

    def _reply_lost(self, reason: str, auth_code: str | None = None) -> list[ev.Action]:
        assert self.record is not None
        self.lost_reason = reason
        self.step = Step.WRITE_OUTCOME
        if self.wire.advice:
            # Stored for the backlog. No receipt yet: the host may still decline it; the
            # receipt prints when it acknowledges (or a slip says it declined).
            return [ev.WriteOutcome(self.record.id, TxnEvent.ADVICE_FAILED)]
        if not self.wire.reversible:
            return [ev.WriteOutcome(self.record.id, TxnEvent.LOSE_ENQUIRY_REPLY)]
        # A reply that failed its MAC may still have named an auth code: the reversal sends it
        # back in 38 (section 5) so the host finds what it approved.
        untrusted = HostResult("", auth_code=auth_code) if auth_code else None
        return [
            ev.WriteOutcome(
                self.record.id, TxnEvent.LOSE_REPLY, untrusted,
                reversal_reason=reversal_reason(reason),
            )
        ]

    def _on_outcome_written(self, event: object) -> list[ev.Action]:
        assert isinstance(event, ev.OutcomeWritten)
        record = event.record
        self.record = record
        if self.not_sent is not None:
            return self._finish(TxnResult("failed", "cannot_send", record, detail=self.not_sent))
        if self.lost_reason is not None:
            if self.wire.advice:
                return self._finish(TxnResult("stored", "advice_stored", record,
                                              detail=self.lost_reason))
            if not self.wire.reversible:
                return self._finish(TxnResult("failed", "no_reply", record, detail=self.lost_reason))
            if self.lost_reason == CARD_DECLINED:
                return self._finish(TxnResult("card_declined", "declined_by_card", record,
                                              detail=self.chip_refusal or "the card declined"))
            status = "cancelled_after_send" if self.lost_reason == "cancelled" else "reversal_pending"
            return self._finish(TxnResult(status, "reversal_pending", record, detail=self.lost_reason))
        assert self.reply is not None
        code = self.reply.response_code
        if record.state is TxnState.APPROVED:
            return self._finish(
                TxnResult("approved", "00", record, response_code=code, balance=self.reply.balance)
            )
        # A chip card's wrong PIN is not asked again: the card's cryptogram was for that
        # request, so another try is another transaction (a new card session).
        if (code == "55" and self.card is not None and not self._chip()
                and self.pin_attempt < self.ctx.pin_tries):
            self.pin_block = None
            return self._ask_pin()
        if code == "55" and self.pin_attempt >= self.ctx.pin_tries:
            return self._finish(TxnResult("declined", "pin_tries_used", record, response_code=code,
                                          detail=f"wrong PIN {self.pin_attempt} times"))
        return self._finish(
            TxnResult("declined", code, record, response_code=code, detail=lookup(code).en)
        )

    # -- cancel -------------------------------------------------------------

    def _on_cancel(self) -> list[ev.Action]:
        if self.step is Step.AWAIT_REPLY:
            return self._reply_lost("cancelled")
        if self.step is Step.WRITE_OUTCOME:
            return []  # the outcome is being made durable; it is reported as it is
        if self.step is Step.CHIP_COMPLETE:
            # The card has not given its word: an approval is reversed as if the card declined.
            return self._on_chip_completed(ev.ChipCompleted(False, None, "cancelled"))
        step = self.step.value
        return self._finish(
            TxnResult("cancelled", "cancelled", detail=f"cancelled at step {step}"),
            audit=(f"{self.request.kind.value} cancelled", f"at step {step}", "cancelled"),
        )

    def _refuse(self, refusal: Refusal) -> list[ev.Action]:
        """A local refusal: nothing was written or sent; the till or operator gets the words,
        the audit log gets the request that was refused and why."""
        return self._finish(TxnResult("refused", refusal.key, detail=refusal.detail),
                            audit=(f"{self.request.kind.value} refused", refusal.detail, "refused"))

    def _finish(self, result: TxnResult, audit: tuple[str, str, str] | None = None
                ) -> list[ev.Action]:
        self.step = Step.DONE
        actions: list[ev.Action] = []
        if audit is not None:
            actions.append(ev.AuditNote(*audit))
        actions.append(ev.Finish(result))
        return actions


def _parse_balance(field54: str | None) -> int | None:
    """CUP field 54: account type 2, amount type 2, currency 3, sign C/D, amount 12."""
    if not field54 or len(field54) < 20:
        return None
    sign, digits = field54[7], field54[8:20]
    if not is_digits(digits):
        return None
    return -int(digits) if sign == "D" else int(digits)

