"""Work the terminal owes the host: reversals (0400) and refund advices (0220).

Theory of operation: each attempt is its own tiny flow: send, then record the
attempt in one commit. A reversal is resolved by a 00 or 25 reply; anything
else (no reply, bad MAC, another code) leaves it REVERSAL_DUE with one more
attempt counted. The app runs these before every new online transaction and
before settlement; settlement refuses while any remains.
"""

from __future__ import annotations

from firmware.engine import events as ev
from firmware.engine.financial import card_input_for, params_for
from firmware.engine.model import HostResult, TxnRecord
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.messages import Terminal, financial_request, reversal_request

REVERSAL_RESOLVING_CODES = frozenset({"00", "25"})
ADVICE_ACK_CODES = frozenset({"00", "94"})


class ReversalFlow:
    """One attempt to reverse one REVERSAL_DUE record."""

    def __init__(self, record: TxnRecord, pan: str, term: Terminal, timeout: float) -> None:
        if record.state is not TxnState.REVERSAL_DUE:
            raise ValueError(f"record {record.id} is {record.state.value}, not REVERSAL_DUE")
        self.record = record
        self.pan = pan
        self.term = term
        self.timeout = timeout
        self.resolved: bool | None = None

    def start(self) -> list[ev.Action]:
        card = card_input_for(self.record.entry_mode, self.pan, None, None, self.record.pin_entered)
        params = params_for(self.record, self.term, card)
        message = reversal_request(params, self.record.reversal_reason or "06", self.record.auth_code)
        return [ev.SendRequest(message, mac=True, timeout=self.timeout)]

    def handle(self, event: object) -> list[ev.Action]:
        if isinstance(event, ev.ReplyReceived):
            code = event.message.fields.get("39", "")
            if code in REVERSAL_RESOLVING_CODES:
                return [ev.WriteOutcome(self.record.id, TxnEvent.REVERSAL_ACKED, HostResult(code))]
            return [ev.WriteOutcome(self.record.id, TxnEvent.REVERSAL_FAILED, HostResult(code))]
        if isinstance(event, ev.ReplyLost | ev.Cancel):
            return [ev.WriteOutcome(self.record.id, TxnEvent.REVERSAL_FAILED)]
        if isinstance(event, ev.OutcomeWritten):
            self.record = event.record
            self.resolved = event.record.state is TxnState.REVERSED
            return []
        raise TypeError(f"unexpected event {event!r}")


class AdviceFlow:
    """One attempt to forward one ADVICE_DUE refund (same STAN every time)."""

    def __init__(self, record: TxnRecord, pan: str, term: Terminal, timeout: float) -> None:
        if record.state is not TxnState.ADVICE_DUE:
            raise ValueError(f"record {record.id} is {record.state.value}, not ADVICE_DUE")
        self.record = record
        self.pan = pan
        self.term = term
        self.timeout = timeout
        self.resolved: bool | None = None

    def start(self) -> list[ev.Action]:
        card = card_input_for(self.record.entry_mode, self.pan, None, None, self.record.pin_entered)
        message = financial_request(params_for(self.record, self.term, card))
        return [ev.SendRequest(message, mac=True, timeout=self.timeout)]

    def handle(self, event: object) -> list[ev.Action]:
        if isinstance(event, ev.ReplyReceived):
            fields = event.message.fields
            code = fields.get("39", "")
            result = HostResult(code, rrn=fields.get("37"), auth_code=fields.get("38"))
            kind = TxnEvent.ADVICE_ACKED if code in ADVICE_ACK_CODES else TxnEvent.DECLINE
            return [ev.WriteOutcome(self.record.id, kind, result)]
        if isinstance(event, ev.ReplyLost | ev.Cancel):
            return [ev.WriteOutcome(self.record.id, TxnEvent.ADVICE_FAILED)]
        if isinstance(event, ev.OutcomeWritten):
            self.record = event.record
            self.resolved = event.record.state is not TxnState.ADVICE_DUE
            return []
        raise TypeError(f"unexpected event {event!r}")
