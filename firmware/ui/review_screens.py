"""Settlement review screens (结算前检查): the review (pending items first, totals, anomalies), an
anomaly's details and its actions (void behind the supervisor password, reprint, send now), then
ENTER settles; and the settlement result with what to do when it failed. Sans-I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from firmware.diag.review import settlement_advice
from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.entry import PasswordEntry
from firmware.ui.results import above_hint, result_screen
from firmware.ui.scroll import paged, scrolled, wrap_all
from firmware.ui.texts import money, op_title, t
from firmware.ui.txn import WorkingScreen

CATALOG: core.Catalog = {
    "review_title": ("Settle review", "结算前检查"),
    "review_loading": ("Loading...", "读取中..."),
    "review_wait": ("Please wait...", "请稍候..."),
    "review_pending": ("{n} pending", "{n}笔未完成"),
    "review_send_now": ("F1 send now", "F1 立即发送"),
    "review_anomalies": ("F2 anomalies: {n}", "F2 异常交易: {n}"),
    "review_no_anomaly": ("No anomalies", "无异常交易"),
    "review_enter": ("ENTER settle", "确认键 结算"),
    "review_blocked_note": ("Send pending first", "请先发送未完成"),
    "anomaly_title": ("Anomalies", "异常交易"),
    "reversal_due": ("Reversal due", "待冲正"),
    "advice_due": ("Advice unsent", "通知未上送"),
    "pending": ("No reply yet", "未收到应答"),
    "duplicate": ("Duplicate?", "疑似重复"),
    "print_failed": ("Print failed", "打印失败"),
    "reversal_stuck": ("Reversal fails", "冲正失败"),
    "quarantined": ("Set aside", "已隔离"),
    "refund_declined": ("Refund declined", "退货被拒"),
    "short_quarantined": ("Aside", "隔离"),
    "short_refund_declined": ("Rfd no", "退拒"),
    "anomaly_why": ("Why: {why}", "原因: {why}"),
    "anomaly_code": ("Host {why}: not refunded", "主机{why}: 未退款"),
    "anomaly_voucher": ("Voucher {voucher}", "凭证号 {voucher}"),
    "short_duplicate": ("Dup?", "重复"),
    "short_print_failed": ("Print", "打印"),
    "short_reversal_stuck": ("Rev.", "冲正"),
    "anomaly_same_as": ("Same as {voucher}", "同凭证号 {voucher}"),
    "anomaly_tries": ("Sent {n} times", "已发送 {n} 次"),
    "act_void": ("Void", "撤销"),
    "act_reprint": ("Reprint", "重打印"),
    "act_retry": ("Send now", "立即发送"),
    "act_resolve": ("Resolve", "主管处理"),
    "anomaly_no_action": ("No action here", "无可执行操作"),
    "result_title": ("Settlement", "结算"),
    "act_result_title": ("Anomaly", "异常处理"),
    "anomaly_retry_done": ("Sent: all acknowledged", "已发送,主机均已确认"),
    "anomaly_retry_left": ("Sent: some still pending", "已发送,仍有未确认"),
    "anomaly_bad_action": ("Action not allowed here", "此项不能执行该操作"),
    "anomaly_not_found": ("Transaction not found", "交易不存在"),
    "review_ready": ("Settlement review", "结算前检查"),
    "review_blocked": ("Items pending", "有未完成交易"),
}

PENDING_KINDS = ("reversal_due", "advice_due", "pending", "quarantined")
# Actions behind the supervisor password (asked on the keypad before they run).
GUARDED_ACTIONS = ("void", "resolve")
DIGIT_INDEX = core.DIGIT_INDEX


def _t(ctx: core.UiContext, key: str, **values: Any) -> str:
    return core.say(CATALOG, key, ctx.lang, **values)


_key = core.key_of


def _pending(items: tuple[Mapping[str, Any], ...]) -> list[Mapping[str, Any]]:
    return [i for i in items if i.get("kind") in PENDING_KINDS]


def _anomalies(items: tuple[Mapping[str, Any], ...]) -> list[Mapping[str, Any]]:
    return [i for i in items if i.get("kind") not in PENDING_KINDS]


# ---------------------------------------------------------------------------- running an op

@dataclass(frozen=True)
class Run(core.Screen):
    """Sends `command` at once (an immediate Tick) and waits for its OpDone; then the review
    (mode "review") or the action's result (mode "act"). root: where the review returns."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    command: core.StartOp
    root: core.Screen
    mode: str = "review"
    sent: bool = False

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick) and not self.sent:
            return core.Transition(replace(self, sent=True), (self.command,))
        if isinstance(event, core.OpDone) and event.outcome.op == self.command.op:
            if self.mode == "review":
                return core.Transition(ReviewScreen(event.outcome, self.root))
            return core.Transition(ActResult(event.outcome, self.root))
        if _key(event) is Key.CANCEL and (not self.sent or self.mode == "review"):
            return core.Transition(self.root)  # nothing asked yet, or only a reading: nothing changes
        return core.Transition(self) if isinstance(event, core.KeyIn) else None

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return None if self.sent else ctx.mono

    def render(self, ctx: core.UiContext) -> Frame:
        title = "review_title" if self.mode == "review" else "act_result_title"
        return core.frame(ctx, [_t(ctx, title), _t(ctx, "review_loading" if self.mode == "review"
                                                   else "review_wait")])


