"""Plain data the engine, the journal and the app pass between them.

Card data lives here only in memory: CardRead carries tracks for the one
request that needs them, and nothing in this module is ever written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind, mask_pan


@dataclass(frozen=True)
class CardRead:
    """A card as the reader (or keyed entry) delivered it; lives only in memory."""

    entry_mode: str  # "swipe" | "fallback" (swipe after a failed chip read) | "chip" | "keyed"
    pan: str
    expiry: str | None = None  # YYMM
    service_code: str | None = None
    track2: str | None = None
    track3: str | None = None
    card_seq: str | None = None
    icc_data: str | None = None

    def __repr__(self) -> str:  # never show tracks or the full PAN
        return f"CardRead({self.entry_mode}, {mask_pan(self.pan)})"

    @property
    def pin_required(self) -> bool:
        """ISO 7813 service code digit 3: 0, 3, 5, 6, 7 demand a PIN."""
        return bool(self.service_code) and self.service_code[2] in "03567"

    @property
    def is_chip_card(self) -> bool:
        """Service code digit 1 of 2 or 6 marks an IC card (swipe -> "insert chip")."""
        return bool(self.service_code) and self.service_code[0] in "26"


@dataclass(frozen=True)
class OriginalRef:
    """What a void, refund or completion refers to."""

    record_id: int | None = None  # set when the original is in this journal
    kind: TxnKind | None = None
    state: TxnState | None = None
    amount: int | None = None
    batch: str | None = None
    trace: str | None = None  # the original STAN
    rrn: str | None = None
    auth_code: str | None = None
    date: str | None = None  # MMDD
    pan: str | None = field(default=None, repr=False)  # decrypted in memory only
    refunded: int = 0  # fen refunded against it (done, or stored and still owed)
    # Kinds of the follow-ups that count against it (states.LIVE_FOLLOW_UP): a sale with a
    # refund can no longer be voided, a pre-auth with a completion can no longer be voided...
    follow_ups: tuple[TxnKind, ...] = ()


@dataclass(frozen=True)
class RequestKey:
    """An ECR request's repeat key: who asked (the peer's source, e.g. "ecr tcp 10.0.0.7") and the
    till's own name for the request (its id, or its ref). The journal writes it with the record."""

    source: str
    key: str


@dataclass(frozen=True)
class TxnRequest:
    kind: TxnKind
    amount: int | None = None  # fen; None for balance and voids (taken from the original)
    operator: str = "01"
    original: OriginalRef | None = None
    reference: str | None = None  # ECR / held-order reference carried to the receipt
    held_order_id: int | None = None  # the held order this sale pays, or this void/refund cancels
    request_key: RequestKey | None = None  # the ECR request this answers (a retry finds the record)


@dataclass(frozen=True)
class PendingDraft:
    """Everything the journal stores for a new record (counters are allocated there)."""

    kind: TxnKind
    amount: int
    currency: str
    pan: str = field(repr=False)
    pan_masked: str
    foreign: bool
    entry_mode: str
    pin_entered: bool
    operator: str
    local_date: str  # MMDD
    local_time: str  # hhmmss
    advice: bool = False
    reference: str | None = None
    orig_id: int | None = None
    orig_batch: str | None = None
    orig_stan: str | None = None
    orig_rrn: str | None = None
    orig_auth: str | None = None
    orig_date: str | None = None
    held_order_id: int | None = None  # linked to its order in the same commit as the record
    request_key: RequestKey | None = None  # linked to its record in the record's own commit


@dataclass(frozen=True)
class TxnRecord:
    """A journal row as the rest of the firmware sees it (PAN only masked)."""

    id: int
    kind: TxnKind
    state: TxnState
    stan: str
    batch: str
    invoice: str
    amount: int
    currency: str
    pan_masked: str
    foreign: bool
    entry_mode: str
    pin_entered: bool
    operator: str
    local_date: str
    local_time: str
    created_at: float
    reference: str | None = None
    orig_id: int | None = None
    orig_batch: str | None = None
    orig_stan: str | None = None
    orig_rrn: str | None = None
    orig_auth: str | None = None
    orig_date: str | None = None
    response_code: str | None = None
    rrn: str | None = None
    auth_code: str | None = None
    card_org: str | None = None
    reversal_reason: str | None = None
    reversal_attempts: int = 0
    advice_attempts: int = 0
    uploaded: bool = False
    settlement_id: int | None = None
    problem: str | None = None  # why a QUARANTINED record cannot be sent (words)


@dataclass(frozen=True)
class HostResult:
    """The parts of a reply the journal keeps."""

    response_code: str
    rrn: str | None = None
    auth_code: str | None = None
    card_org: str | None = None
    balance: int | None = None  # fen, balance enquiry only (shown, never stored)


@dataclass(frozen=True)
class TxnResult:
    """What the operator (screen or ECR) is told at the end of a flow."""

    status: str  # approved | declined | refused | cancelled | reversed | reversal_pending
    #              | stored | failed
    message_key: str  # catalog key or response code
    record: TxnRecord | None = None
    response_code: str | None = None
    detail: str = ""
    balance: int | None = None
    pin_tries_left: int | None = None  # a wrong PIN the till must ask again: tries left


@dataclass(frozen=True)
class SettlementRow:
    """A settlement in progress or finished, as the journal keeps it (resumable)."""

    id: int
    batch: str
    state: str  # REQUESTED | UPLOADING | ENDING | DONE | ABANDONED
    stan: str
    domestic: tuple[int, int, int, int]  # debit amount, debit count, credit amount, credit count
    foreign: tuple[int, int, int, int]
    result_domestic: str | None = None  # '1' balanced, '2' unbalanced, '3' error
    result_foreign: str | None = None
    uploaded_count: int = 0
    started_at: float = 0.0
    finished_at: float | None = None
    end_stan: str | None = None  # STAN of the upload end, reused if it must be resent

    @property
    def balanced(self) -> bool:
        return self.result_domestic == "1" and self.result_foreign == "1"
