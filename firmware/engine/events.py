"""Events into the engine and actions out of it: frozen dataclasses, nothing else.

The app carries each action out (journal write, host request, card read, ...)
and feeds the matching event back; a test can stop between any two actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.engine.model import CardRead, HostResult, PendingDraft, TxnRecord, TxnResult
from firmware.engine.states import TxnEvent
from firmware.host.messages import Message, SideTotals

# ---- actions (engine -> app) ------------------------------------------------


@dataclass(frozen=True)
class AskAuthorisation:
    """The supervisor password is needed (keypad, or the ECR request's field)."""

    purpose: str


@dataclass(frozen=True)
class AskCard:
    purpose: str


@dataclass(frozen=True)
class AskPin:
    pan_masked: str
    attempt: int
    bypass_allowed: bool
    tries_left: int | None = None  # after a wrong PIN (55): this try included; else None


@dataclass(frozen=True)
class WritePending:
    draft: PendingDraft


@dataclass(frozen=True)
class SendRequest:
    message: Message
    mac: bool
    timeout: float


@dataclass(frozen=True)
class WriteOutcome:
    record_id: int
    event: TxnEvent
    result: HostResult | None = None
    reversal_reason: str | None = None
    void_of: int | None = None  # approving a void marks this original VOIDED in the same commit
    receipt: bool = False  # queue the receipt in the same commit (an outcome the cardholder keeps)
    problem: str | None = None  # QUARANTINE: why the owed message cannot be built (words)
    # A stored refund the host later declined: the till was told "stored", so the journal
    # queues a slip saying it was NOT made, in the same commit, and audits it.
    declined_after_stored: bool = False
    chip_tags: str | None = None  # chip: the second GENERATE AC's record, kept with the outcome


@dataclass(frozen=True)
class AuditNote:
    action: str
    detail: str
    outcome: str


@dataclass(frozen=True)
class AllocateStan:
    """A management message needs the next STAN (durably consumed)."""


@dataclass(frozen=True)
class BeginSettlement:
    batch: str
    stan: str
    domestic: SideTotals
    foreign: SideTotals
    operator: str  # who settles: the settlement row and its report name them


@dataclass(frozen=True)
class RecordSettlementReply:
    settlement_id: int
    result_domestic: str
    result_foreign: str


@dataclass(frozen=True)
class LoadUploadItems:
    settlement_id: int
    limit: int


@dataclass(frozen=True)
class MarkUploaded:
    settlement_id: int
    record_ids: tuple[int, ...]


@dataclass(frozen=True)
class RecordEndStan:
    settlement_id: int
    stan: str


@dataclass(frozen=True)
class AbandonSettlement:
    settlement_id: int
    reason: str


@dataclass(frozen=True)
class FinishSettlement:
    settlement_id: int


@dataclass(frozen=True)
class CompleteChip:
    """A chip card's transaction after the host's answer: issuer authentication, scripts and
    the second GENERATE AC (firmware/emv). response_code is None when no usable answer came;
    icc_reply is the reply's field 55 (hex: 91, 71, 72), if any."""

    response_code: str | None
    icc_reply: str | None = None


@dataclass(frozen=True)
class CloseScriptAdvice:
    """The issuer-script result advice of a chip record was acknowledged (sent) or is given up
    (why says which, audited)."""

    record_id: int
    sent: bool
    why: str


@dataclass(frozen=True)
class Finish:
    result: TxnResult


Action = (
    AskAuthorisation | AskCard | AskPin | WritePending | SendRequest | WriteOutcome | AuditNote
    | CompleteChip | CloseScriptAdvice | AllocateStan | BeginSettlement | RecordSettlementReply
    | LoadUploadItems | MarkUploaded | RecordEndStan | AbandonSettlement | FinishSettlement | Finish
)

# ---- events (app -> engine) -------------------------------------------------


@dataclass(frozen=True)
class Authorised:
    ok: bool


@dataclass(frozen=True)
class CardPresented:
    card: CardRead


@dataclass(frozen=True)
class CardDeclined:
    """The chip card ended the transaction before anything was written or sent: it declined
    offline (AAC at the first GENERATE AC) or the terminal cannot accept it (no common
    application, blocked, restrictions). key is a message catalog key; detail the words."""

    key: str
    detail: str


@dataclass(frozen=True)
class ChipCompleted:
    """The card's word after the host's: accepted (TC at the second GENERATE AC) or not (AAC,
    removed, mute, cancelled: reason says which); chip_tags its record of it (hex TLV)."""

    accepted: bool
    chip_tags: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class PinEntered:
    pin_block: bytes | None = field(default=None, repr=False)  # None: bypassed


@dataclass(frozen=True)
class NoPinAgain:
    """The PIN is wanted again after a wrong one, and no one can type it here (an ECR request
    that brought its PIN): the till is told how many tries are left."""


@dataclass(frozen=True)
class PendingWritten:
    record: TxnRecord


@dataclass(frozen=True)
class ReplyReceived:
    message: Message


@dataclass(frozen=True)
class ReplyLost:
    reason: str  # firmware.host.errors.NoReply reasons
    auth_code: str | None = None  # field 38 of a reply that was refused (bad MAC), if any


@dataclass(frozen=True)
class OutcomeWritten:
    record: TxnRecord


@dataclass(frozen=True)
class StanAllocated:
    stan: str


@dataclass(frozen=True)
class SettlementBegun:
    settlement_id: int


@dataclass(frozen=True)
class UploadItemsLoaded:
    # (record, clear PAN) pairs; the PAN is decrypted only to build the 0320
    items: tuple[tuple[TxnRecord, str], ...] = field(repr=False)


@dataclass(frozen=True)
class Done:
    """A journal action without a result of its own completed."""


@dataclass(frozen=True)
class Cancel:
    """The operator pressed CANCEL (or the ECR sent cancel)."""


Event = (
    Authorised | CardPresented | CardDeclined | PinEntered | NoPinAgain | PendingWritten
    | ReplyReceived | ReplyLost | ChipCompleted | OutcomeWritten | StanAllocated | SettlementBegun
    | UploadItemsLoaded | Done | Cancel
)
