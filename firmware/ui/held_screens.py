"""Held-order (挂单) screens: the held list (orders plus, read-only, transactions still being
resolved), an order's details with Resume / Cancel / Print trail, the cancel flow (reason, details,
supervisor password) and the park flow (amount, reference, multi-tap note, confirm). Sans-I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from firmware.ports import Frame, Key, text_cells
from firmware.ui import core
from firmware.ui.entry import AmountEntry, NumberEntry, PasswordEntry
from firmware.ui.settings_screens import MULTITAP, MULTITAP_S
from firmware.ui.texts import money
from firmware.ui.txn import start

REASONS = ("customer_cancelled", "payment_failed", "operator_error", "other")
MAX_NOTE = 40

CATALOG: core.Catalog = {
    "held_title": ("Held orders", "挂单"),
    "held_loading": ("Loading...", "读取中..."),
    "held_none": ("No held orders", "没有挂单"),
    "held_wait": ("Please wait...", "请稍候..."),
    "held_park": ("Hold order", "挂单"),
    "held_ref": ("Order no.", "订单号"),  # the order's own number (参考号 is the host's RRN)
    "held_voucher": ("Voucher {voucher}", "凭证号 {voucher}"),
    "held_note": ("Note", "备注"),
    "held_note_hint": ("ENTER=OK CLR=del", "确认键完成输入"),
    "held_confirm": ("ENTER to hold", "按确认挂单"),
    "held_resume": ("1 Resume", "1 继续支付"),
    "held_cancel": ("2 Cancel", "2 取消挂单"),
    "held_trail": ("3 Print trail", "3 打印记录"),
    "held_reason": ("Cancel reason", "取消原因"),
    "held_cancel_q": ("Cancel order?", "取消此挂单?"),
    "held_enter_ok": ("ENTER=OK CANCEL=no", "确认=是 取消=否"),
    "held_readonly": ("Being resolved", "处理中"),
    "held_back": ("ENTER=back", "确认=返回"),
    "customer_cancelled": ("Cust cancelled", "顾客取消"),
    "payment_failed": ("Payment failed", "支付失败"),
    "operator_error": ("Operator error", "操作员错误"),
    "other": ("Other", "其他"),
    "HELD": ("Open - not paid", "未支付"), "PAYING": ("Being paid", "支付中"), "PAID": ("Paid", "已支付"),
    "CANCELLING": ("Being cancelled", "取消中"), "CANCELLED": ("Cancelled", "已取消"),
    "REVERSAL_DUE": ("Reversal due", "待冲正"), "ADVICE_DUE": ("Advice due", "待上送"),
    "PENDING": ("Awaiting reply", "等待应答"),
    # a list row's status (it shares 16 columns with the number, amount and order no.)
    "row_HELD": ("open", "未付"), "row_PAYING": ("paying", "支付中"), "row_PAID": ("paid", "已付"),
    "row_CANCELLING": ("undoing", "取消中"), "row_CANCELLED": ("cancelled", "已取消"),
    "row_REVERSAL_DUE": ("rev due", "待冲正"), "row_ADVICE_DUE": ("adv due", "待上送"),
    "row_PENDING": ("pending", "待应答"),
    "sale": ("Sale", "消费"), "refund": ("Refund", "退货"), "void": ("Void", "撤销"),
    "held_doing_pending": ("awaiting reply", "等待应答"),
    "held_doing_reversal": ("reversal to send", "将发送冲正"),
    "held_doing_advice": ("advice to send", "将上送通知"),
    "held_parked": ("Order held", "挂单已保存"),
    "held_cancelled": ("Order cancelled", "挂单已取消"),
    "held_cancel_reversal": ("Outcome unknown: reversal pending", "结果未知:等待冲正"),
    "held_not_cancellable": ("Cannot cancel now", "现在不能取消"),
    "held_refused": ("Refused", "被拒绝"),
    "held_trail_ready": ("Trail printed", "记录已打印"),
}


def _t(ctx: core.UiContext, key: str, **values: Any) -> str:
    return core.say(CATALOG, key, ctx.lang, **values)


_key = core.key_of


# A resumed order is a sale; a cancelled one may become a void or a refund (card, PIN).
MONEY_OPS = frozenset({"held_resume", "held_cancel"})

DIGIT_INDEX = core.DIGIT_INDEX


# ---------------------------------------------------------------------------- running an op

@dataclass(frozen=True)
class OpRun(core.Screen):
    """Sends `command` at once (it asks for an immediate Tick) and waits for its OpDone."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    command: core.StartOp
    back: core.Screen  # where the result screen returns
    sent: bool = False

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick) and not self.sent:
            if self.command.op in MONEY_OPS:
                # money may move: the working screen shows each step ("Swipe card", the PIN,
                # "Processing... 3s"), takes CANCEL where it may, and the result in words
                return start(self.command)
            return core.Transition(replace(self, sent=True), (self.command,))
        if isinstance(event, core.OpDone) and event.outcome.op == self.command.op:
            if self.command.op == "held_list":
                return core.Transition(HeldList(self.back, event.outcome.items))
            return core.Transition(HeldResult(event.outcome, self.back))
        if _key(event) is Key.CANCEL and self.sent:
            return core.Transition(self, (core.CancelOp(),))
        return core.Transition(self) if isinstance(event, core.KeyIn) else None

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return None if self.sent else ctx.mono

    def render(self, ctx: core.UiContext) -> Frame:
        title = "held_title" if self.command.op == "held_list" else "held_wait"
        return core.frame(ctx, [_t(ctx, title), _t(ctx, "held_loading" if not self.sent else "held_wait")])