def settle_review_flow(back: core.Screen) -> core.Screen:
    """The review, loaded from the app at once (the caller checked the supervisor password);
    CANCEL anywhere before ENTER returns to back with nothing changed."""
    return Run(core.StartOp("settle_review"), back)


# ---------------------------------------------------------------------------- the review

@dataclass(frozen=True)
class ReviewScreen(core.Screen):
    outcome: core.OpOutcome
    back: core.Screen
    top: int = 0
    note: str | None = None

    def body(self, ctx: core.UiContext) -> list[str]:
        items = self.outcome.items
        pending, anomalies = _pending(items), _anomalies(items)
        rows: list[str] = []
        if pending:
            rows += core.wrap(_t(ctx, "review_pending", n=len(pending)), ctx.cols)
            rows += wrap_all([f"{p['voucher']} {_t(ctx, str(p['kind']))}" for p in pending], ctx.cols)
        rows += wrap_all(self.outcome.lines, ctx.cols)
        rows.append(_t(ctx, "review_anomalies", n=len(anomalies)) if anomalies
                    else _t(ctx, "review_no_anomaly"))
        return rows

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        blocked = bool(_pending(self.outcome.items))
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.F1 and blocked:
            return core.Transition(Run(core.StartOp("anomaly_act", reason="retry"), self.back, "act"))
        if key is Key.F2 and _anomalies(self.outcome.items):
            return core.Transition(AnomalyList(tuple(_anomalies(self.outcome.items)), self))
        if key is Key.ENTER:
            if blocked:
                return core.Transition(replace(self, note="review_blocked_note"))
            return core.Transition(SettleWorking("settle", back=self.back),
                                   (core.StartOp("settle", authorised=True),))
        top = scrolled(key, self.top, len(self.body(ctx)), replace(ctx, rows=ctx.rows - 1))
        if top is not None:
            return core.Transition(replace(self, top=top))
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        # The last row always says what ENTER (or F1) does; the body scrolls above it.
        inner = replace(ctx, rows=ctx.rows - 1)
        window = paged(inner, _t(ctx, "review_title"), self.body(ctx), self.top)
        prompt = self.note or ("review_send_now" if _pending(self.outcome.items) else "review_enter")
        return core.frame(ctx, [*window.rows, _t(ctx, prompt)], inverse_row=ctx.rows - 1)


# ---------------------------------------------------------------------------- anomalies

@dataclass(frozen=True)
class AnomalyList(core.PickList):
    items: tuple[Mapping[str, Any], ...]
    back: ReviewScreen
    sel: int = 0

    def count(self) -> int:
        return len(self.items)

    def pick(self, index: int, here: core.Screen) -> core.Screen:
        return AnomalyDetail(self.items[index], here)  # type: ignore[arg-type]

    def render(self, ctx: core.UiContext) -> Frame:
        rows = [f"{i + 1} {item['voucher']} {_t(ctx, 'short_' + str(item['kind']))}"
                for i, item in enumerate(self.items)]
        return core.pick_frame(ctx, _t(ctx, "anomaly_title"), rows, self.sel)


