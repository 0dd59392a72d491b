"""ECR till pairing at the app layer: the pairing window the supervisor opens on the keypad, the
till's `pair` request answered against it, unpairing and the list of paired tills.

The window (one at a time, PAIR_WINDOW_S long) holds the one-time code in this process's memory
only: the screen shows it, nothing writes it (not the log, not the audit). The exchange is
SPAKE2 with key confirmation (firmware/ecr/auth.py, docs/ecr.md "Paired tills"): the first
`pair` request for its till takes the window (no other `pair` is answered; so an active
attacker gets one guess), the terminal answers with its SPAKE2 message and confirmation and
waits up to CONFIRM_S for the till's `pair_confirm`; only a right confirmation stores the key.
A wrong one, the till's abort, or none in time closes it, audited as a wrong code; so do
CANCEL, the deadline and another window opening, each audited. The keypad side runs as two
ops: the supervisor's `till_pair` opens it and returns the code, `till_pair_wait` holds the
operation lock until it closes (CANCEL on the keypad closes it) and says how.

Till keys are sealed by `sealer()`: the one place that names the sealing object.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import TerminalCore
from firmware.ecr.auth import (
    CONFIRM_S,
    PAIR_WINDOW_S,
    PairConfirm,
    PairOffer,
    PairRequest,
    answer_pair,
    confirm_ok,
    new_code,
)
from firmware.engine.model import TxnResult
from firmware.i18n import register, text
from firmware.journal.errors import JournalError
from firmware.journal.tills import Sealer, TillBook
from firmware.ui.core import OpOutcome, StartOp

PANEL_OPS = frozenset({"till_pair", "till_pair_wait", "till_unpair", "till_list"})
# Pairing and unpairing are the supervisor's, at the terminal: none of it is an ECR op. A till's
# `pair` and `pair_confirm` are answered by the ECR server before any op is parsed
# (answer_pair_request).
ECR_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
SUPERVISOR = "00"  # the operator code of the supervisor (issue 17: 00 supervisor, 01-99 cashiers)
CANCEL_POLL_S = 0.2  # how soon a keypad CANCEL closes the window

MESSAGES: dict[str, tuple[str, str]] = {
    "till_code": ("Pairing code shown", "配对码已显示"),
    "till_paired": ("Till {till} paired", "收银机 {till} 已配对"),
    "till_replaced": ("Till {till} paired again: its old key no longer works",
                      "收银机 {till} 已重新配对: 旧密钥已作废"),
    "till_wrong_code": ("Wrong code from the till: pairing closed - open it again",
                        "收银机配对码错误: 已关闭配对 - 请重新开始"),
    "till_expired": ("No till paired in time: pairing closed", "未在时限内配对: 已关闭配对"),
    "till_unconfirmed": ("The till did not confirm: pairing closed - open it again",
                         "收银机未确认: 已关闭配对 - 请重新开始"),
    "till_pair_cancelled": ("Pairing cancelled", "配对已取消"),
    "till_unpaired": ("Till {till} unpaired", "收银机 {till} 已解除配对"),
    "till_not_paired": ("Till {till} is not paired", "收银机 {till} 未配对"),
    "till_none": ("No till is paired", "没有已配对的收银机"),
    "till_line": ("{till} seq {seq}", "{till} 序号 {seq}"),
    # what the till is told (its `pair` reply)
    "till_no_window": ("No pairing open for till {till}: the supervisor opens one on the terminal "
                       "(Manage > ECR tills > Pair), then the till sends the code within 2 minutes",
                       "收银机 {till} 没有待配对: 请主管在终端上开始配对 (管理 > 收银机配对 > 配对), "
                       "然后在2分钟内由收银机发送配对码"),
    "till_pair_refused": ("Wrong pairing code: pairing closed on the terminal - the supervisor "
                          "opens it again", "配对码错误: 终端已关闭配对 - 请主管重新开始配对"),
    "till_pair_malformed": ("The till's pairing message is not valid: pairing closed on the "
                            "terminal - the supervisor opens it again",
                            "收银机的配对消息无效: 终端已关闭配对 - 请主管重新开始配对"),
    "till_pair_confirm_next": ("Terminal {terminal} answered: check its confirmation, then send "
                               "yours (pair_confirm) within {seconds} s",
                               "终端 {terminal} 已应答: 请核对其确认, 并在 {seconds} 秒内发送收银机的确认"),
    "till_no_confirm_wait": ("No pairing of till {till} is waiting for its confirmation: the "
                             "supervisor opens one on the terminal, then the till pairs again",
                             "收银机 {till} 没有等待确认的配对: 请主管在终端上重新开始配对"),
}
register(MESSAGES)


LIVE = ("open", "checking", "confirming")  # the window is not closed yet


@dataclass
class Window:
    till: str
    code: str = field(repr=False)
    deadline: float  # time.monotonic()
    # open -> checking (message 1 being answered) -> confirming (message 2 sent), then closed:
    # paired | replaced | wrong_code | unconfirmed | expired | cancelled
    state: str = "open"
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    offer: PairOffer | None = field(default=None, repr=False)  # while confirming
    tried_by: str = ""  # the source of message 1

    def close(self, state: str) -> None:
        if self.state in LIVE:
            self.state = state
            self.code = ""
            self.offer = None
            self.changed.set()


_WINDOWS: weakref.WeakKeyDictionary[TerminalCore, Window] = weakref.WeakKeyDictionary()


# -- the sealing object ------------------------------------------------------------------------

class _CardVaultSealer:
    """VaultKeys.seal/unseal of the journal's CardVault with the caller's AAD (a vault the
    terminal made without its key store: a wiped terminal's throwaway one, a test's)."""

    def __init__(self, vault: Any) -> None:
        self._keys = vault.keys

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        return self._keys.seal(plain, aad)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        return self._keys.unseal(blob, aad)


def sealer(terminal: TerminalCore) -> Sealer:
    """The object that seals till keys: the key store's VaultKeys (the card-vault key, in the
    token on a token board); without one, the journal's CardVault."""
    if terminal.key_store is not None:
        return terminal.key_store
    assert terminal.journal is not None
    return _CardVaultSealer(terminal.journal._vault)