def held_root(back: core.Screen) -> core.Screen:
    """The held list (loaded from the app at once); CANCEL returns to back."""
    return OpRun(core.StartOp("held_list"), back)


@dataclass(frozen=True)
class HeldResult(core.Screen):
    outcome: core.OpOutcome
    back: core.Screen
    top: int = 0

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key in (Key.ENTER, Key.CANCEL):
            return core.Transition(held_root(self.back))
        if key is Key.DOWN:
            return core.Transition(replace(self, top=min(self.top + 1, max(0, len(self._rows(ctx)) - 1))))
        if key is Key.UP:
            return core.Transition(replace(self, top=max(0, self.top - 1)))
        return core.Transition(self) if key is not None else None

    def _rows(self, ctx: core.UiContext) -> list[str]:
        o = self.outcome
        rows = core.wrap(_t(ctx, o.message_key), ctx.cols)
        if o.amount is not None:
            rows.append(core.right(money(ctx, o.amount), ctx.cols))
        if o.detail and not o.ok:
            rows += core.wrap(o.detail, ctx.cols)
        for line in o.lines:
            rows += core.wrap(line, ctx.cols) or [""]
        return rows

    def render(self, ctx: core.UiContext) -> Frame:
        rows = self._rows(ctx)[self.top:]
        return core.frame(ctx, [*rows[: ctx.rows - 1], _t(ctx, "held_back")])


# ---------------------------------------------------------------------------- list and details

# The actions of an order's details: (digit, catalog key, the order states it does something in).
ACTIONS = ((Key.D1, "held_resume", ("HELD",)),
           (Key.D2, "held_cancel", ("HELD", "PAID", "PAYING")),
           (Key.D3, "held_trail", ("HELD", "PAYING", "PAID", "CANCELLING", "CANCELLED")))


def _label(item: Mapping[str, Any]) -> str:
    """What names an entry: the order no., or the voucher no. of a transaction without one."""
    return str(item.get("reference") or item.get("voucher") or "")


def _row(ctx: core.UiContext, n: int, item: Mapping[str, Any]) -> str:
    """ "1 123.45 open T12": number, amount and status always; the order no. where it fits whole."""
    row = f"{n} {core.format_fen(int(item['amount']))} {_t(ctx, 'row_' + str(item['status']))}"
    label = _label(item)
    return f"{row} {label}" if label and text_cells(f"{row} {label}") <= ctx.cols else row


def _offered(item: Mapping[str, Any]) -> list[tuple[Key, str]]:
    """The actions that do something for this order now (a paid order cannot be resumed)."""
    status = str(item["status"])
    return [(key, words) for key, words, states in ACTIONS if status in states]


@dataclass(frozen=True)
class HeldList(core.PickList):
    back: core.Screen
    items: tuple[Mapping[str, Any], ...]
    sel: int = 0

    def count(self) -> int:
        return len(self.items)

    def pick(self, index: int, here: core.Screen) -> core.Screen:
        return HeldDetails(self.items[index], here)  # type: ignore[arg-type]

    def render(self, ctx: core.UiContext) -> Frame:
        if not self.items:
            return core.frame(ctx, [_t(ctx, "held_title"), _t(ctx, "held_none")])
        rows = [_row(ctx, i + 1, item) for i, item in enumerate(self.items)]
        head = f"{_t(ctx, 'held_title')} {self.sel + 1}/{len(self.items)}"
        return core.pick_frame(ctx, head, rows, self.sel)


