"""Local checks that refuse a transaction with a clear reason before anything is sent.

Each check returns None when the request may go on, or a Refusal whose key
names a catalog message (en / zh_CN) and whose detail says what was wrong.

The rules between operations live here and only here (the keypad's original
lookup and the engine both ask check_original): what went back to a card never
exceeds what was taken from it, and an original is either voided or refunded,
never both. The simulator's host enforces the same rules on its own books.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass

from firmware.digits import is_digits
from firmware.engine.cardclass import luhn_ok
from firmware.engine.model import CardRead, OriginalRef, TxnRequest
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind

# Which original kinds each follow-up transaction may refer to (a refund returns the money of
# a sale or of a pre-authorisation completion; CUP's 退货 covers both).
ORIGINAL_KINDS: dict[TxnKind, frozenset[TxnKind]] = {
    TxnKind.VOID: frozenset({TxnKind.SALE}),
    TxnKind.REFUND: frozenset({TxnKind.SALE, TxnKind.COMPLETION}),
    TxnKind.PREAUTH_VOID: frozenset({TxnKind.PREAUTH}),
    TxnKind.COMPLETION: frozenset({TxnKind.PREAUTH}),
    TxnKind.COMPLETION_VOID: frozenset({TxnKind.COMPLETION}),
}
# The follow-ups that end an original's life for another kind of follow-up: a refunded sale
# cannot be voided (the money would go back twice), a completed pre-auth cannot be voided or
# completed again. (A voided original is refused by its state, VOIDED.)
BLOCKED_BY: dict[TxnKind, frozenset[TxnKind]] = {
    TxnKind.VOID: frozenset({TxnKind.REFUND, TxnKind.VOID}),
    TxnKind.COMPLETION_VOID: frozenset({TxnKind.REFUND, TxnKind.COMPLETION_VOID}),
    TxnKind.PREAUTH_VOID: frozenset({TxnKind.COMPLETION, TxnKind.PREAUTH_VOID}),
    TxnKind.COMPLETION: frozenset({TxnKind.COMPLETION, TxnKind.PREAUTH_VOID}),
    TxnKind.REFUND: frozenset({TxnKind.VOID, TxnKind.COMPLETION_VOID}),
}
_BLOCK_KEY: dict[TxnKind, str] = {
    TxnKind.REFUND: "original_refunded",
    TxnKind.VOID: "original_void_open",
    TxnKind.COMPLETION_VOID: "original_void_open",
    TxnKind.PREAUTH_VOID: "original_void_open",
    TxnKind.COMPLETION: "preauth_completed",
}
# CUP field 37: the retrieval reference number, 12 characters.
RRN_LENGTH = 12
# Follow-ups that must stay inside the open batch (the host cannot void a settled one).
SAME_BATCH_ONLY: frozenset[TxnKind] = frozenset({TxnKind.VOID, TxnKind.COMPLETION_VOID})


@dataclass(frozen=True)
class Refusal:
    key: str
    detail: str


@dataclass(frozen=True)
class Limits:
    max_amount: int = 10_000_000  # fen (100,000.00)
    allow_fallback_swipe: bool = False  # swipe a chip card after a failed chip read


def check_amount(request: TxnRequest, limits: Limits) -> Refusal | None:
    if request.kind is TxnKind.BALANCE:
        return None
    if request.kind in (TxnKind.VOID, TxnKind.PREAUTH_VOID, TxnKind.COMPLETION_VOID):
        return None  # the amount is the original's
    amount = request.amount
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        return Refusal("invalid_amount", "the amount must be a positive whole number of fen")
    if amount > limits.max_amount:
        return Refusal("amount_over_limit", f"the amount exceeds the limit of {limits.max_amount} fen")
    return None


def check_card(card: CardRead, today_yymm: str, limits: Limits) -> Refusal | None:
    if not luhn_ok(card.pan):
        return Refusal("card_invalid", "the card number fails its check digit")
    if card.expiry is not None:
        if len(card.expiry) != 4 or not is_digits(card.expiry) or not 1 <= int(card.expiry[2:]) <= 12:
            return Refusal("card_invalid", "the card's expiry date cannot be read")
        if card.expiry < today_yymm:
            return Refusal("card_expired", f"the card expired (YYMM {card.expiry})")
    if card.entry_mode == "swipe" and card.is_chip_card and not limits.allow_fallback_swipe:
        return Refusal("insert_chip", "this is a chip card: insert it instead of swiping")
    return None


def check_original(request: TxnRequest, batch: str) -> Refusal | None:
    """Follow-ups need a usable original. A refund may name one from outside this journal
    (original RRN and date; batch and trace where known); one found here is checked as fully
    as a void's."""
    wanted = ORIGINAL_KINDS.get(request.kind)
    if wanted is None:
        return None
    original: OriginalRef | None = request.original
    if original is None:
        return Refusal("original_not_found", "no original transaction was given")
    if request.kind is TxnKind.REFUND:
        refusal = _check_refund_reference(original)
        if refusal is not None or original.record_id is None:
            return refusal
    elif original.record_id is None:
        return Refusal("original_not_found", "the original is not in this terminal's journal")
    if original.kind not in wanted:
        names = " or ".join(sorted(k.value for k in wanted))
        return Refusal("original_wrong_type", f"the original is a {original.kind}, not a {names}")
    if original.state is TxnState.VOIDED:
        return Refusal("original_already_voided", "the original has already been voided")
    if original.state is not TxnState.APPROVED:
        return Refusal("original_not_approved", "the original was not approved")
    blockers = BLOCKED_BY[request.kind] & set(original.follow_ups)
    if blockers:
        blocker = sorted(blockers)[0]
        return Refusal(_BLOCK_KEY[blocker],
                       f"the original already has a {blocker.value} (done or still being resolved)")
    if request.kind in SAME_BATCH_ONLY and original.batch != batch:
        return Refusal("original_settled", "the original is settled: use a refund instead")
    if request.kind is TxnKind.REFUND:
        return _check_refund_amount(request, original)
    if (request.kind is TxnKind.COMPLETION and request.amount is not None
            and original.amount is not None and request.amount > original.amount):
        return Refusal("completion_over_preauth", "the completion exceeds the pre-authorised amount")
    return None


