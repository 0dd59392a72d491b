"""Local checks that refuse a transaction with a clear reason before anything is sent.

Each check returns None when the request may go on, or a Refusal whose key
names a catalog message (en / zh_CN) and whose detail says what was wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.digits import is_digits
from firmware.engine.cardclass import luhn_ok
from firmware.engine.model import CardRead, OriginalRef, TxnRequest
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind

# Which original kind each follow-up transaction may refer to.
ORIGINAL_KIND: dict[TxnKind, TxnKind] = {
    TxnKind.VOID: TxnKind.SALE,
    TxnKind.REFUND: TxnKind.SALE,
    TxnKind.PREAUTH_VOID: TxnKind.PREAUTH,
    TxnKind.COMPLETION: TxnKind.PREAUTH,
    TxnKind.COMPLETION_VOID: TxnKind.COMPLETION,
}
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
    """Follow-ups need a usable original; refunds may name one from outside the journal."""
    wanted = ORIGINAL_KIND.get(request.kind)
    if wanted is None:
        return None
    original: OriginalRef | None = request.original
    if original is None:
        return Refusal("original_not_found", "no original transaction was given")
    if request.kind is TxnKind.REFUND:
        if not original.rrn or not original.date:
            return Refusal("original_not_found", "a refund needs the original reference and date")
        if (original.amount is not None and request.amount is not None
                and request.amount + original.refunded > original.amount):
                return Refusal("refund_over_original", "the refund exceeds what is left to refund")
        return None
    if original.record_id is None:
        return Refusal("original_not_found", "the original is not in this terminal's journal")
    if original.kind is not wanted:
        return Refusal("original_wrong_type", f"the original is a {original.kind}, not a {wanted}")
    if original.state is TxnState.VOIDED:
        return Refusal("original_already_voided", "the original has already been voided")
    if original.state is not TxnState.APPROVED:
        return Refusal("original_not_approved", "the original was not approved")
    if request.kind in SAME_BATCH_ONLY and original.batch != batch:
        return Refusal("original_settled", "the original is settled: use a refund instead")
    if (request.kind is TxnKind.COMPLETION and request.amount is not None
            and original.amount is not None and request.amount > original.amount):
            return Refusal("completion_over_preauth", "the completion exceeds the pre-authorised amount")
    return None