def book(terminal: TerminalCore) -> TillBook:
    assert terminal.journal is not None
    return TillBook(terminal.journal, sealer(terminal))


def _lang(terminal: TerminalCore) -> str:
    return str(terminal.settings.get("display", {}).get("language", "en"))


# -- the window --------------------------------------------------------------------------------

def open_window(terminal: TerminalCore, till: str, by: str = SUPERVISOR) -> Window:
    """A new pairing window for `till` (any open one closes); audited, without the code."""
    old = _WINDOWS.get(terminal)
    if old is not None:
        old.close("cancelled")
    window = Window(till, new_code(), time.monotonic() + PAIR_WINDOW_S)
    _WINDOWS[terminal] = window
    if terminal.journal is not None:
        terminal.journal.audit(by, "ecr till pairing opened",
                               f"till {till}, {PAIR_WINDOW_S:.0f} s", "open")
    return window


def current(terminal: TerminalCore) -> Window | None:
    window = _WINDOWS.get(terminal)
    if window is not None and window.state in LIVE and time.monotonic() >= window.deadline:
        _close(terminal, window, "expired")
    return window


def _close(terminal: TerminalCore, window: Window, state: str, source: str = SUPERVISOR) -> None:
    """Close a live window. One that answered a till's message 1 and saw no confirmation was
    a try at the code all the same (its sender may check its one guess against the terminal's
    confirmation): audited as refused, under the till's source."""
    if window.state not in LIVE:
        return
    tried = window.state == "confirming"
    if tried and state == "expired":
        state = "unconfirmed"
    window.close(state)
    if terminal.journal is None:
        return
    with contextlib.suppress(JournalError):  # the window is closed whatever the disk says
        if tried and state in ("unconfirmed", "cancelled"):
            terminal.journal.audit(window.tried_by or source, "ecr till pairing refused",
                                   f"till {window.till}: no confirmation from the till (a wrong "
                                   f"code, or the till gave up); pairing closed ({state})",
                                   "refused")
        elif state in ("expired", "cancelled"):
            terminal.journal.audit(source, "ecr till pairing closed", f"till {window.till}: {state}",
                                   state)


def _terminal_id(terminal: TerminalCore) -> str:
    """The terminal's SPAKE2 identity: its TID (merchant.tid), the till's is its name."""
    return str(terminal.settings.get("merchant", {}).get("tid", ""))


async def answer_pair_request(terminal: TerminalCore, request: PairRequest | PairConfirm,
                              source: str) -> tuple[dict[str, Any], bool, bytes | None]:
    """A till's `pair` (message 1) or `pair_confirm` (message 3) against the open window: the
    reply, whether it was audited here, and for a pairing just stored the till key (the reply
    is MACed under it, seq 0). A try at an open window is audited by how it ends; a request
    with no window waiting for it is left to the ECR link's refusal log, which counts a flood."""
    if isinstance(request, PairConfirm):
        return _confirm(terminal, request, source)
    lang = _lang(terminal)
    window = current(terminal)
    if window is None or window.state != "open" or window.till != request.till:
        return {"ok": False, "result": "refused", "till": request.till,
                "message": text("till_no_window", lang, till=request.till)}, False, None
    code, tid = window.code, _terminal_id(terminal)
    # Taken first: a second `pair` meanwhile finds no open window (one guess per window). The
    # group arithmetic is pure Python (milliseconds): off the event loop.
    window.state, window.tried_by = "checking", source
    try:
        offer = await asyncio.to_thread(answer_pair, code, tid, request)
    except Exception:
        _close(terminal, window, "cancelled")
        raise
    if window.state != "checking":  # closed meanwhile: CANCEL, or another window opened
        return {"ok": False, "result": "refused", "till": request.till,
                "message": text("till_no_window", lang, till=request.till)}, False, None
    if offer is None:
        _close(terminal, window, "wrong_code")
        _audit(terminal, source, "ecr till pairing refused",
               f"till {request.till}: its SPAKE2 message is not valid; pairing closed")
        return {"ok": False, "result": "refused", "till": request.till,
                "message": text("till_pair_malformed", lang)}, True, None
    window.offer, window.state = offer, "confirming"
    window.deadline = min(window.deadline, time.monotonic() + CONFIRM_S)
    return {"ok": True, "result": "confirm", "till": request.till, "terminal": tid,
            "msg": offer.msg.hex(), "confirm": offer.confirm.hex(),
            "message": text("till_pair_confirm_next", lang, terminal=tid,
                            seconds=f"{CONFIRM_S:.0f}")}, True, None