def _check_refund_reference(original: OriginalRef) -> Refusal | None:
    """What every refund needs on the wire: the original RRN (37) and date (61.3)."""
    rrn = original.rrn or ""
    if len(rrn) != RRN_LENGTH or not rrn.isascii() or not rrn.isalnum():
        return Refusal("original_reference_invalid",
                       f"the original reference (RRN) must be {RRN_LENGTH} letters or digits")
    if not valid_mmdd(original.date):
        return Refusal("original_date_invalid", "the original date must be a real date as MMDD")
    for what, value in (("batch", original.batch), ("trace", original.trace)):
        if value is not None and not is_digits(value, 6, 6):
            return Refusal("original_not_found", f"the original {what} must be 6 digits")
    return None


def _check_refund_amount(request: TxnRequest, original: OriginalRef) -> Refusal | None:
    if original.amount is None or request.amount is None:
        return None
    left = original.amount - original.refunded
    if request.amount > left:
        return Refusal("refund_over_original",
                       f"the refund exceeds what is left to refund ({max(left, 0)} fen of "
                       f"{original.amount})")
    return None


def check_refund_card(request: TxnRequest, card: CardRead) -> Refusal | None:
    """A refund of an original in this journal goes back to the card that paid."""
    original = request.original
    if request.kind is not TxnKind.REFUND or original is None or not original.pan:
        return None
    if card.pan != original.pan:
        return Refusal("refund_card_differs",
                       f"the card is not the one the original was paid with "
                       f"(ending {original.pan[-4:]})")
    return None


def valid_mmdd(value: str | None) -> bool:
    """A real month and day (29 February allowed: the year of the original is not known)."""
    if not is_digits(value, 4, 4):
        return False
    assert value is not None
    month, day = int(value[:2]), int(value[2:])
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(2000, month)[1]
