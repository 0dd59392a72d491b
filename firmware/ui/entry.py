"""Entry screens any flow can reuse: amount, fixed-format numbers, the supervisor password and the
cardholder PIN. Each takes its parent (`back`, where CANCEL goes) and what follows (`then`).

`then(value, screen)` gets the value and the entry screen itself, so the next step can keep the
entry (with what was typed) as its own `back`. PIN and password digits never reach a repr.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from firmware.engine.validation import valid_mmdd
from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.texts import max_amount, money, t, words

NOTE_S = 2.0  # how long a refusal ("Max 100000.00") stays on the entry line
DIGITS = {Key.D0: "0", Key.D1: "1", Key.D2: "2", Key.D3: "3", Key.D4: "4", Key.D5: "5",
          Key.D6: "6", Key.D7: "7", Key.D8: "8", Key.D9: "9", Key.D00: "00"}

Then = Callable[[Any, core.Screen], core.Transition]


def _note_live(until: float, ctx: core.UiContext) -> bool:
    return until > ctx.mono


def _stay(screen: core.Screen) -> core.Transition:
    """The key was this screen's and changed nothing (so the machine's defaults stay out)."""
    return core.Transition(screen)


@dataclass(frozen=True)
class AmountEntry(core.Screen):
    """Digits shift in from the right (0.00, 0.01, 0.12, 1.23) up to the configured maximum.

    drop_card: a card read at idle pays for this one; CANCEL back tells the app to forget it.
    """

    title: str
    back: core.Screen
    then: Then = field(repr=False)
    amount: int = 0
    pan_masked: str | None = None
    drop_card: bool = False
    note: str | None = None
    note_until: float = 0.0

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if not isinstance(event, core.KeyIn):
            return None
        key = event.key
        if key in DIGITS:
            digits = DIGITS[key]
            grown = self.amount * 10 ** len(digits) + int(digits)
            if grown > max_amount(ctx):
                return _stay(replace(self, note="amount_max", note_until=ctx.mono + NOTE_S))
            return _stay(replace(self, amount=grown, note=None))
        if key is Key.CLEAR:
            return _stay(replace(self, amount=self.amount // 10, note=None))
        if key is Key.ENTER:
            if self.amount == 0:
                return _stay(replace(self, note="amount_zero", note_until=ctx.mono + NOTE_S))
            return self.then(self.amount, replace(self, note=None))
        if key is Key.CANCEL:
            return core.Transition(self.back, (core.DropCard(),) if self.drop_card else ())
        if key is Key.DOT:
            # Amounts shift in from the right as on CUP terminals (123 is 1.23): a dot would mean
            # another way of typing money, so it is refused here in words, not silently eaten.
            return _stay(replace(self, note="amount_no_dot", note_until=ctx.mono + NOTE_S))
        return _stay(self)  # arrows, F-keys: nothing to do in an amount

    def render(self, ctx: core.UiContext) -> Frame:
        lines = [words(ctx, self.title)]
        if self.pan_masked:
            lines.append(core.pan_text(self.pan_masked, ctx.cols))
        if not self.pan_masked or ctx.rows >= 6:
            lines.append(t(ctx, "enter_amount"))
        lines.append(core.right(money(ctx, self.amount), ctx.cols))
        if self.note and _note_live(self.note_until, ctx):
            lines.append(t(ctx, self.note, max=core.format_fen(max_amount(ctx))))
        return core.frame(ctx, lines)

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return self.note_until if self.note and _note_live(self.note_until, ctx) else None


@dataclass(frozen=True)
class NumberEntry(core.Screen):
    """min_len..max_len digits (voucher 1-6 padded to 6, RRN 12, date MMDD with kind="mmdd")."""

    title: str
    prompt: str
    back: core.Screen
    then: Then = field(repr=False)
    min_len: int = 1
    max_len: int = 6
    pad_to: int = 0
    kind: str = "digits"
    digits: str = ""
    note: str | None = None
    note_until: float = 0.0

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if not isinstance(event, core.KeyIn):
            return None
        key = event.key
        if key in DIGITS:
            grown = self.digits + DIGITS[key]
            return _stay(replace(self, digits=grown, note=None) if len(grown) <= self.max_len else self)
        if key is Key.CLEAR:
            return _stay(replace(self, digits=self.digits[:-1], note=None))
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if key is Key.ENTER:
            problem = self.problem()
            if problem:
                return _stay(replace(self, note=problem, note_until=ctx.mono + NOTE_S))
            return self.then(self.digits.zfill(self.pad_to), replace(self, note=None))
        return _stay(self)

    def problem(self) -> str | None:
        if not self.min_len <= len(self.digits) <= self.max_len:
            return "digits_exact" if self.min_len == self.max_len else "digits_range"
        if self.kind == "mmdd" and not valid_mmdd(self.digits):
            return "date_invalid"
        return None

    def render(self, ctx: core.UiContext) -> Frame:
        shown = self.digits or "_" * (self.pad_to or self.min_len)
        lines = [words(ctx, self.title), t(ctx, self.prompt), core.right(shown, ctx.cols)]
        if self.note and _note_live(self.note_until, ctx):
            lines += core.wrap(t(ctx, self.note, n=self.max_len, lo=self.min_len, hi=self.max_len), ctx.cols)
        return core.frame(ctx, lines)

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        return self.note_until if self.note and _note_live(self.note_until, ctx) else None


def format_lock(seconds: float) -> str:
    whole = math.ceil(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


@dataclass(frozen=True)
class PasswordEntry(core.Screen):
    """The supervisor password: 6-12 digits shown as '*', checked by the app (CheckPassword).

    on_ok: the screen the right password opens, or a function making it (so a screen that
    lives in a module not yet written is imported only when the password was right).
    """

    sensitive: ClassVar[bool] = True

    purpose: str
    on_ok: core.Screen | Callable[[], core.Screen] = field(repr=False)
    back: core.Screen
    digits: str = field(default="", repr=False)
    checking: bool = False
    note: str | None = None
    locked_until: float = 0.0

    def locked_left(self, ctx: core.UiContext) -> float:
        return max(self.locked_until - ctx.mono, ctx.password_locked_s, 0.0)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.PasswordChecked) and self.checking:
            if event.ok:
                opened = self.on_ok if isinstance(self.on_ok, core.Screen) else self.on_ok()
                return core.Transition(opened)
            if event.locked_s > 0:
                return _stay(replace(self, digits="", checking=False, note=None,
                                     locked_until=ctx.mono + event.locked_s))
            return _stay(replace(self, digits="", checking=False, note="wrong_password"))
        if not isinstance(event, core.KeyIn):
            return None
        key = event.key
        if key is Key.CANCEL:
            return core.Transition(self.back)
        if self.checking or self.locked_left(ctx) > 0:
            return _stay(self)
        if key in DIGITS:
            grown = self.digits + DIGITS[key]
            return _stay(replace(self, digits=grown, note=None) if len(grown) <= 12 else self)
        if key is Key.CLEAR:
            return _stay(replace(self, digits=self.digits[:-1], note=None))
        if key is Key.ENTER:
            if not 6 <= len(self.digits) <= 12:
                return _stay(replace(self, note="password_length"))
            return core.Transition(replace(self, checking=True, note=None),
                                   (core.CheckPassword(self.purpose, self.digits),))
        return _stay(self)

    def render(self, ctx: core.UiContext) -> Frame:
        title_key = f"pwd_{self.purpose}"
        lines = [t(ctx, title_key if title_key in _PURPOSE_TITLES else "pwd_other")]
        left = self.locked_left(ctx)
        if left > 0:
            lines += core.wrap(t(ctx, "locked_for", left=format_lock(left)), ctx.cols)
            return core.frame(ctx, lines)
        lines.append(t(ctx, "enter_password"))
        lines.append(core.right("*" * len(self.digits), ctx.cols))
        if self.checking:
            lines.append(t(ctx, "checking"))
        elif self.note:
            lines += core.wrap(t(ctx, self.note), ctx.cols)
        return core.frame(ctx, lines)

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        # the lock counts down on the LCD: one wake-up a second while it lasts
        return ctx.mono + 1.0 if self.locked_left(ctx) > 0 else None


_PURPOSE_TITLES = {"pwd_void", "pwd_refund", "pwd_settlement", "pwd_settings"}


@dataclass(frozen=True)
class PinEntry(core.Screen):
    """The cardholder PIN while an operation runs (PinWanted); back is the working screen.

    ENTER submits 4-12 digits, or no digits as a bypass where the settings allow it; CANCEL
    cancels the operation (nothing was sent yet). Progress and the outcome go to `back`.
    """

    sensitive: ClassVar[bool] = True
    running: ClassVar[bool] = True

    pan_masked: str
    amount: int | None
    bypass_allowed: bool
    back: core.Screen
    tries_left: int | None = None
    digits: str = field(default="", repr=False)
    note: str | None = None

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OpStep):
            moved = self.back.handle(event, ctx)
            return _stay(replace(self, back=moved.screen) if moved else self)
        if not isinstance(event, core.KeyIn):
            return self.back.handle(event, ctx)  # OpDone, another PinWanted: the flow's business
        key = event.key
        if key in DIGITS:
            grown = self.digits + DIGITS[key]
            return _stay(replace(self, digits=grown, note=None) if len(grown) <= 12 else self)
        if key is Key.CLEAR:
            return _stay(replace(self, digits=self.digits[:-1], note=None))
        if key is Key.ENTER:
            if not self.digits:
                if self.bypass_allowed:
                    return core.Transition(self.back, (core.SubmitPin(None),))
                return _stay(replace(self, note="pin_required"))
            if len(self.digits) < 4:
                return _stay(replace(self, note="pin_length"))
            return core.Transition(self.back, (core.SubmitPin(self.digits),))
        if key is Key.CANCEL:
            answer = self.back.handle(event, ctx)
            if answer is not None and core.CancelOp() in answer.commands:
                return answer
            return core.Transition(answer.screen if answer else self.back, (core.CancelOp(),))
        return _stay(self)

    def render(self, ctx: core.UiContext) -> Frame:
        stars = core.right("*" * len(self.digits), ctx.cols)
        if self.tries_left is not None and not self.note:
            return core.frame(ctx, [*self._again(ctx), stars])
        lines = [money(ctx, self.amount) if self.amount is not None else t(ctx, "enter_pin"),
                 core.pan_text(self.pan_masked, ctx.cols)]
        if self.note:
            lines.append(t(ctx, self.note))
        else:
            lines.append(t(ctx, "enter_pin") if self.amount is not None else "")
        if ctx.rows >= 6 and self.bypass_allowed:
            lines.append(t(ctx, "pin_bypass"))
        lines.append(stars)
        return core.frame(ctx, lines)

    def _again(self, ctx: core.UiContext) -> list[str]:
        """After a wrong PIN: the words first (they are the news), then the card; the amount
        only where the rows allow it."""
        assert self.tries_left is not None
        wrong = (t(ctx, "pin_wrong_last") if self.tries_left == 1
                 else t(ctx, "pin_wrong_left", n=self.tries_left))
        lines = [*core.wrap(wrong, ctx.cols), core.pan_text(self.pan_masked, ctx.cols)]
        if ctx.rows >= 6:
            lines.insert(0, money(ctx, self.amount) if self.amount is not None else "")
            if self.bypass_allowed:
                lines.append(t(ctx, "pin_bypass"))
        return lines


@dataclass(frozen=True)
class AppChoice(core.Screen):
    """The cardholder's choice of chip application (AppChoiceWanted); back is the working
    screen. A digit picks that line, UP/DOWN move the marker and ENTER picks it; CANCEL cancels
    the operation (nothing was sent yet)."""

    running: ClassVar[bool] = True

    labels: tuple[str, ...]
    back: core.Screen
    cursor: int = 0

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OpStep):
            moved = self.back.handle(event, ctx)
            return _stay(replace(self, back=moved.screen) if moved else self)
        if not isinstance(event, core.KeyIn):
            return self.back.handle(event, ctx)
        key = event.key
        if key in DIGITS and 1 <= int(DIGITS[key]) <= len(self.labels):
            return core.Transition(self.back, (core.SubmitChoice(int(DIGITS[key]) - 1),))
        if key is Key.UP:
            return _stay(replace(self, cursor=max(0, self.cursor - 1)))
        if key is Key.DOWN:
            return _stay(replace(self, cursor=min(len(self.labels) - 1, self.cursor + 1)))
        if key is Key.ENTER:
            return core.Transition(self.back, (core.SubmitChoice(self.cursor),))
        if key is Key.CANCEL:
            answer = self.back.handle(event, ctx)
            if answer is not None and core.CancelOp() in answer.commands:
                return answer
            return core.Transition(answer.screen if answer else self.back, (core.CancelOp(),))
        return _stay(self)

    def render(self, ctx: core.UiContext) -> Frame:
        # "1>UnionPay Debit": the number to press, the marker ENTER picks, the label (cut to the
        # LCD's width: a label is at most 16 characters, EMV Book 1 4.3)
        rows = [f"{i + 1}{'>' if i == self.cursor else ' '}{label}"[:ctx.cols]
                for i, label in enumerate(self.labels)]
        room = max(1, ctx.rows - 1)
        first = min(max(0, self.cursor - room + 1), max(0, len(rows) - room))
        return core.frame(ctx, [t(ctx, "step_chip_choose"), *rows[first:first + room]])