def _confirm(terminal: TerminalCore, request: PairConfirm,
             source: str) -> tuple[dict[str, Any], bool, bytes | None]:
    """Message 3: the till's confirmation stores its key; a wrong one, or its abort, closes the
    window as a wrong code."""
    lang = _lang(terminal)
    window = current(terminal)
    if (window is None or window.state != "confirming" or window.till != request.till
            or window.offer is None):
        return {"ok": False, "result": "refused", "till": request.till,
                "message": text("till_no_confirm_wait", lang, till=request.till)}, False, None
    offer = window.offer
    if not confirm_ok(offer, request):
        why = ("the till found the terminal's confirmation wrong" if request.confirm is None
               else "the till's confirmation is wrong")
        _close(terminal, window, "wrong_code")
        _audit(terminal, source, "ecr till pairing refused",
               f"till {request.till}: wrong pairing code; pairing closed ({why})")
        return {"ok": False, "result": "refused", "till": request.till,
                "message": text("till_pair_refused", lang)}, True, None
    replaced = book(terminal).pair(request.till, offer.key, f"{source} till {request.till}")
    _close(terminal, window, "replaced" if replaced else "paired")
    return {"ok": True, "result": "paired", "till": request.till,
            "message": text("till_replaced" if replaced else "till_paired", lang, till=request.till),
            }, True, offer.key


def _audit(terminal: TerminalCore, source: str, action: str, detail: str) -> None:
    if terminal.journal is None:
        return
    with contextlib.suppress(JournalError):  # the refusal is still answered, in words
        terminal.journal.audit(source, action, detail, "refused")


async def wait_window(terminal: TerminalCore, till: str) -> str:
    """Until the window for `till` closes (paired, wrong code, deadline, or CANCEL on the
    keypad, which the operation lock's cancel flag carries); returns how it closed."""
    window = current(terminal)
    if window is None or window.till != till:
        return "expired"
    while window.state in LIVE:
        if terminal.cancel_requested():
            _close(terminal, window, "cancelled")
            break
        left = window.deadline - time.monotonic()
        if left <= 0:
            _close(terminal, window, "expired")
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(window.changed.wait(), max(0.0, min(left, CANCEL_POLL_S)))
    return window.state


# -- the keypad ops ------------------------------------------------------------------------------

async def run_op(terminal: TerminalCore, command: StartOp, lang: str, cols: int) -> OpOutcome:
    """Keypad ops (the supervisor's, authorised by the password): till_pair (reference = the
    till; detail = the code), till_pair_wait, till_unpair, till_list."""
    op, till = command.op, command.reference or ""
    if terminal.journal is None:
        return OpOutcome(op, "failed", "service_mode")
    if op != "till_list" and not command.authorised:
        return OpOutcome(op, "refused", "password_wrong")
    if op == "till_pair":
        window = open_window(terminal, till)
        return OpOutcome(op, "done", "till_code", detail=window.code,
                         lines=(f"{PAIR_WINDOW_S:.0f}",))
    if op == "till_pair_wait":
        closed: list[str] = []

        async def work() -> TxnResult:
            closed.append(await wait_window(terminal, till))
            return TxnResult("done", "")

        await terminal.operation("till_pair", "keypad", work)
        state = closed[0] if closed else "cancelled"
        if state in ("paired", "replaced"):
            return OpOutcome(op, "done", f"till_{state}", detail=till)
        if state == "cancelled":
            return OpOutcome(op, "cancelled", "till_pair_cancelled", detail=till)
        return OpOutcome(op, "refused", f"till_{state}", detail=till)
    if op == "till_unpair":
        if book(terminal).unpair(till, SUPERVISOR):
            return OpOutcome(op, "done", "till_unpaired", detail=till)
        return OpOutcome(op, "refused", "till_not_paired", detail=till)
    if op == "till_list":
        tills = book(terminal).tills()
        lines = tuple(text("till_line", lang, till=t.till, seq=t.last_seq) for t in tills)
        return OpOutcome(op, "done", "till_list" if tills else "till_none", lines=lines)
    return OpOutcome(op, "refused", "invalid_request", detail=f"not a till op: {op}")


async def ecr_op(terminal: TerminalCore, op: str, args: dict[str, Any],
                 origin: OperatorInput | None = None) -> dict[str, Any]:
    raise LookupError(f"{op} is not an ECR op")  # ECR_OPS is empty: never routed here
