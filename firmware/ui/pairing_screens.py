"""ECR till pairing screens (Manage > ECR tills, after the supervisor password): pair a till (its
number, then the one-time code and the time left, until the till has paired, typed a wrong
code, the time ran out or CANCEL), unpair one, and the list of paired tills. Sans-I/O; the app
runs till_pair, till_pair_wait, till_unpair and till_list (firmware/app/services/tills.py).

The code is shown here and nowhere else: the till's operator types it at the till, which proves
it with the pairing exchange (docs/ecr.md, "Paired tills"); it never crosses the ECR link.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar

from firmware.i18n import register
from firmware.i18n import text as catalog_text
from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.entry import NumberEntry, PasswordEntry, Then
from firmware.ui.scroll import ScrollScreen, paged, scrolled, wrap_all

CATALOG: core.Catalog = {
    "tills_title": ("ECR tills", "收银机配对"),
    "tills_pair": ("Pair a till", "配对收银机"),
    "tills_unpair": ("Unpair a till", "解除配对"),
    "tills_list": ("Paired tills", "已配对收银机"),
    "tills_number": ("Till no. (1-99)", "收银机号(1-99)"),
    "tills_pair_title": ("Pair till {till}", "配对收银机 {till}"),
    "tills_opening": ("Please wait...", "请稍候..."),
    "tills_code": ("Code {code}", "配对码 {code}"),
    "tills_left": ("{left} left", "剩余 {left}"),
    "tills_type_it": ("Type the code on till {till}", "请在收银机 {till} 上输入配对码"),
    "tills_cancel": ("CANCEL=stop", "取消=停止"),
    "tills_closing": ("Closing...", "正在关闭..."),
    "tills_unpair_q": ("Unpair {till}?", "解除 {till} 配对?"),
    "tills_unpair_note": ("Its key is void", "其密钥将失效"),
    "tills_yes_no": ("ENTER=yes CANCEL=no", "确认=是 取消=否"),
}
register(dict(CATALOG))  # the number entry and the results find them in the shared catalog

ITEMS = ("tills_pair", "tills_unpair", "tills_list")


def _t(ctx: core.UiContext, key: str, **values: object) -> str:
    return core.say(CATALOG, key, ctx.lang, **values)


def _till(digits: str) -> str:
    return f"T{int(digits):02d}"


def tills_root(back: core.Screen) -> core.Screen:
    """The supervisor password, then the tills menu; CANCEL goes back to `back`."""
    return PasswordEntry("ecr tills", lambda: TillsMenu(back), back)


@dataclass(frozen=True)
class TillsMenu(core.PickList):
    back: core.Screen
    sel: int = 0

    def count(self) -> int:
        return len(ITEMS)

    def pick(self, index: int, here: core.Screen) -> core.Screen:
        item = ITEMS[index]
        if item == "tills_list":
            return TillWork("till_list", "", here)
        return NumberEntry("tills_title", "tills_number", here, _then(item, here), min_len=1,
                           max_len=2)

    def render(self, ctx: core.UiContext) -> Frame:
        rows = [_t(ctx, "tills_title")] + [f"{i + 1} {_t(ctx, key)}" for i, key in enumerate(ITEMS)]
        return core.frame(ctx, rows, inverse_row=1 + self.sel)


def _then(item: str, menu: core.Screen) -> Then:
    def chosen(digits: str, entry: core.Screen) -> core.Transition:
        if not 1 <= int(digits) <= 99:  # "0" or "00": no such till; typed again
            return core.Transition(replace(entry, digits=""))  # type: ignore[type-var]
        till = _till(digits)
        if item == "tills_pair":
            return core.Transition(TillWork("till_pair", till, menu),
                                   (core.StartOp("till_pair", reference=till, authorised=True),))
        return core.Transition(UnpairConfirm(till, menu))
    return chosen


@dataclass(frozen=True)
class TillWork(core.Screen):
    """An op under way (started by the screen before, or at the first Tick for the list); its
    OpDone leads on: the code (till_pair), the list, or the result."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    op: str
    till: str
    back: core.Screen
    sent: bool = False

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick) and self.op == "till_list" and not self.sent:
            return core.Transition(replace(self, sent=True), (core.StartOp("till_list"),))
        if isinstance(event, core.OpDone) and event.outcome.op == self.op:
            o = event.outcome
            if self.op == "till_pair" and o.status == "done":
                seconds = float(o.lines[0]) if o.lines else 120.0
                return core.Transition(PairCode(self.till, o.detail, ctx.mono + seconds, self.back))
            if self.op == "till_list" and o.status == "done":
                return core.Transition(ScrollScreen("tills_list", o.lines, self.back))
            return core.Transition(TillResult(o, self.till, self.back))
        return core.Transition(self) if isinstance(event, core.KeyIn) else None

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return ctx.mono if self.op == "till_list" and not self.sent else None

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [_t(ctx, "tills_title"), _t(ctx, "tills_opening")])