@dataclass(frozen=True)
class HeldDetails(core.Screen):
    item: Mapping[str, Any]
    back: HeldList

    @property
    def root(self) -> core.Screen:
        return self.back.back

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if self.item.get("readonly"):
            return core.Transition(self.back) if key is Key.ENTER else core.Transition(self)
        oid = int(self.item["id"])
        if key not in {offered for offered, _ in _offered(self.item)}:
            return core.Transition(self)
        if key is Key.D1:
            return core.Transition(OpRun(core.StartOp("held_resume", order_id=oid,
                                                      amount=int(self.item["amount"]),
                                                      reference=str(self.item["reference"])), self.root))
        if key is Key.D2:
            return core.Transition(ReasonPick(self.item, self))
        return core.Transition(OpRun(core.StartOp("held_trail", order_id=oid), self.root))

    def _facts(self, ctx: core.UiContext) -> list[str]:
        i = self.item
        named = (f"{_t(ctx, 'held_ref')}:{i['reference']}" if i.get("reference")
                 else _t(ctx, "held_voucher", voucher=i.get("voucher", "")))
        return [f"{i['time']} {_t(ctx, str(i['type']))}", core.right(money(ctx, int(i["amount"])), ctx.cols),
                named, _t(ctx, str(i["status"]))]

    def render(self, ctx: core.UiContext) -> Frame:
        facts = self._facts(ctx)
        if self.item.get("readonly"):
            doing = str(self.item.get("doing") or "held_readonly")
            lines = [_t(ctx, "held_readonly"), *facts[1:], _t(ctx, doing)]
            if ctx.rows <= 4:
                lines = [facts[1], facts[3], _t(ctx, doing), _t(ctx, "held_back")]
            return core.frame(ctx, lines)
        actions = [_t(ctx, words) for _, words in _offered(self.item)]
        if ctx.rows <= 4:
            head = facts[1].strip() + " " + _label(self.item)
            # an open order is shown by its Resume; any other says its status in words
            status = [] if len(actions) == 3 else [facts[3]]
            return core.frame(ctx, [head, *status, *actions])
        note = [str(self.item["note"])] if self.item.get("note") else []
        return core.frame(ctx, [*facts, *note, *actions])


@dataclass(frozen=True)
class ReasonPick(core.PickList):
    item: Mapping[str, Any]
    back: HeldDetails
    sel: int = 0

    def count(self) -> int:
        return len(REASONS)

    def pick(self, index: int, here: core.Screen) -> core.Screen:
        return CancelConfirm(self.item, REASONS[index], here)  # type: ignore[arg-type]

    def render(self, ctx: core.UiContext) -> Frame:
        rows = [f"{i + 1}.{_t(ctx, r)}" for i, r in enumerate(REASONS)]
        return core.pick_frame(ctx, _t(ctx, "held_reason"), rows, self.sel)


@dataclass(frozen=True)
class CancelConfirm(core.Screen):
    """The order's details and the chosen reason; ENTER asks the supervisor password."""

    item: Mapping[str, Any]
    reason: str
    back: ReasonPick

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.ENTER:
            root = self.back.back.root
            run = OpRun(core.StartOp("held_cancel", order_id=int(self.item["id"]), reason=self.reason,
                                     authorised=True), root)
            return core.Transition(PasswordEntry("held_cancel", run, self))
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        i = self.item
        facts = [f"{i['time']} {_t(ctx, str(i['type']))}", core.right(money(ctx, int(i["amount"])), ctx.cols),
                 f"{_t(ctx, 'held_ref')}:{i['reference']}", _t(ctx, self.reason)]
        if ctx.rows <= 4:
            return core.frame(ctx, [_t(ctx, "held_cancel_q"), facts[1], facts[2], _t(ctx, self.reason)])
        return core.frame(ctx, [_t(ctx, "held_cancel_q"), *facts, _t(ctx, "held_enter_ok")])


# ---------------------------------------------------------------------------- park

