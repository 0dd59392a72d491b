"""Operator screens (sans-I/O): the sign-in (operator number, then PIN), the supervisor's operator
management (add, change PIN, remove, list, sign the operator out) and the sign-out.

The rules are the app's (firmware/app/core/operators.py, docs/operating.md "Operators"): these
screens only ask. The sign-in screen is the keypad's home while operators are set up and nobody
is signed in (firmware/ui/machine.py's home, and the panel swaps the idle screen for it); a right
PIN goes home (the idle screen, now naming the operator). PINs never reach a repr or a log.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, ClassVar

from firmware.i18n import register
from firmware.ports import Frame, Key
from firmware.settings.model import (
    OPERATOR_CODES,
    OPERATOR_PIN_MAX,
    OPERATOR_PIN_MIN,
    OPERATOR_PIN_RULES,
    PASSWORD_MAX,
    PASSWORD_MIN,
    SUPERVISOR,
    operator_pin_problem,
)
from firmware.ui import core
from firmware.ui.entry import DIGITS, NOTE_S, PasswordEntry, format_lock
from firmware.ui.scroll import ScrollScreen, message

CATALOG: core.Catalog = {
    "opr_sign_in": ("Operator sign-in", "操作员签到"),
    "opr_enter_no": ("Operator no.:", "操作员号:"),
    "opr_hint_no": ("00-99, ENTER", "00-99 按确认"),
    "opr_title": ("Operator {code}", "操作员 {code}"),
    "opr_supervisor": ("Supervisor 00", "主管 00"),
    "opr_enter_pin": ("Enter PIN", "请输入密码"),
    "opr_enter_password": ("Enter password", "请输入主管密码"),
    "opr_pin_again": ("PIN again", "请再输入一次"),
    "opr_pin_length": ("PIN: {lo}-{hi} digits", "密码{lo}-{hi}位"),
    "opr_pins_differ": ("PINs differ - again", "两次不同 请重输"),
    "opr_checking": ("Checking...", "验证中..."),
    "opr_saving": ("Saving...", "保存中..."),
    "opr_locked_for": ("Locked, {left} left", "已锁定 还剩{left}"),
    "opr_manage": ("Operators", "操作员管理"),
    "opr_add": ("Add operator", "增加操作员"),
    "opr_change": ("Change PIN", "修改密码"),
    "opr_remove": ("Remove", "删除操作员"),
    "opr_list": ("List", "操作员列表"),
    "opr_sign_out": ("Sign out {code}", "签退 {code}"),
    "opr_sign_out_none": ("Sign out", "签退操作员"),
    "opr_new_no": ("New no. 01-99:", "新操作员号:"),
    "opr_which_no": ("Operator no.:", "操作员号:"),
    "opr_remove_q": ("Remove {code}?", "删除操作员{code}?"),
    "opr_enter_ok": ("ENTER=yes CANCEL=no", "确认=是 取消=否"),
    "opr_row": ("{code}", "{code}"),
    "opr_row_signed": ("{code} signed in", "{code} 已签到"),
    "opr_row_supervisor": ("00 supervisor", "00 主管"),
    "opr_none_yet": ("No cashiers yet", "尚无操作员"),
    # short forms of the app's answers, for the one row a 4-row screen has left for them
    "opr_pin_wrong": ("Wrong PIN", "密码错误"),
    "opr_unknown": ("No such operator", "操作员不存在"),
    "opr_exists": ("Exists already", "已存在"),
    "opr_code_bad": ("Use 01-99", "应为01-99"),
    "opr_rule_digits": ("PIN: 4-6 digits", "密码应为4-6位"),
    "opr_rule_one_digit": ("Not one digit x4", "不能是同一数字"),
    "opr_rule_run": ("Not a run: 1234", "不能是连续数字"),
    **OPERATOR_PIN_RULES,
}

register(CATALOG)  # titles and notes also reach scroll.message(), which words through the catalog
# the app's answer key -> the short note a PIN screen shows
SHORT = {"operator_pin_wrong": "opr_pin_wrong", "operator_unknown": "opr_unknown",
         "operator_pin_rule_digits": "opr_rule_digits", "operator_pin_rule_one_digit": "opr_rule_one_digit",
         "operator_pin_rule_run": "opr_rule_run"}


def _t(ctx: core.UiContext, key: str, **values: Any) -> str:
    return core.say(CATALOG, key, ctx.lang, **values)


def operators_of(ctx: core.UiContext) -> tuple[str, ...]:
    """The cashiers set up (their numbers only: the screens never need a hash)."""
    table = ctx.setting("security", "operators", {}) or {}
    return tuple(sorted(table)) if isinstance(table, dict) else ()


def _digits_key(key: Key) -> str | None:
    return DIGITS.get(key) if key is not Key.D00 else None  # a number is typed digit by digit


# ---------------------------------------------------------------------------- sign-in


@dataclass(frozen=True)
class SignInScreen(core.Screen):
    """The keypad's home while nobody is signed in: the operator number (two digits), ENTER.

    It holds no card (a card at this screen starts nothing) and, as the idle screen, is never
    left by the idle timeout; a number typed and left alone is cleared after the idle time."""

    staged: ClassVar[bool] = False

    digits: str = ""
    typed_at: float = 0.0
    note: str | None = None
    note_until: float = 0.0

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.Tick) and self.digits and self._stale(ctx):
            return core.Transition(SignInScreen())
        if not isinstance(event, core.KeyIn):
            return None
        key = event.key
        digit = _digits_key(key)
        if digit is not None:
            grown = self.digits + digit if len(self.digits) < 2 else self.digits
            return core.Transition(replace(self, digits=grown, typed_at=ctx.mono, note=None))
        if key is Key.CLEAR:
            return core.Transition(replace(self, digits=self.digits[:-1], typed_at=ctx.mono, note=None))
        if key is Key.CANCEL:
            return core.Transition(SignInScreen())
        if key is Key.ENTER:
            code = self.digits
            if len(code) != 2:
                return core.Transition(self._noted("opr_hint_no", ctx))
            if code != SUPERVISOR and code not in operators_of(ctx):
                return core.Transition(replace(self._noted("opr_unknown", ctx), digits=""))
            return core.Transition(OperatorPinEntry(code, SignInScreen()))
        return core.Transition(self)

    def _stale(self, ctx: core.UiContext) -> bool:
        return ctx.mono - self.typed_at >= ctx.idle_timeout_s

    def _noted(self, note: str, ctx: core.UiContext) -> SignInScreen:
        return replace(self, note=note, note_until=ctx.mono + NOTE_S)

    def render(self, ctx: core.UiContext) -> Frame:
        lines = [_t(ctx, "opr_sign_in"), _t(ctx, "opr_enter_no"), core.right(self.digits or "__", ctx.cols)]
        if self.note and self.note_until > ctx.mono:
            lines += core.wrap(_t(ctx, self.note), ctx.cols)
        else:
            lines.append(_t(ctx, "opr_hint_no"))
        return core.frame(ctx, lines)

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        wakeups = []
        if self.digits:
            wakeups.append(self.typed_at + ctx.idle_timeout_s)
        if self.note and self.note_until > ctx.mono:
            wakeups.append(self.note_until)
        return min(wakeups) if wakeups else None


def pin_limits(code: str) -> tuple[int, int]:
    """How many digits the PIN of `code` has: 00's is the supervisor password."""
    return (PASSWORD_MIN, PASSWORD_MAX) if code == SUPERVISOR else (OPERATOR_PIN_MIN, OPERATOR_PIN_MAX)