@dataclass(frozen=True)
class AnomalyDetail(core.Screen):
    item: Mapping[str, Any]
    back: AnomalyList

    @property
    def root(self) -> core.Screen:
        return self.back.back.back  # where the review itself returns

    def actions(self) -> list[str]:
        return [str(a) for a in self.item.get("actions", ())]

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        actions = self.actions()
        if key in DIGIT_INDEX and DIGIT_INDEX[key] < len(actions):
            action = actions[DIGIT_INDEX[key]]
            command = core.StartOp("anomaly_act", voucher=str(self.item["voucher"]), reason=action,
                                   authorised=action in GUARDED_ACTIONS)
            run = Run(command, self.root, "act")
            if action == "void":  # the same last look at the money as the menu's void
                return core.Transition(PasswordEntry(action, AnomalyVoidConfirm(self.item, run, self),
                                                     self))
            if action in GUARDED_ACTIONS:
                return core.Transition(PasswordEntry(action, run, self))
            return core.Transition(run)
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        item = self.item
        # The short kind keeps the voucher on the title row at 16 columns.
        facts = [f"{_t(ctx, 'short_' + str(item['kind']))} {item['voucher']}",
                 core.format_fen(int(item.get("amount") or 0)),
                 core.pan_text(str(item.get("pan") or ""), ctx.cols)]
        if item.get("related_voucher"):
            facts.append(_t(ctx, "anomaly_same_as", voucher=item["related_voucher"]))
        if item.get("kind") == "reversal_stuck":
            facts.append(_t(ctx, "anomaly_tries", n=item.get("attempts", 0)))
        if item.get("kind") == "quarantined" and item.get("why"):
            facts.append(_t(ctx, "anomaly_why", why=item["why"]))
        if item.get("kind") == "refund_declined":
            facts.append(_t(ctx, "anomaly_code", why=item.get("why") or "?"))
        actions = [f"{i + 1} {_t(ctx, f'act_{a}')}" for i, a in enumerate(self.actions())]
        if not actions:
            actions = [_t(ctx, "anomaly_no_action")]
        # The actions stay on the bottom rows; the facts fill what is left above them.
        room = max(1, ctx.rows - len(actions))
        return core.frame(ctx, [*facts[:room], *actions][: ctx.rows])


@dataclass(frozen=True)
class AnomalyVoidConfirm(core.Screen):
    """The void's amount, card and trace before it is sent: ENTER voids, CANCEL goes back to
    the anomaly (past the password, as in the menu's void)."""

    item: Mapping[str, Any]
    run: Run
    back: AnomalyDetail

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is Key.ENTER:
            return core.Transition(self.run)
        if key is Key.CANCEL:
            return core.Transition(self.back)
        return core.Transition(self) if key is not None else None

    def render(self, ctx: core.UiContext) -> Frame:
        facts = [money(ctx, int(self.item.get("amount") or 0)), str(self.item.get("pan") or ""),
                 _t(ctx, "anomaly_voucher", voucher=self.item["voucher"])]
        prompt = core.wrap(t(ctx, "confirm_enter"), ctx.cols)
        room = max(0, ctx.rows - 1 - len(prompt))
        return core.frame(ctx, [op_title(ctx, "void"), *facts[:room], *prompt])


@dataclass(frozen=True)
class ActResult(core.Screen):
    """How an anomaly action went; ENTER or CANCEL reloads the review (it may have changed)."""

    outcome: core.OpOutcome
    root: core.Screen

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key in (Key.ENTER, Key.CANCEL):
            return core.Transition(settle_review_flow(self.root))
        return core.Transition(self) if key is not None else None

    def render(self, ctx: core.UiContext) -> Frame:
        lines = core.wrap(_t(ctx, self.outcome.message_key), ctx.cols)
        if self.outcome.voucher:
            lines.append(_t(ctx, "anomaly_voucher", voucher=self.outcome.voucher))
        return core.frame(ctx, [_t(ctx, "act_result_title"), *lines])


# ---------------------------------------------------------------------------- settling

@dataclass(frozen=True)
class SettleWorking(WorkingScreen):
    """The settlement runs (progress as any operation); its result shows the advice."""

    back: core.Screen | None = None

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OpDone) and event.outcome.op == "settle":
            # balanced: the plain result; failed, refused or unbalanced: why and what to do
            return core.Transition(result_screen(event.outcome, self))
        return super().handle(event, ctx)


@dataclass(frozen=True)
class SettleResult(core.Screen):
    """A settlement that did not settle (or did not balance): like every result, the last row
    says ENTER goes on, and without a key it goes home after the result time."""

    result: ClassVar[bool] = True

    outcome: core.OpOutcome
    back: core.Screen
    top: int = 0

    def body(self, ctx: core.UiContext) -> list[str]:
        # The app may send the advice (with the pending items named) as lines; else it is
        # worked out here from the outcome.
        advice = list(self.outcome.lines) or settlement_advice(self.outcome, ctx.lang)
        return wrap_all([_t(ctx, self.outcome.message_key), *advice], ctx.cols)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = _key(event)
        if key is None:
            return None
        if key in (Key.ENTER, Key.CANCEL):
            return core.Transition(self.back)
        top = scrolled(key, self.top, len(self.body(ctx)), above_hint(ctx))
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        page = paged(above_hint(ctx), _t(ctx, "result_title"), self.body(ctx), self.top)
        return replace(page, rows=(*page.rows, core.fit(t(ctx, "enter_continue"), ctx.cols)))


def settle_result_screen(outcome: core.OpOutcome, back: core.Screen) -> core.Screen:
    """A settlement's result: its message, then why and what to do (settlement_advice)."""
    return SettleResult(outcome, back)
