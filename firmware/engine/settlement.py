"""Settlement (结算): totals, 0500, batch upload from a cursor, upload end, batch + 1.

Theory of operation: the journal row is the cursor. REQUESTED means the 0500
left but its reply was never recorded: the host changed nothing we rely on,
so the row is abandoned and settlement may simply start again. From the
recorded reply on (UPLOADING, ENDING) the operator cannot cancel; a lost
link or power loss resumes at the step reached, uploaded records are flagged
so a restart never sends them twice, and the batch number advances only when
the upload-end reply has been recorded.

The 0510 carries no MAC in this dialect, so its claims are checked against
themselves: a side called balanced (1) must carry the very totals the terminal
sent for it; a reply that says "balanced" over other figures is refused as
malformed and nothing is settled. Whatever the reply said is recorded with the
terminal's own totals (settlement row, audit, Z report), so a forged "balanced"
can close a batch only in plain sight of the merchant's and the acquirer's books.
"""

from __future__ import annotations

import itertools
from enum import StrEnum

from firmware.engine import events as ev
from firmware.engine.model import SettlementRow, TxnResult
from firmware.host.errors import RemoteProtocolError
from firmware.host.messages import (
    WIRE,
    ChipUploadItem,
    SideTotals,
    Terminal,
    UploadItem,
    batch_upload_end,
    batch_upload_request,
    chip_upload_request,
    parse_settlement_field48,
    settlement_field48,
    settlement_request,
)

UPLOAD_CHUNK = 8  # magstripe records per 0320


class SStep(StrEnum):
    STAN_FOR_REQUEST = "stan_for_request"
    BEGIN = "begin"
    AWAIT_REQUEST_REPLY = "await_request_reply"
    RECORD_REPLY = "record_reply"
    LOAD = "load"
    STAN_FOR_UPLOAD = "stan_for_upload"
    AWAIT_UPLOAD_REPLY = "await_upload_reply"
    MARK = "mark"
    STAN_FOR_END = "stan_for_end"
    RECORD_END_STAN = "record_end_stan"
    AWAIT_END_REPLY = "await_end_reply"
    FINISH = "finish"
    ABANDON = "abandon"
    DONE = "done"


def totals_tuple(t: SideTotals) -> tuple[int, int, int, int]:
    return (t.debit_amount, t.debit_count, t.credit_amount, t.credit_count)


