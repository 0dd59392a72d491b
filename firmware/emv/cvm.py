"""Cardholder verification (EMV 4.3 Book 3 10.5, Annex C3): walking the card's CVM list (8E).

The list is X (4 bytes), Y (4 bytes) and 2-byte rules (CVM code, condition). For each rule whose
condition holds: a method the terminal performs ends the walk (online PIN needs the app to ask
for the PIN first: `NeedOnlinePin`); a method it does not perform, or one that fails, goes on to
the next rule when the rule's "apply succeeding" bit is set, else verification has failed. This
terminal performs online enciphered PIN, signature and "no CVM required"; offline PIN is refused
with a reason. The result is the CVM Results (9F34: code, condition, result) and TVR bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from firmware.emv.tvr import Tvr

APPLY_SUCCEEDING = 0x40
METHOD_MASK = 0x3F

FAIL_CVM = 0x00
PLAINTEXT_PIN_ICC = 0x01
ONLINE_PIN = 0x02
PLAINTEXT_PIN_ICC_SIGNATURE = 0x03
ENCIPHERED_PIN_ICC = 0x04
ENCIPHERED_PIN_ICC_SIGNATURE = 0x05
SIGNATURE = 0x1E
NO_CVM = 0x1F
NO_CVM_PERFORMED = 0x3F  # 9F34 byte 1 when no rule was performed

OFFLINE_PIN_METHODS = frozenset({PLAINTEXT_PIN_ICC, PLAINTEXT_PIN_ICC_SIGNATURE,
                                 ENCIPHERED_PIN_ICC, ENCIPHERED_PIN_ICC_SIGNATURE})

RESULT_UNKNOWN = 0x00
RESULT_FAILED = 0x01
RESULT_SUCCESSFUL = 0x02

NO_BITS = Tvr(0)
OFFLINE_PIN_REFUSED = "offline PIN not supported on this terminal"


@dataclass(frozen=True)
class CvmContext:
    """What the conditions need about the transaction and the terminal."""

    amount: int                   # fen, in the transaction currency
    currency: bytes               # 5F2A, 2 bytes
    app_currency: bytes | None    # 9F42 from the card
    txn_type: int                 # 9C: 00 goods/services, 01 cash, 09 cashback
    other_amount: int = 0
    online_pin: bool = True       # the terminal's capabilities
    signature: bool = True
    no_cvm: bool = True
    unattended: bool = False


@dataclass(frozen=True)
class NeedOnlinePin:
    """Rule `index` asks for an online PIN: ask the cardholder, then `after_pin`."""

    index: int
    tvr: Tvr
    notes: tuple[str, ...]


@dataclass(frozen=True)
class CvmDone:
    method: str               # 'online_pin' | 'signature' | 'none' | 'failed'
    results: bytes            # 9F34
    tvr: Tvr
    notes: tuple[str, ...] = ()  # reasons in words (a refused rule, an unknown condition)


def _rules(cvm_list: bytes) -> list[tuple[int, int]]:
    body = cvm_list[8:]
    return [(body[i], body[i + 1]) for i in range(0, len(body) - 1, 2)]


def _condition(cond: int, method: int, ctx: CvmContext, x: int, y: int) -> bool | None:
    """Whether the condition holds; None for a condition code this terminal does not know."""
    cash = ctx.txn_type == 0x01
    cashback = ctx.txn_type == 0x09 or ctx.other_amount > 0
    in_app_currency = ctx.app_currency is not None and ctx.app_currency == ctx.currency
    if cond == 0x00:
        return True
    if cond == 0x01:
        return ctx.unattended and cash
    if cond == 0x02:
        return not (ctx.unattended and cash) and not cash and not cashback
    if cond == 0x03:
        return supported(method, ctx)
    if cond == 0x04:
        return cash and not ctx.unattended
    if cond == 0x05:
        return cashback
    if cond in (0x06, 0x07, 0x08, 0x09):
        if not in_app_currency:  # X and Y are in the application currency (9F42)
            return False
        limit = x if cond in (0x06, 0x07) else y
        return ctx.amount < limit if cond in (0x06, 0x08) else ctx.amount > limit
    return None


def supported(method: int, ctx: CvmContext) -> bool:
    if method == ONLINE_PIN:
        return ctx.online_pin
    if method == SIGNATURE:
        return ctx.signature
    if method == NO_CVM:
        return ctx.no_cvm
    # FAIL_CVM is always "performed"; offline PIN in any form never is (no PIN pad link to
    # the card on this terminal)
    return method == FAIL_CVM


def evaluate(cvm_list: bytes | None, ctx: CvmContext, *, start: int = 0,
             tvr: Tvr = NO_BITS, notes: tuple[str, ...] = ()) -> NeedOnlinePin | CvmDone:
    """Walk the rules from `start`."""
    if not cvm_list or len(cvm_list) < 10:
        # no list (or an empty one): ICC data missing, no CVM performed (Book 3 10.5)
        return CvmDone("none", bytes([NO_CVM_PERFORMED, 0, RESULT_UNKNOWN]),
                       tvr | Tvr.ICC_DATA_MISSING, (*notes, "the card has no CVM list"))
    x = int.from_bytes(cvm_list[0:4], "big")
    y = int.from_bytes(cvm_list[4:8], "big")
    rules = _rules(cvm_list)
    last: tuple[int, int] | None = None
    for index in range(start, len(rules)):
        code, cond = rules[index]
        method = code & METHOD_MASK
        holds = _condition(cond, method, ctx, x, y)
        if not holds:  # false, or a condition this terminal does not understand: next rule
            continue
        last = (code, cond)
        succeed = bool(code & APPLY_SUCCEEDING)
        if method == FAIL_CVM:
            return _failed(code, cond, tvr, notes)
        if method == ONLINE_PIN and ctx.online_pin:
            return NeedOnlinePin(index, tvr, notes)
        if method == SIGNATURE and ctx.signature:
            return CvmDone("signature", bytes([code, cond, RESULT_UNKNOWN]), tvr, notes)
        if method == NO_CVM and ctx.no_cvm:
            return CvmDone("none", bytes([code, cond, RESULT_SUCCESSFUL]), tvr, notes)
        if method in OFFLINE_PIN_METHODS:
            tvr |= Tvr.PIN_PAD_MISSING
            notes = (*notes, OFFLINE_PIN_REFUSED)
        elif method in (ONLINE_PIN, SIGNATURE, NO_CVM):
            notes = (*notes, f"CVM {method:02X} not supported by this terminal")
            if method == ONLINE_PIN:
                tvr |= Tvr.PIN_PAD_MISSING
        else:
            tvr |= Tvr.UNRECOGNISED_CVM
            notes = (*notes, f"unrecognised CVM {method:02X}")
        if not succeed:
            return _failed(code, cond, tvr, notes)
    if last is None:
        # no rule's condition held: verification failed (Book 3 10.5, last paragraph)
        return CvmDone("failed", bytes([NO_CVM_PERFORMED, 0, RESULT_FAILED]),
                       tvr | Tvr.CV_NOT_SUCCESSFUL, (*notes, "no CVM rule applies"))
    return _failed(*last, tvr, notes)


def _failed(code: int, cond: int, tvr: Tvr, notes: tuple[str, ...]) -> CvmDone:
    return CvmDone("failed", bytes([code, cond, RESULT_FAILED]), tvr | Tvr.CV_NOT_SUCCESSFUL,
                   notes)


def after_pin(cvm_list: bytes, ctx: CvmContext, need: NeedOnlinePin,
              entered: bool) -> NeedOnlinePin | CvmDone:
    """The cardholder entered the PIN (done: the host verifies it), or bypassed it (this rule
    fails: the next one when it says so)."""
    code, cond = _rules(cvm_list)[need.index]
    if entered:
        return CvmDone("online_pin", bytes([code, cond, RESULT_UNKNOWN]),
                       need.tvr | Tvr.ONLINE_PIN_ENTERED, need.notes)
    tvr = need.tvr | Tvr.PIN_NOT_ENTERED
    notes = (*need.notes, "PIN not entered")
    if code & APPLY_SUCCEEDING:
        return evaluate(cvm_list, ctx, start=need.index + 1, tvr=tvr, notes=notes)
    return _failed(code, cond, tvr, notes)