@dataclass(frozen=True)
class OperatorPinEntry(core.Screen):
    """The PIN of operator `code` (00: the supervisor password), shown as '*', checked by the app
    (SignIn, answered by OperatorAnswer). Right: home; wrong: say so; locked: count it down."""

    sensitive: ClassVar[bool] = True

    code: str
    back: core.Screen
    digits: str = field(default="", repr=False)
    checking: bool = False
    note: str | None = None
    locked_until: float = 0.0

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OperatorAnswer) and self.checking:
            if event.ok:
                return core.Transition(core.Go("home"))
            if event.locked_s > 0:
                return core.Transition(replace(self, digits="", checking=False, note=None,
                                               locked_until=ctx.mono + event.locked_s))
            if event.key == "operator_unknown":  # removed meanwhile
                return core.Transition(message("operator_unknown", self.back, "opr_sign_in"))
            return core.Transition(replace(self, digits="", checking=False,
                                           note=SHORT.get(event.key, event.key)))
        if not isinstance(event, core.KeyIn):
            return None
        key = event.key
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if self.checking or self.locked_until > ctx.mono:
            return core.Transition(self)
        lo, hi = pin_limits(self.code)
        digit = _digits_key(key)
        if digit is not None:
            grown = self.digits + digit
            return core.Transition(replace(self, digits=grown, note=None) if len(grown) <= hi else self)
        if key is Key.CLEAR:
            return core.Transition(replace(self, digits=self.digits[:-1], note=None))
        if key is Key.ENTER:
            if not lo <= len(self.digits) <= hi:
                return core.Transition(replace(self, note="opr_pin_length"))
            return core.Transition(replace(self, checking=True, note=None),
                                   (core.SignIn(self.code, self.digits),))
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        title = _t(ctx, "opr_supervisor") if self.code == SUPERVISOR else _t(ctx, "opr_title", code=self.code)
        lines = [title]
        left = self.locked_until - ctx.mono
        if left > 0:
            lines += core.wrap(_t(ctx, "opr_locked_for", left=format_lock(left)), ctx.cols)
            return core.frame(ctx, lines)
        lines.append(_t(ctx, "opr_enter_password" if self.code == SUPERVISOR else "opr_enter_pin"))
        lines.append(core.right("*" * len(self.digits), ctx.cols))
        if self.checking:
            lines.append(_t(ctx, "opr_checking"))
        elif self.note:
            lo, hi = pin_limits(self.code)
            lines += core.wrap(_t(ctx, self.note, lo=lo, hi=hi), ctx.cols)
        return core.frame(ctx, lines)

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        # the lock counts down on the LCD: one wake-up a second while it lasts
        return ctx.mono + 1.0 if self.locked_until > ctx.mono else None


