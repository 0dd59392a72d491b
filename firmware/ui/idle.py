"""The idle screen: merchant, date and time, what needs the operator (paper, a cut receipt,
pending reversals/advices, notices), and the keys and card events that start everything.

It redraws once a minute (HH:MM) and holds nothing typed, so the idle timeout never applies.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.entry import DIGITS, NOTE_S, AmountEntry
from firmware.ui.menu import MenuScreen
from firmware.ui.scroll import message
from firmware.ui.texts import max_amount, t, words
from firmware.ui.txn import open_flow

# F-key -> operation, the shortcuts printed on the hint rows
SHORTCUTS = {Key.F1: "sale", Key.F2: "void", Key.F3: "settle", Key.F4: "reprint_last"}


@dataclass(frozen=True)
class IdleScreen(core.Screen):
    card_purpose: ClassVar[str | None] = "sale"
    staged: ClassVar[bool] = False

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.CardPresented):
            return open_flow("sale", self, ctx, use_card=True, pan_masked=event.pan_masked)
        if isinstance(event, core.ChipSeen):
            # a chip card inserted at idle starts a sale; its card step reads the chip
            return open_flow("sale", self, ctx) if event.inserted else core.Transition(self)
        if isinstance(event, core.CardRefused) and event.message_key == "insert_chip":
            # a chip card swiped at idle: the sale starts, and its amount screen says to insert
            # the card (a message screen here would stop the card watch the insertion needs)
            opened = open_flow("sale", self, ctx)
            if isinstance(opened.screen, AmountEntry):
                note = replace(opened.screen, note="note_insert_chip", note_until=ctx.mono + NOTE_S)
                return core.Transition(note, opened.commands)
            return opened
        if isinstance(event, core.CardRefused):
            return core.Transition(message(event.message_key, self, "title_card"))
        if not isinstance(event, core.KeyIn):
            return None
        key = event.key
        if ctx.print_confirm_job is not None and key in (Key.ENTER, Key.CANCEL):
            return core.Transition(self, (core.ConfirmPrint(ctx.print_confirm_job, key is Key.ENTER),))
        if ctx.tear_off_job is not None and key is Key.ENTER:
            return core.Transition(self, (core.TearOff(ctx.tear_off_job),))
        if ctx.paper == "out" and key is Key.ENTER:
            # stays at idle: the paper state the app reports redraws this screen
            return core.Transition(self, (core.StartOp("print_resume"),))
        if key in (Key.MENU, Key.ENTER):
            return core.Transition(MenuScreen("main", self))
        if key in SHORTCUTS:
            return open_flow(SHORTCUTS[key], self, ctx)
        if key in DIGITS:
            first = int(DIGITS[key])
            return open_flow("sale", self, ctx, amount=first if first <= max_amount(ctx) else 0)
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        header = [core.center(ctx.merchant_name, ctx.cols)] if ctx.merchant_name else []
        clock = [core.center(f"{ctx.now:%Y-%m-%d %H:%M}", ctx.cols)]
        # who is signed in (operators set up: docs/operating.md, "Operators")
        who = [core.center(t(ctx, "idle_operator", code=ctx.operator), ctx.cols)] if ctx.operator else []
        middle: list[str] = []
        if ctx.deregistered:
            middle.append(core.center(t(ctx, "banner_deregistered"), ctx.cols))
        if ctx.backlog_left:
            middle += core.wrap(t(ctx, "idle_backlog", n=ctx.backlog_left), ctx.cols)
        if ctx.reversals_due or ctx.advices_due:
            middle.append(t(ctx, "rev_adv", rev=ctx.reversals_due, adv=ctx.advices_due))
        if ctx.quarantined:
            middle += core.wrap(t(ctx, "idle_quarantined", n=ctx.quarantined), ctx.cols)
        if ctx.refunds_declined:
            middle += core.wrap(t(ctx, "idle_refunds_declined", n=ctx.refunds_declined), ctx.cols)
        if ctx.held_aged:
            middle.append(t(ctx, "held_aged", n=ctx.held_aged))
        for note in self.notes(ctx):
            middle += core.wrap(note, ctx.cols)
        hints = [t(ctx, "hint_idle")]
        if ctx.rows >= 8:
            hints += [t(ctx, "hint_idle_more"), t(ctx, "hint_idle_more2")]
        # what the operator must act on wins the rows; the name goes first, then who is signed
        # in, then hints, then time
        for drop in ("header", "who", "hints", "clock"):
            if len(header) + len(clock) + len(who) + len(middle) + len(hints) <= ctx.rows:
                break
            if drop == "header":
                header = []
            elif drop == "who":
                who = []
            elif drop == "hints":
                hints = hints[:max(0, ctx.rows - len(header) - len(clock) - len(middle))]
            else:
                clock = []
        gap = [""] * max(0, ctx.rows - len(header) - len(clock) - len(who) - len(middle) - len(hints))
        return core.frame(ctx, [*header, *clock, *who, *middle, *gap, *hints])

    def notes(self, ctx: core.UiContext) -> list[str]:
        notes = []
        if ctx.print_confirm_job is not None:
            notes.append(t(ctx, "print_interrupted"))
        if ctx.tear_off_job is not None:
            notes.append(t(ctx, "tear_off_next"))
        if ctx.paper == "out":
            notes.append(t(ctx, "printer_paper_out"))
        if ctx.notice:
            notes.append(words(ctx, ctx.notice))
        return notes

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        # the clock shows minutes: wake at the next minute boundary, never more often
        into_minute = ctx.now.second + ctx.now.microsecond / 1_000_000
        return ctx.mono + (60.0 - into_minute)
