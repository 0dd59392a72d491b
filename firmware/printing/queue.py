"""The print queue's rules: job states, allowed transitions, and what CANCEL and a
power loss do to a job (cancel-semantics.md, "A print job"). Pure: the journal
stores jobs and enforces these rules; firmware/app/services/spooler.py carries them out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from firmware.printing.layout import CopyKind

__all__ = ["REPORT_KINDS", "CopyKind", "JobKind", "PrintJob", "PrintState"]


class PrintState(enum.StrEnum):
    QUEUED = "QUEUED"
    PRINTING = "PRINTING"
    PAUSED = "PAUSED"
    DONE = "DONE"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"


class JobKind(enum.StrEnum):
    RECEIPT = "receipt"  # the copies of a transaction's receipt
    VOID_SLIP = "void_slip"  # "VOID / 作废" naming a receipt whose printing was cancelled
    TEST = "test"  # printer test page (diagnostics)
    # Reports are rebuilt from the journal at print time, like receipts: the job names its
    # settlement (Z) or its batch (X, list), never a stored document.
    SETTLEMENT = "settlement"  # the Z report of one finished settlement
    SUBTOTALS = "subtotals"  # the X report: totals of a batch not yet settled
    TXN_LIST = "txn_list"  # the batch's transactions, one or two lines each
    HELD_TRAIL = "held_trail"  # the audit trail of one held order ("keep the evidence")
    DEREG_REPORT = "dereg_report"  # the deregistration report, kept as lines in terminal_state
    # A refund the till was told "stored" and the host then declined: the slip says it was
    # NOT made (rebuilt from the record, like a receipt).
    ADVICE_DECLINED = "advice_declined"


REPORT_KINDS = frozenset({JobKind.SETTLEMENT, JobKind.SUBTOTALS, JobKind.TXN_LIST})

OPEN_STATES = (PrintState.QUEUED, PrintState.PRINTING, PrintState.PAUSED)

_S = PrintState
TRANSITIONS: dict[PrintState, frozenset[PrintState]] = {
    _S.QUEUED: frozenset({_S.PRINTING, _S.CANCELLED, _S.FAILED}),
    # PRINTING -> QUEUED only at start-up: the copy under way when the power went.
    _S.PRINTING: frozenset({_S.DONE, _S.PAUSED, _S.CANCELLED, _S.FAILED, _S.QUEUED}),
    _S.PAUSED: frozenset({_S.PRINTING, _S.CANCELLED, _S.FAILED, _S.QUEUED}),
    _S.DONE: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.FAILED: frozenset(),
}


class PrintTransitionError(Exception):
    pass


def check_transition(old: PrintState, new: PrintState) -> None:
    if new not in TRANSITIONS[old]:
        raise PrintTransitionError(f"a print job cannot go from {old} to {new}")


@dataclass(frozen=True)
class PrintJob:
    """A queued document: which receipt (or slip), which copies, how far it got."""

    id: int
    kind: JobKind
    state: PrintState
    copies: tuple[CopyKind, ...]
    copies_done: int
    txn_id: int | None = None
    reprint: bool = False  # the whole job is a requested reprint: every copy marked REPRINT
    # The copy under way had started on paper before (power loss, paper out): printing it
    # again must say REPRINT so two slips can never both pass as the original.
    copy_restarted: bool = False
    printed_any: bool = False  # some of the current copy reached the paper
    cancel_requested: bool = False
    needs_confirm: bool = False  # re-queued after a power loss: the operator says print or drop
    voids_job: int | None = None
    reason: str | None = None  # i18n key of why it is paused / failed / cancelled
    title: str = ""
    created_at: float = 0.0
    settlement_id: int | None = None  # SETTLEMENT: the settlement whose Z report this is
    batch: str | None = None  # SUBTOTALS / TXN_LIST: the batch they report on
    held_order_id: int | None = None  # HELD_TRAIL: the order whose trail this is

    @property
    def current_copy(self) -> CopyKind | None:
        return self.copies[self.copies_done] if self.copies_done < len(self.copies) else None

    @property
    def marked_reprint(self) -> bool:
        """Whether the copy about to print carries the REPRINT mark."""
        return self.reprint or self.copy_restarted


class CancelAction(enum.Enum):
    """What CANCEL does to a job, by the table in cancel-semantics.md."""

    DROP = "drop"  # nothing of it on paper: removed, recorded CANCELLED
    DROP_WITH_VOID_SLIP = "drop_with_void_slip"  # part of it is on paper and nothing will finish it
    AFTER_CURRENT_COPY = "after_current_copy"  # the copy finishes (no half slips), then a VOID slip
    NOTHING = "nothing"  # already finished


def cancel_action(job: PrintJob) -> CancelAction:
    if job.state not in OPEN_STATES:
        return CancelAction.NOTHING
    if job.state is PrintState.QUEUED:
        if job.needs_confirm and job.printed_any:
            # Re-queued after a power loss with a copy half on paper: the operator declined
            # the reprint, so the paper gets its VOID slip.
            return CancelAction.DROP_WITH_VOID_SLIP
        return CancelAction.DROP
    if job.state is PrintState.PAUSED and not job.printed_any:
        return CancelAction.DROP  # "else as QUEUED"
    return CancelAction.AFTER_CURRENT_COPY


class RecoveryAction(enum.Enum):
    KEEP = "keep"  # QUEUED: still queued, prints after start-up
    REQUEUE_FOR_CONFIRM = "requeue_for_confirm"  # re-queued marked REPRINT, after confirmation
    CANCEL_WITH_VOID_SLIP = "cancel_with_void_slip"  # a cancel was under way and paper was used
    DROP = "drop"  # a cancel was under way before anything printed
    NONE = "none"


def recovery_action(job: PrintJob) -> RecoveryAction:
    """What start-up does with a job found open after a power loss."""
    if job.state is PrintState.QUEUED:
        return RecoveryAction.KEEP
    if job.state in (PrintState.PRINTING, PrintState.PAUSED):
        if job.cancel_requested:
            on_paper = job.printed_any or job.copies_done > 0
            return RecoveryAction.CANCEL_WITH_VOID_SLIP if on_paper else RecoveryAction.DROP
        return RecoveryAction.REQUEUE_FOR_CONFIRM
    return RecoveryAction.NONE