# ---------------------------------------------------------------------------- sign-out


def sign_out(back: core.Screen, ctx: core.UiContext) -> core.Transition:
    """Manage > Sign out: the keypad's operator signs out, the sign-in screen follows."""
    if not operators_of(ctx):
        return core.Transition(message("operators_none", back, "opr_sign_out_none"))
    if not ctx.operator:
        return core.Transition(message("operator_none_signed_in", back, "opr_sign_out_none"))
    return core.Transition(SignInScreen(), (core.SignOut(),))


# ---------------------------------------------------------------------------- management

ITEMS = ("opr_add", "opr_change", "opr_remove", "opr_list", "opr_sign_out")


def operators_root(back: core.Screen) -> core.Screen:
    """Manage > Operators: the supervisor password first, then the management list."""
    return PasswordEntry("operators", partial(OperatorsMenu, back), back)


@dataclass(frozen=True)
class OperatorsMenu(core.PickList):
    back: core.Screen
    sel: int = 0

    def count(self) -> int:
        return len(ITEMS)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        moved = core.list_key(core.key_of(event), self.sel, self.count())
        if moved is not None and moved.picked:
            return self.open(moved.selected, replace(self, sel=moved.selected), ctx)
        return super().handle(event, ctx)

    def pick(self, index: int, here: core.Screen) -> core.Screen:
        raise AssertionError("OperatorsMenu opens its items in handle(), with the context")

    def open(self, index: int, here: OperatorsMenu, ctx: core.UiContext) -> core.Transition:
        item = ITEMS[index]
        if item == "opr_add":
            return core.Transition(CodeEntry("add", here))
        if item in ("opr_change", "opr_remove"):
            if not operators_of(ctx):
                return core.Transition(message("opr_none_yet", here, item))
            return core.Transition(CodeEntry("change_pin" if item == "opr_change" else "remove", here))
        if item == "opr_list":
            return core.Transition(ScrollScreen("opr_manage", tuple(_list_rows(ctx)), here))
        if not ctx.operator:
            key = "operator_none_signed_in" if operators_of(ctx) else "operators_none"
            return core.Transition(message(key, here, "opr_sign_out_none"))
        return core.Transition(SignInScreen(), (core.SignOut(by_supervisor=True),))

    def label(self, index: int, ctx: core.UiContext) -> str:
        item = ITEMS[index]
        if item == "opr_sign_out":
            text = (_t(ctx, "opr_sign_out", code=ctx.operator) if ctx.operator
                    else _t(ctx, "opr_sign_out_none"))
        else:
            text = _t(ctx, item)
        return f"{index + 1} {text}"

    def render(self, ctx: core.UiContext) -> Frame:
        rows = [self.label(i, ctx) for i in range(len(ITEMS))]
        return core.pick_frame(ctx, _t(ctx, "opr_manage"), rows, self.sel)


def _list_rows(ctx: core.UiContext) -> list[str]:
    rows = [_t(ctx, "opr_row_supervisor")]
    for code in operators_of(ctx):
        rows.append(_t(ctx, "opr_row_signed" if code == ctx.operator else "opr_row", code=code))
    if not operators_of(ctx):
        rows.append(_t(ctx, "opr_none_yet"))
    return rows


_TITLES = {"add": "opr_add", "change_pin": "opr_change", "remove": "opr_remove"}


