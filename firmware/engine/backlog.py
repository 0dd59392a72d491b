"""Work the terminal owes the host: reversals (0400) and refund advices (0220).

Theory of operation: each attempt is its own tiny flow: send, then record the
attempt in one commit. A reversal is resolved by a 00 or 25 reply; anything
else (no reply, bad MAC, another code) leaves it REVERSAL_DUE with one more
attempt counted. An advice is closed only by an acknowledgement (its receipt
prints then) or a final decline (a slip says the refund was not made); "try
again" answers keep it due. A record whose message cannot be built from the
journal is QUARANTINED at once, so it blocks neither the rest of the backlog
nor new sales. The app runs these before every new online transaction and
before settlement; settlement refuses while any remains.
"""

from __future__ import annotations

from firmware.emv.field55 import reversal_55, script_advice_55
from firmware.emv.record import decode_kept
from firmware.engine import events as ev
from firmware.engine.codes import advice_answer
from firmware.engine.financial import card_input_for, params_for
from firmware.engine.model import HostResult, TxnRecord
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.errors import LocalProtocolError
from firmware.host.messages import (
    CardInput,
    FinancialParams,
    Message,
    ScriptAdviceParams,
    Terminal,
    financial_request,
    reversal_request,
    script_advice,
)

REVERSAL_RESOLVING_CODES = frozenset({"00", "25"})


def journal_card_input(record: TxnRecord, pan: str) -> CardInput:
    """The card as an owed message rebuilt from the journal carries it: a chip record keeps its
    field 23 and the request's 55 (whose tags the reversal's 55 is cut from); any other record
    sends its PAN alone (the tracks are never kept)."""
    if record.entry_mode == "chip" and record.icc_data:
        return CardInput(entry_mode="chip", pan=pan, card_seq=record.card_seq,
                         icc_data=record.icc_data)
    return card_input_for(pan, None, None)


def reversal_icc(record: TxnRecord) -> str | None:
    """A chip reversal's field 55 (hex): 95, 9F10, 9F1E, 9F36 and DF31 as the chip's record in
    the journal has them (docs/chip.md: 9F36 always, our choice, so the issuer finds the
    cryptogram it answered). None for a record not read from a chip."""
    if record.entry_mode != "chip":
        return None
    tags = decode_kept(record.chip_tags)
    if not tags:
        return None
    return reversal_55(tags, card_declined=True).hex().upper()


class _OneAttempt:
    """Shared shape of a backlog attempt: one request, then one journal commit."""

    due_state: TxnState
    resolving_codes: frozenset[str]

    def __init__(self, record: TxnRecord, pan: str, term: Terminal, timeout: float) -> None:
        if record.state is not self.due_state:
            raise ValueError(f"record {record.id} is {record.state.value}, "
                             f"not {self.due_state.value}")
        self.record = record
        self.pan = pan
        self.term = term
        self.timeout = timeout
        self.resolved: bool | None = None

    def _params(self) -> FinancialParams:
        card = journal_card_input(self.record, self.pan)
        return params_for(self.record, self.term, card)

    def _message(self) -> Message:
        raise NotImplementedError

    def start(self) -> list[ev.Action]:
        try:
            message = self._message()
        except LocalProtocolError as exc:
            # What the journal holds cannot make this message, now or ever: set it aside.
            return [ev.WriteOutcome(self.record.id, TxnEvent.QUARANTINE, problem=str(exc))]
        return [ev.SendRequest(message, mac=True, timeout=self.timeout)]

    def _on_reply(self, fields: dict[str, str]) -> ev.WriteOutcome:
        raise NotImplementedError

    def _failed(self) -> TxnEvent:
        raise NotImplementedError

    def handle(self, event: object) -> list[ev.Action]:
        if isinstance(event, ev.ReplyReceived):
            return [self._on_reply(event.message.fields)]
        if isinstance(event, ev.ReplyLost | ev.Cancel):
            return [ev.WriteOutcome(self.record.id, self._failed())]
        if isinstance(event, ev.OutcomeWritten):
            self.record = event.record
            self.resolved = event.record.state is not self.due_state
            return []
        raise TypeError(f"unexpected event {event!r}")