class _Titled:
    """Entry screens from firmware.ui.entry with this module's title on their first row."""

    title_key: ClassVar[str] = "held_park"

    def render(self, ctx: core.UiContext) -> Frame:
        base = super().render(ctx)  # type: ignore[misc]
        return replace(base, rows=(core.fit(_t(ctx, self.title_key), ctx.cols), *base.rows[1:]))


@dataclass(frozen=True)
class ParkAmount(_Titled, AmountEntry):
    pass


@dataclass(frozen=True)
class ParkReference(_Titled, NumberEntry):
    def render(self, ctx: core.UiContext) -> Frame:
        base = super().render(ctx)
        rows = list(base.rows)
        rows[1] = core.fit(_t(ctx, "held_ref"), ctx.cols)
        return replace(base, rows=tuple(rows))


@dataclass(frozen=True)
class NoteEditor(core.Screen):
    """Multi-tap text (the settings screens' key map): the same key within MULTITAP_S steps
    through its letters; the letter commits after MULTITAP_S or when another key comes."""

    amount: int
    reference: str
    back: core.Screen
    text: str = ""
    pending: Key | None = None
    index: int = 0
    since: float = 0.0

    def _committed(self) -> str:
        return self.text if self.pending is None else self.text + MULTITAP[self.pending][self.index]

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick):
            if self.pending is not None and ctx.mono >= self.since + MULTITAP_S:
                return core.Transition(replace(self, text=self._committed(), pending=None, index=0))
            return None
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.CLEAR:
            if self.pending is not None:
                return core.Transition(replace(self, pending=None, index=0))
            return core.Transition(replace(self, text=self.text[:-1]))
        if key is Key.ENTER:
            note = self._committed().strip()
            return core.Transition(ParkConfirm(self.amount, self.reference, note,
                                               replace(self, text=note, pending=None, index=0)))
        if key in MULTITAP:
            letters = MULTITAP[key]
            if key is self.pending and ctx.mono < self.since + MULTITAP_S and len(letters) > 1:
                return core.Transition(replace(self, index=(self.index + 1) % len(letters), since=ctx.mono))
            text = self._committed()
            if len(text) >= MAX_NOTE:
                return core.Transition(replace(self, text=text, pending=None, index=0))
            return core.Transition(replace(self, text=text, pending=key, index=0, since=ctx.mono))
        return core.Transition(self)

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return self.since + MULTITAP_S if self.pending is not None else None

    def render(self, ctx: core.UiContext) -> Frame:
        shown = self._committed() + ("" if self.pending is not None else "_")
        tail = ""
        for ch in reversed(shown):
            if text_cells(ch + tail) > ctx.cols:
                break
            tail = ch + tail
        hint = MULTITAP[self.pending] if self.pending is not None else ""
        return core.frame(ctx, [_t(ctx, "held_note"), tail, hint, _t(ctx, "held_note_hint")])


@dataclass(frozen=True)
class ParkConfirm(core.Screen):
    amount: int
    reference: str
    note: str
    back: NoteEditor

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.ENTER:
            command = core.StartOp("held_park", amount=self.amount, reference=self.reference,
                                   note=self.note)
            return core.Transition(OpRun(command, self._root()))
        return core.Transition(self)

    def _root(self) -> core.Screen:
        screen: Any = self.back
        while hasattr(screen, "back") and not isinstance(screen, ParkAmount):
            screen = screen.back
        return screen.back if isinstance(screen, ParkAmount) else screen

    def render(self, ctx: core.UiContext) -> Frame:
        lines = [_t(ctx, "held_park"), core.right(money(ctx, self.amount), ctx.cols),
                 f"{_t(ctx, 'held_ref')}:{self.reference}"]
        if self.note and ctx.rows > 4:
            lines += core.wrap(self.note, ctx.cols)
        return core.frame(ctx, [*lines[: ctx.rows - 1], _t(ctx, "held_confirm")])


def park_flow(back: core.Screen) -> core.Screen:
    """amount -> reference (digits) -> note (multi-tap) -> confirm -> StartOp("held_park")."""

    def to_reference(amount: int, entry: core.Screen) -> core.Transition:
        return core.Transition(ParkReference("held_park", "held_ref", entry, then=lambda ref, s: (
            core.Transition(NoteEditor(amount, ref, s))), min_len=1, max_len=20))

    return ParkAmount("held_park", back, then=to_reference)