@dataclass(frozen=True)
class CodeEntry(core.Screen):
    """Which operator: two digits 01-99; add wants a new number, change and remove one set up."""

    action: str  # "add" | "change_pin" | "remove"
    back: core.Screen
    digits: str = ""
    note: str | None = None

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if not isinstance(event, core.KeyIn):
            return None
        key = event.key
        digit = _digits_key(key)
        if digit is not None:
            grown = self.digits + digit if len(self.digits) < 2 else self.digits
            return core.Transition(replace(self, digits=grown, note=None))
        if key is Key.CLEAR:
            return core.Transition(replace(self, digits=self.digits[:-1], note=None))
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.ENTER:
            code = self.digits
            if code not in OPERATOR_CODES:
                return core.Transition(replace(self, note="opr_code_bad"))
            known = code in operators_of(ctx)
            if self.action == "add" and known:
                return core.Transition(replace(self, note="opr_exists"))
            if self.action != "add" and not known:
                return core.Transition(replace(self, note="opr_unknown"))
            if self.action == "remove":
                return core.Transition(RemoveConfirm(code, self))
            return core.Transition(NewPinEntry(self.action, code, self))
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        prompt = "opr_new_no" if self.action == "add" else "opr_which_no"
        lines = [_t(ctx, _TITLES[self.action]), _t(ctx, prompt), core.right(self.digits or "__", ctx.cols)]
        if self.note:
            lines += core.wrap(_t(ctx, self.note), ctx.cols)
        return core.frame(ctx, lines)


@dataclass(frozen=True)
class NewPinEntry(core.Screen):
    """A cashier's new PIN, typed twice; the PIN rules are checked here for an answer at once
    (and again by the app, which decides)."""

    sensitive: ClassVar[bool] = True

    action: str  # "add" | "change_pin"
    code: str
    back: core.Screen
    digits: str = field(default="", repr=False)
    first: str | None = field(default=None, repr=False)
    note: str | None = None

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if not isinstance(event, core.KeyIn):
            return None
        key = event.key
        digit = _digits_key(key)
        if digit is not None:
            grown = self.digits + digit
            return core.Transition(replace(self, digits=grown, note=None)
                                   if len(grown) <= OPERATOR_PIN_MAX else self)
        if key is Key.CLEAR:
            return core.Transition(replace(self, digits=self.digits[:-1], note=None))
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is not Key.ENTER:
            return core.Transition(self)
        if self.first is None:
            rule = operator_pin_problem(self.digits)
            if rule is not None:
                return core.Transition(replace(self, digits="", note=SHORT[rule]))
            return core.Transition(replace(self, first=self.digits, digits="", note=None))
        if self.digits != self.first:
            return core.Transition(replace(self, first=None, digits="", note="opr_pins_differ"))
        return core.Transition(OperatorWait(_TITLES[self.action], self.back),
                               (core.ManageOperator(self.action, self.code, self.digits),))

    def render(self, ctx: core.UiContext) -> Frame:
        lines = [f"{_t(ctx, _TITLES[self.action])} {self.code}",
                 _t(ctx, "opr_enter_pin" if self.first is None else "opr_pin_again"),
                 core.right("*" * len(self.digits), ctx.cols)]
        if self.note:
            lines += core.wrap(_t(ctx, self.note), ctx.cols)
        return core.frame(ctx, lines)


@dataclass(frozen=True)
class RemoveConfirm(core.Screen):
    code: str
    back: core.Screen

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if not isinstance(event, core.KeyIn):
            return None
        if event.key is Key.ENTER:
            return core.Transition(OperatorWait("opr_remove", self.back),
                                   (core.ManageOperator("remove", self.code),))
        if event.key is Key.CANCEL:
            return core.Transition(self.back)
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [_t(ctx, "opr_remove"), _t(ctx, "opr_remove_q", code=self.code),
                                *core.wrap(_t(ctx, "opr_enter_ok"), ctx.cols)])


@dataclass(frozen=True)
class OperatorWait(core.Screen):
    """Waits for the app's OperatorAnswer, then says how it went (back: the number's entry,
    whose back is the management list)."""

    staged: ClassVar[bool] = False  # waits for the app, holds nothing typed

    title: str
    back: core.Screen

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OperatorAnswer):
            # done: back to the list; refused: back to the number, to try another
            target = getattr(self.back, "back", self.back) if event.ok else self.back
            return core.Transition(message(event.key, target, self.title))
        if isinstance(event, core.KeyIn):
            return core.Transition(self)  # the save may still land: wait for its answer
        return None

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [_t(ctx, self.title), _t(ctx, "opr_saving")])