class SettlementFlow:
    def __init__(self, term: Terminal, batch: str, operator: str, currency: str, timeout: float,
                 domestic: SideTotals, foreign: SideTotals,
                 resume: SettlementRow | None = None) -> None:
        self.term = term
        self.batch = batch
        self.operator = operator
        self.currency = currency
        self.timeout = timeout
        self.domestic = domestic
        self.foreign = foreign
        self.row = resume
        self.settlement_id: int | None = resume.id if resume else None
        self.uploaded = resume.uploaded_count if resume else 0
        self.pending_items: tuple[int, ...] = ()
        self.end_stan: str | None = resume.end_stan if resume else None
        self.step = SStep.STAN_FOR_REQUEST
        self.results: tuple[str, str] | None = (
            (resume.result_domestic or "", resume.result_foreign or "") if resume else None
        )

    @property
    def cancellable(self) -> bool:
        """Only before the 0500 leaves may the operator walk away."""
        return self.step in (SStep.STAN_FOR_REQUEST, SStep.BEGIN)

    def start(self) -> list[ev.Action]:
        if self.row is not None and self.row.state == "UPLOADING":
            return self._load()
        if self.row is not None and self.row.state == "ENDING":
            return self._stan_for_end()
        self.step = SStep.STAN_FOR_REQUEST
        return [ev.AllocateStan()]

    def handle(self, event: object) -> list[ev.Action]:
        step = self.step
        if isinstance(event, ev.Cancel):
            if self.cancellable:
                self.step = SStep.DONE
                return [ev.Finish(TxnResult("cancelled", "cancelled", detail="settlement not sent"))]
            return []  # once the 0500 is out, settlement runs to its end
        if step is SStep.STAN_FOR_REQUEST:
            assert isinstance(event, ev.StanAllocated)
            self.stan = event.stan
            self.step = SStep.BEGIN
            return [ev.BeginSettlement(self.batch, event.stan, self.domestic, self.foreign,
                                      self.operator)]
        if step is SStep.BEGIN:
            assert isinstance(event, ev.SettlementBegun)
            self.settlement_id = event.settlement_id
            self.step = SStep.AWAIT_REQUEST_REPLY
            msg = settlement_request(
                self.stan, self.term, self.batch, self.operator,
                settlement_field48(self.domestic, self.foreign), self.currency,
            )
            return [ev.SendRequest(msg, mac=False, timeout=self.timeout)]
        if step is SStep.AWAIT_REQUEST_REPLY:
            return self._on_request_reply(event)
        if step is SStep.RECORD_REPLY:
            assert isinstance(event, ev.Done)
            assert self.results is not None
            if self.results == ("1", "1"):
                return self._stan_for_end()
            return self._load()
        if step is SStep.LOAD:
            assert isinstance(event, ev.UploadItemsLoaded)
            if not event.items:
                return self._stan_for_end()
            self._items = event.items
            self.step = SStep.STAN_FOR_UPLOAD
            return [ev.AllocateStan()]
        if step is SStep.STAN_FOR_UPLOAD:
            assert isinstance(event, ev.StanAllocated)
            first, first_pan = self._items[0]
            if first.entry_mode == "chip" and first.icc_data:
                # A chip record goes alone, with its 55 (docs/dialect.md, "Chip"); the rest of
                # the loaded items are loaded again after it is marked.
                self.pending_items = (first.id,)
                msg = chip_upload_request(event.stan, self.term, self.batch, ChipUploadItem(
                    trace=first.stan, pan=first_pan, amount=first.amount,
                    pos_entry=first.pos_entry, icc_data=first.icc_data, card_seq=first.card_seq,
                    currency=first.currency, proc=WIRE[first.kind].proc))
            else:
                stripe = list(itertools.takewhile(
                    lambda item: not (item[0].entry_mode == "chip" and item[0].icc_data),
                    self._items))
                items = [UploadItem(foreign=rec.foreign, trace=rec.stan, pan=pan, amount=rec.amount)
                         for rec, pan in stripe]
                self.pending_items = tuple(rec.id for rec, _ in stripe)
                msg = batch_upload_request(event.stan, self.term, self.batch, items)
            self._items = ()
            self.step = SStep.AWAIT_UPLOAD_REPLY
            return [ev.SendRequest(msg, mac=False, timeout=self.timeout)]
        if step is SStep.AWAIT_UPLOAD_REPLY:
            failed = self._unless_approved(event, "batch upload")
            if failed:
                return failed
            self.step = SStep.MARK
            assert self.settlement_id is not None
            return [ev.MarkUploaded(self.settlement_id, self.pending_items)]
        if step is SStep.MARK:
            self.uploaded += len(self.pending_items)
            self.pending_items = ()
            return self._load()
        if step is SStep.STAN_FOR_END:
            assert isinstance(event, ev.StanAllocated)
            assert self.settlement_id is not None
            self.end_stan = event.stan
            self.step = SStep.RECORD_END_STAN
            return [ev.RecordEndStan(self.settlement_id, event.stan)]
        if step is SStep.RECORD_END_STAN:
            assert isinstance(event, ev.Done)
            return self._send_end()
        if step is SStep.AWAIT_END_REPLY:
            failed = self._unless_approved(event, "end of upload")
            if failed:
                return failed
            self.step = SStep.FINISH
            assert self.settlement_id is not None
            return [ev.FinishSettlement(self.settlement_id)]
        if step is SStep.FINISH:
            self.step = SStep.DONE
            assert self.results is not None
            key = "settled_balanced" if self.results == ("1", "1") else "settled_unbalanced"
            return [ev.Finish(TxnResult("settled", key, detail=f"batch {self.batch}"))]
        if step is SStep.ABANDON:
            self.step = SStep.DONE
            return [ev.Finish(TxnResult("failed", "settlement_no_reply", detail=self._why))]
        raise TypeError(f"unexpected {event!r} at {step.value}")

    def _on_request_reply(self, event: object) -> list[ev.Action]:
        assert self.settlement_id is not None
        if isinstance(event, ev.ReplyLost):
            return self._abandon(f"no reply to the settlement request ({event.reason})")
        assert isinstance(event, ev.ReplyReceived)
        fields = event.message.fields
        code = fields.get("39", "")
        if code != "00":
            return self._abandon(f"host refused the settlement ({code})")
        try:
            dom_totals, dom, fgn_totals, fgn = parse_settlement_field48(fields.get("48", ""))
        except RemoteProtocolError as exc:
            return self._abandon(f"settlement reply unreadable: {exc}")
        for side, result, theirs, ours in (("domestic", dom, dom_totals, self.domestic),
                                           ("foreign", fgn, fgn_totals, self.foreign)):
            if result == "1" and theirs != ours:
                return self._abandon(f"settlement reply malformed: the {side} side is called "
                                     f"balanced over totals {totals_tuple(theirs)}, not the "
                                     f"{totals_tuple(ours)} sent")
        self.results = (dom, fgn)
        self.step = SStep.RECORD_REPLY
        return [ev.RecordSettlementReply(self.settlement_id, dom, fgn)]

    def _abandon(self, why: str) -> list[ev.Action]:
        assert self.settlement_id is not None
        self._why = why
        self.step = SStep.ABANDON
        return [ev.AbandonSettlement(self.settlement_id, why)]

    def _load(self) -> list[ev.Action]:
        assert self.settlement_id is not None
        self.step = SStep.LOAD
        return [ev.LoadUploadItems(self.settlement_id, UPLOAD_CHUNK)]

    def _stan_for_end(self) -> list[ev.Action]:
        if self.end_stan is not None:
            return self._send_end()  # a resend: the same STAN, so the host sees a repeat
        self.step = SStep.STAN_FOR_END
        return [ev.AllocateStan()]

    def _send_end(self) -> list[ev.Action]:
        assert self.end_stan is not None
        self.step = SStep.AWAIT_END_REPLY
        balanced = self.results == ("1", "1")
        msg = batch_upload_end(self.end_stan, self.term, self.batch, self.uploaded, balanced)
        return [ev.SendRequest(msg, mac=False, timeout=self.timeout)]

    def _unless_approved(self, event: object, what: str) -> list[ev.Action]:
        """Empty when the host answered 00; otherwise the interruption to report."""
        if isinstance(event, ev.ReplyLost):
            return self._interrupted(f"{what} not acknowledged ({event.reason})")
        assert isinstance(event, ev.ReplyReceived)
        code = event.message.fields.get("39", "")
        if code != "00":
            return self._interrupted(f"host refused the {what} ({code})", code)
        return []

    def _interrupted(self, why: str, code: str | None = None) -> list[ev.Action]:
        self.step = SStep.DONE
        return [ev.Finish(TxnResult("interrupted", "settlement_interrupted", response_code=code,
                                    detail=why + "; it resumes at the next start or settle"))]
