"""Plain data the engine, the journal and the app pass between them.

Card data lives here only in memory: CardRead carries tracks for the one
request that needs them, and nothing in this module is ever written to disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind, mask_pan, pos_entry_for


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
    icc_data: str | None = None  # chip: the request's field 55 (hex), built by firmware/emv
    # chip: the cardholder verification the card's CVM list chose ("online_pin", "signature",
    # "none"), and the chip's record after the first GENERATE AC (hex TLV: AID, label, ARQC,
    # TVR, TSI...; no sensitive tag), which the journal keeps.
    chip_cvm: str | None = None
    chip_tags: str | None = None

    def __repr__(self) -> str:  # never show tracks or the full PAN
        return f"CardRead({self.entry_mode}, {mask_pan(self.pan)})"

    @property
    def pin_required(self) -> bool:
        """A chip card: its CVM list chose the online PIN. A stripe: ISO 7813 service code
        digit 3 of 0, 3, 5, 6 or 7 demands a PIN."""
        if self.entry_mode == "chip":
            return self.chip_cvm == "online_pin"
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
    invoice: str | None = None  # the original's voucher number (凭证号): what the merchant types
    trace: str | None = None  # the original STAN (a wire detail, filled in from the journal)
    rrn: str | None = None
    auth_code: str | None = None
    date: str | None = None  # MMDD
    card_org: str | None = None  # from the original's reply (field 63); a refund sends it back
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
    orig_card_org: str | None = None
    # How the card was read, as the request carries it (field 22; 60.4 + 60.5, "" for none):
    # kept so that a reversal rebuilt from the journal says what the original said.
    pos_entry: str = ""
    read_cap: str = ""
    orig_invoice: str | None = None  # the original's voucher number, printed on the slip
    held_order_id: int | None = None  # linked to its order in the same commit as the record
    request_key: RequestKey | None = None  # linked to its record in the record's own commit
    expiry_shown: str | None = None  # what the slip prints for the card's expiry (slip_expiry)
    card_seq: str | None = None  # chip: 5F34 (field 23)
    icc_data: str | None = None  # chip: the request's field 55 (hex), for the batch upload
    chip_tags: str | None = None  # chip: the first GENERATE AC's record (hex TLV)

    def __post_init__(self) -> None:
        # The engine sets pos_entry from the request it built; a draft made without one (tools,
        # tests) gets the value that request would have carried.
        if not self.pos_entry:
            object.__setattr__(self, "pos_entry", pos_entry_for(self.entry_mode, self.pin_entered))


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
    orig_card_org: str | None = None
    pos_entry: str = ""  # field 22 as the request carried it
    read_cap: str = ""  # 60.4 + 60.5 as the request carried them ("" for none)
    # The auth code of a reply that could not be trusted (its MAC failed): never shown as an
    # approval, only copied into the reversal's field 38 so the host finds what it approved.
    reversal_auth: str | None = None
    orig_invoice: str | None = None  # the original's voucher number (follow-ups)
    issuer_id: str | None = None  # field 44 of the reply: the issuing bank (发卡行)
    acquirer_id: str | None = None  # field 44 of the reply: the acquiring institution (收单行)
    expiry_shown: str | None = None  # the slip's expiry, already masked (slip_expiry)
    card_seq: str | None = None  # chip: 5F34, field 23
    icc_data: str | None = None  # chip: the request's field 55 as sent (hex; no sensitive tag)
    chip_tags: str | None = None  # chip: the outcome's tags (hex TLV; firmware/emv/field55.py)


@dataclass(frozen=True)
class HostResult:
    """The parts of a reply the journal keeps."""

    response_code: str
    rrn: str | None = None
    auth_code: str | None = None
    card_org: str | None = None
    balance: int | None = None  # fen, balance enquiry only (shown, never stored)
    issuer_id: str | None = None
    acquirer_id: str | None = None


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


def slip_expiry(expiry: str | None) -> str | None:
    """What a slip prints for a card's expiry (YYMM): masked, as CUP slips may print it, so the
    expiry itself is never written to the journal; None when the card carried none (keyed)."""
    return "**/**" if expiry else None


def institution_ids(field44: str | None) -> tuple[str | None, str | None]:
    """(issuer, acquirer) from a reply's field 44: two 11-character institution codes, each
    left-justified and space padded; a missing or blank one is None."""
    text = field44 or ""
    issuer, acquirer = text[:11].strip(), text[11:22].strip()
    return issuer or None, acquirer or None


# What each kind does to the merchant's money (the net a report shows): sales and completions
# bring it in, voids, completion voids and refunds give it back; a pre-authorisation and its void
# only hold funds and move none. The same split as the 0500's debit/credit totals.
NET_SIGN: dict[TxnKind, int] = {
    TxnKind.SALE: 1, TxnKind.COMPLETION: 1,
    TxnKind.VOID: -1, TxnKind.COMPLETION_VOID: -1, TxnKind.REFUND: -1,
    TxnKind.PREAUTH: 0, TxnKind.PREAUTH_VOID: 0, TxnKind.BALANCE: 0,
}


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