class ReversalFlow(_OneAttempt):
    """One attempt to reverse one REVERSAL_DUE record."""

    due_state = TxnState.REVERSAL_DUE

    def _message(self) -> Message:
        return reversal_request(self._params(), self.record.reversal_reason or "06",
                                self.record.auth_code or self.record.reversal_auth,
                                icc_data=reversal_icc(self.record))

    def _on_reply(self, fields: dict[str, str]) -> ev.WriteOutcome:
        code = fields.get("39", "")
        event = (TxnEvent.REVERSAL_ACKED if code in REVERSAL_RESOLVING_CODES
                 else TxnEvent.REVERSAL_FAILED)
        return ev.WriteOutcome(self.record.id, event, HostResult(code))

    def _failed(self) -> TxnEvent:
        return TxnEvent.REVERSAL_FAILED


class AdviceFlow(_OneAttempt):
    """One attempt to forward one ADVICE_DUE refund (same STAN and bytes every time)."""

    due_state = TxnState.ADVICE_DUE

    def _message(self) -> Message:
        return financial_request(self._params())

    def _on_reply(self, fields: dict[str, str]) -> ev.WriteOutcome:
        code = fields.get("39", "")
        result = HostResult(code, rrn=fields.get("37"), auth_code=fields.get("38"),
                            card_org=(fields.get("63") or "")[:3].strip() or None)
        answer = advice_answer(code)
        if answer == "acked":  # the refund is made: its receipt prints now
            return ev.WriteOutcome(self.record.id, TxnEvent.ADVICE_ACKED, result, receipt=True)
        if answer == "declined":
            return ev.WriteOutcome(self.record.id, TxnEvent.DECLINE, result,
                                   declined_after_stored=True)
        return ev.WriteOutcome(self.record.id, TxnEvent.ADVICE_FAILED, HostResult(code))

    def _failed(self) -> TxnEvent:
        return TxnEvent.ADVICE_FAILED


class ScriptAdviceFlow:
    """One attempt to send a chip record's issuer-script result advice (0620): a fresh STAN,
    the advice, and the journal told when the host acknowledged it (00) or refused it for good
    (any other answer: given up, audited). Not delivered: it stays due for the next pass. It
    moves no money, so it never holds up a sale or the settlement."""

    def __init__(self, record: TxnRecord, pan: str, term: Terminal, batch: str,
                 timeout: float) -> None:
        self.record = record
        self.pan = pan
        self.term = term
        self.batch = batch
        self.timeout = timeout
        self.resolved = False

    def start(self) -> list[ev.Action]:
        return [ev.AllocateStan()]

    def _message(self, stan: str) -> Message:
        r = self.record
        tags = decode_kept(r.chip_tags)
        return script_advice(ScriptAdviceParams(
            stan=stan, batch=self.batch, term=self.term, pan=self.pan, amount=r.amount,
            pos_entry=r.pos_entry, icc_data=script_advice_55(tags), orig_batch=r.batch,
            orig_stan=r.stan, orig_date=r.local_date, currency=r.currency, card_seq=r.card_seq,
            orig_rrn=r.rrn, orig_auth=r.auth_code))

    def handle(self, event: object) -> list[ev.Action]:
        if isinstance(event, ev.StanAllocated):
            try:
                message = self._message(event.stan)
            except LocalProtocolError as exc:
                return [ev.CloseScriptAdvice(self.record.id, False, f"cannot be built: {exc}")]
            return [ev.SendRequest(message, mac=True, timeout=self.timeout)]
        if isinstance(event, ev.ReplyReceived):
            code = event.message.fields.get("39", "")
            self.resolved = True
            if code == "00":
                return [ev.CloseScriptAdvice(self.record.id, True, "acknowledged")]
            return [ev.CloseScriptAdvice(self.record.id, False, f"the host answered {code}")]
        if isinstance(event, ev.ReplyLost | ev.Cancel | ev.Done):
            return []
        raise TypeError(f"unexpected event {event!r}")