@dataclass(frozen=True)
class PairCode(core.Screen):
    """The code and the time left, until the window closes (the app's till_pair_wait, started at
    the first Tick, ends with how it closed). CANCEL closes it."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    till: str
    code: str
    deadline: float  # ctx.mono
    back: core.Screen
    waiting: bool = False
    cancelling: bool = False

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick) and not self.waiting:
            return core.Transition(replace(self, waiting=True),
                                   (core.StartOp("till_pair_wait", reference=self.till,
                                                 authorised=True),))
        if isinstance(event, core.OpDone) and event.outcome.op == "till_pair_wait":
            return core.Transition(TillResult(event.outcome, self.till, self.back))
        key = core.key_of(event)
        if key is None:
            return None
        if key is Key.CANCEL and self.waiting and not self.cancelling:
            return core.Transition(replace(self, cancelling=True), (core.CancelOp(),))
        return core.Transition(self)

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        if not self.waiting:
            return ctx.mono
        left = self.deadline - ctx.mono
        return ctx.mono + (left - math.floor(left) or 1.0) if left > 0 else None

    def render(self, ctx: core.UiContext) -> Frame:
        left = max(0, math.ceil(self.deadline - ctx.mono))
        lines = [_t(ctx, "tills_pair_title", till=self.till),
                 _t(ctx, "tills_code", code=self.code),
                 _t(ctx, "tills_left", left=f"{left // 60}:{left % 60:02d}")]
        if ctx.rows > 4:
            lines += core.wrap(_t(ctx, "tills_type_it", till=self.till), ctx.cols)
        lines.append(_t(ctx, "tills_closing" if self.cancelling else "tills_cancel"))
        return core.frame(ctx, lines[: ctx.rows - 1] + lines[-1:])


@dataclass(frozen=True)
class UnpairConfirm(core.Screen):
    till: str
    back: core.Screen

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = core.key_of(event)
        if key is None:
            return None
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.ENTER:
            return core.Transition(TillWork("till_unpair", self.till, self.back),
                                   (core.StartOp("till_unpair", reference=self.till,
                                                 authorised=True),))
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [_t(ctx, "tills_unpair_q", till=self.till),
                                *core.wrap(_t(ctx, "tills_unpair_note"), ctx.cols),
                                *core.wrap(_t(ctx, "tills_yes_no"), ctx.cols)])


@dataclass(frozen=True)
class TillResult(core.Screen):
    """How it went, in words; ENTER or CANCEL goes back to the tills menu."""

    result: ClassVar[bool] = True

    outcome: core.OpOutcome
    till: str
    back: core.Screen
    top: int = 0

    def rows(self, ctx: core.UiContext) -> list[str]:
        o = self.outcome
        said = catalog_text(o.message_key, ctx.lang, till=self.till)
        lines = [said] if o.message_key != "busy" else [said, o.detail]
        return wrap_all([line for line in lines if line], ctx.cols)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        key = core.key_of(event)
        if key is None:
            return None
        if key in (Key.ENTER, Key.CANCEL):
            return core.Transition(self.back)
        top = scrolled(key, self.top, len(self.rows(ctx)), ctx)
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        return paged(ctx, _t(ctx, "tills_title"), self.rows(ctx), self.top)
