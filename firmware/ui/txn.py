"""The operation flows: what each operation asks (password, amount, voucher, RRN, date, confirm)
before its StartOp, and the working screen that shows the running operation until its OpDone.

Every flow is one row of STEPS; `Flow` walks the row, each step's screen keeps the previous one
as `back`, so CANCEL goes back one level (past a password already checked: it is not asked twice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.entry import NOTE_S, AmountEntry, AppChoice, NumberEntry, PasswordEntry, PinEntry
from firmware.ui.report_screens import PRINT_OP, report_flow
from firmware.ui.results import result_screen
from firmware.ui.scroll import MORE_ABOVE, MORE_BELOW, message, wrap_all
from firmware.ui.texts import CATALOG, enabled, money, op_title, t

# op -> what the operator is asked, in order, before the StartOp leaves
STEPS: dict[str, tuple[str, ...]] = {
    "sale": ("amount", "confirm"),
    "preauth": ("amount", "confirm"),
    "void": ("password", "voucher", "original", "confirm"),
    "preauth_void": ("password", "voucher", "original", "confirm"),
    "completion_void": ("password", "voucher", "original", "confirm"),
    "refund": ("password", "amount", "rrn", "date", "confirm"),
    "completion": ("voucher", "original", "amount", "confirm"),
    "balance": ("confirm",),
    "settle": ("password", "confirm"),
    "reprint_voucher": ("voucher",),
    "subtotals": (),
    "reprint_settlement": (),
    "reprint_last": (),
    "report_list": (),
    "report_totals": (),
    "sign_on": (),
    "sign_off": (),
    "echo": (),
    "print_resume": (),
}
PASSWORD_PURPOSE = {"void": "void", "preauth_void": "void", "completion_void": "void",
                    "refund": "refund", "settle": "settlement"}
# the types settings can switch off (transactions.enabled)
TXN_TYPES = frozenset({"sale", "void", "refund", "balance", "preauth", "preauth_void", "completion",
                       "completion_void"})
# what a deregistered terminal refuses
FINANCIAL = TXN_TYPES | {"settle"}
# steps whose LCD counts seconds
COUNTING_STEPS = frozenset({"connecting", "sending"})


@dataclass(frozen=True)
class Flow:
    """What an operation has collected so far and the steps still to ask."""

    op: str
    steps: tuple[str, ...]
    amount: int | None = None
    voucher: str | None = None
    rrn: str | None = None
    date: str | None = None
    authorised: bool = False
    use_card: bool = False
    pan_masked: str | None = None
    orig_amount: int | None = None  # shown on the confirm screen; the engine takes it from the journal

    def command(self) -> core.StartOp:
        return core.StartOp(self.op, amount=self.amount, voucher=self.voucher, rrn=self.rrn, date=self.date,
                            use_card=self.use_card, authorised=self.authorised)

    def next(self, back: core.Screen) -> core.Transition:
        """The next step's screen, or the StartOp once nothing is left to ask (a refusal then
        goes back to `back`: the last entry, or the menu of an op that asks nothing)."""
        if not self.steps:
            return start(self.command(), back=back)
        if self.steps[0] == "original":
            return lookup(replace(self, steps=self.steps[1:]), back)
        return core.Transition(self.screen(back))

    def screen(self, back: core.Screen) -> core.Screen:
        step, rest = self.steps[0], replace(self, steps=self.steps[1:])
        title = f"op_{self.op}"
        if step == "password":
            passed = replace(rest, authorised=True)
            # past the password, CANCEL goes to where the password was asked from
            return PasswordEntry(PASSWORD_PURPOSE.get(self.op, "other"), passed.screen(back), back)
        if step == "amount":
            return AmountEntry(title, back, Collect(rest, "amount"), amount=self.amount or 0,
                               pan_masked=self.pan_masked, drop_card=self.use_card)
        if step == "voucher":
            prompt = "enter_preauth_voucher" if self.op == "completion" else "enter_voucher"
            return NumberEntry(title, prompt, back, Collect(rest, "voucher"), 1, 6, pad_to=6)
        if step == "rrn":
            return NumberEntry(title, "enter_rrn", back, Collect(rest, "rrn"), 12, 12)
        if step == "date":
            return NumberEntry(title, "enter_date", back, Collect(rest, "date"), 4, 4, kind="mmdd")
        if step == "confirm" and self.op == "settle":
            # the review (totals, pending items, anomalies) is the settlement's confirm screen:
            # review_screens.settle_review_flow, named (the review builds on these flows)
            return core.Go("settle_review", (back,))
        if step == "confirm":
            return ConfirmScreen(rest, back)
        raise ValueError(f"flow {self.op!r} has an unknown step {step!r}")


@dataclass(frozen=True)
class Collect:
    """An entry's `then`: store the value in the flow and go on (a value, so screens compare)."""

    flow: Flow
    name: str

    def __call__(self, value: Any, entry: core.Screen) -> core.Transition:
        return replace(self.flow, **{self.name: value}).next(entry)


def open_flow(op: str, back: core.Screen, ctx: core.UiContext, *, amount: int | None = None,
              use_card: bool = False, pan_masked: str | None = None) -> core.Transition:
    """Start asking for op, or refuse in words (type switched off, terminal deregistered)."""
    drop = (core.DropCard(),) if use_card else ()
    if ctx.deregistered and op in FINANCIAL:
        return core.Transition(message("deregistered", back, f"op_{op}"), drop)
    if op in TXN_TYPES and not enabled(ctx, op):
        return core.Transition(message("type_disabled", back, f"op_{op}"), drop)
    if op in TXN_TYPES and ctx.operator == "00":
        # the supervisor takes no payments (docs/operating.md, "Operators"); the app refuses too
        return core.Transition(message("operator_cashier_only", back, f"op_{op}"), drop)
    if op in PRINT_OP:
        return report_flow(op, back)
    flow = Flow(op, STEPS[op], amount=amount, use_card=use_card, pan_masked=pan_masked)
    return flow.next(back)


def start(command: core.StartOp, source: str | None = None,
          back: core.Screen | None = None) -> core.Transition:
    """The working screen and the command; back: where a refusal returns (None: idle)."""
    return core.Transition(WorkingScreen(command.op, command.amount, source, back=back), (command,))


@dataclass(frozen=True)
class ConfirmScreen(core.Screen):
    """The operation, its amount and references, before anything is sent: ENTER starts it."""

    flow: Flow
    back: core.Screen
    top: int = 0

    def info(self, ctx: core.UiContext) -> list[str]:
        flow = self.flow
        lines: list[str] = []
        if flow.orig_amount is not None and flow.orig_amount != flow.amount:
            lines.append(t(ctx, "orig_amount", amount=money(ctx, flow.orig_amount)))
        if flow.amount is not None:
            lines.append(money(ctx, flow.amount))
        if flow.pan_masked:
            lines.append(core.pan_text(flow.pan_masked, ctx.cols))
        if flow.voucher:
            lines.append(t(ctx, "res_voucher", voucher=flow.voucher))
        if flow.rrn:
            lines.append(t(ctx, "res_rrn", rrn=flow.rrn))
        if flow.date:
            lines.append(t(ctx, "res_date", date=flow.date))
        return wrap_all(lines, ctx.cols)

    def prompt(self, ctx: core.UiContext) -> list[str]:
        return wrap_all([t(ctx, "settle_ask" if self.flow.op == "settle" else "confirm_enter")], ctx.cols)

    def window(self, ctx: core.UiContext) -> int:
        """Rows for the details: the prompt stays on the bottom rows, always visible."""
        return max(1, ctx.rows - 1 - len(self.prompt(ctx)))

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if not isinstance(event, core.KeyIn):
            return None
        if event.key is Key.ENTER:
            return start(self.flow.command(), back=self.back)
        if event.key is Key.CANCEL:
            return core.Transition(self.back)
        if event.key in (Key.UP, Key.DOWN):
            last = max(0, len(self.info(ctx)) - self.window(ctx))
            top = max(0, min(last, self.top + (1 if event.key is Key.DOWN else -1)))
            return core.Transition(replace(self, top=top))
        return core.Transition(self)

    def render(self, ctx: core.UiContext) -> Frame:
        info, size = self.info(ctx), self.window(ctx)
        top = max(0, min(self.top, len(info) - size))
        shown = info[top: top + size]
        marks = (MORE_ABOVE if top > 0 else "") + (MORE_BELOW if top + len(shown) < len(info) else "")
        title = op_title(ctx, self.flow.op)
        head = core.pad(title, ctx.cols - len(marks)) + marks if marks else title
        padding = [""] * (size - len(shown))
        return core.frame(ctx, [head, *shown, *padding, *self.prompt(ctx)])


@dataclass(frozen=True)
class OriginalLookup(core.Screen):
    """Asks the app for the original (LookupOriginal) and waits; found: the flow goes on with its
    amount and card shown; not usable: the reason in words, then back to the voucher entry."""

    staged: ClassVar[bool] = True

    flow: Flow
    back: core.Screen  # the voucher entry
    asked: bool = False

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OriginalFound) and event.voucher == self.flow.voucher:
            if not event.found:
                return core.Transition(message(event.message_key or "original_not_found", self.back,
                                               f"op_{self.flow.op}"))
            found = replace(self.flow, orig_amount=event.amount,
                            pan_masked=event.pan_masked or self.flow.pan_masked)
            return found.next(self.back)
        if isinstance(event, core.KeyIn) and event.key is Key.CANCEL:
            return core.Transition(self.back)
        return core.Transition(self) if isinstance(event, core.KeyIn) else None

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [op_title(ctx, self.flow.op), t(ctx, "reading")])


def lookup(flow: Flow, entry: core.Screen) -> core.Transition:
    """The voucher entry's way into OriginalLookup: the screen and its LookupOriginal command."""
    return core.Transition(OriginalLookup(flow, entry), (core.LookupOriginal(flow.op, flow.voucher or ""),))


@dataclass(frozen=True)
class WorkingScreen(core.Screen):
    """An operation runs: its progress per OpStep, CANCEL where the step allows, then the result.

    source: None when the operator started it here, else "ecr" | "system" (shown in the title).
    """

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    op: str
    amount: int | None = None
    source: str | None = None
    back: core.Screen | None = None  # a refusal goes back here in words (the last entry, a menu)
    step: str | None = None
    since: float = 0.0
    done: int | None = None
    total: int | None = None
    cancellable: bool = True
    cancelling: bool = False
    pan_masked: str | None = None
    chip_seen: bool = False
    note: str | None = None
    note_until: float = 0.0
    refused: str | None = None  # why the reader refused the last card (while waiting for one)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OpStep):
            moved = event.step != self.step
            since = ctx.mono if moved else self.since
            # a card refusal belongs to the card step: it goes when the step does
            return core.Transition(replace(self, step=event.step, since=since, done=event.done,
                                           total=event.total, cancellable=event.cancellable,
                                           refused=None if moved else self.refused))
        if isinstance(event, core.CardRefused):
            # said at once under "Swipe card"; the wait for a card goes on
            return core.Transition(replace(self, refused=event.message_key))
        if isinstance(event, core.AppChoiceWanted):
            return core.Transition(AppChoice(event.labels, replace(self, step="chip_choose")))
        if isinstance(event, core.PinWanted):
            amount = event.amount if event.amount is not None else self.amount
            waiting = replace(self, step="pin", since=ctx.mono)
            return core.Transition(PinEntry(event.pan_masked, amount, event.bypass_allowed, waiting,
                                            event.tries_left))
        if isinstance(event, core.OpDone):
            if event.outcome.status == "refused" and self.back is not None:
                # not found, not allowed: nothing happened, so back one level with the reason
                return core.Transition(message(event.outcome.message_key, self.back, f"op_{self.op}"))
            return core.Transition(result_screen(event.outcome, self))
        if isinstance(event, core.CardPresented):
            return core.Transition(replace(self, pan_masked=event.pan_masked, refused=None))
        if isinstance(event, core.ChipSeen):
            return core.Transition(replace(self, chip_seen=event.inserted))
        if not isinstance(event, core.KeyIn):
            return None
        if event.key is not Key.CANCEL or self.cancelling:
            return core.Transition(self)  # keys do nothing while an operation runs
        if self.cancellable:
            return core.Transition(replace(self, cancelling=True), (core.CancelOp(),))
        return core.Transition(replace(self, note="cannot_cancel", note_until=ctx.mono + NOTE_S))

    def title(self, ctx: core.UiContext) -> str:
        name = op_title(ctx, self.op)
        return t(ctx, f"src_{self.source}", op=name) if f"src_{self.source}" in CATALOG else name

    def step_text(self, ctx: core.UiContext) -> str:
        step = self.step
        if step is None:
            return t(ctx, "step_wait")
        if step == "card":
            return t(ctx, "step_chip" if self.chip_seen else "step_card")
        if step in COUNTING_STEPS:
            return t(ctx, f"step_{step}", s=int(max(0.0, ctx.mono - self.since)))
        if step in ("uploading", "printing", "upd_writing"):
            return t(ctx, f"step_{step}", done=_count(self.done), total=_count(self.total))
        return t(ctx, f"step_{step}") if f"step_{step}" in CATALOG else t(ctx, "step_wait")

    def render(self, ctx: core.UiContext) -> Frame:
        info = [money(ctx, self.amount)] if self.amount is not None else []
        if self.pan_masked:
            info.append(core.pan_text(self.pan_masked, ctx.cols))
        status = core.wrap(self.step_text(ctx), ctx.cols)
        if self.refused:
            refused = core.wrap(t(ctx, self.refused), ctx.cols)
            # the refusal is the news (and says what to do): the step line goes if both do not fit
            status = refused if len(status) + len(refused) > ctx.rows - 1 else status + refused
        if self.cancelling:
            status += core.wrap(t(ctx, "cancelling"), ctx.cols)
        if self.note and self.note_until > ctx.mono:
            status += core.wrap(t(ctx, self.note), ctx.cols)
        room = max(0, ctx.rows - 1 - len(status))  # the step and notes matter more than the amount
        return core.frame(ctx, [self.title(ctx), *info[:room], *status])

    def next_wakeup(self, ctx: core.UiContext) -> float | None:
        wakeups = []
        if self.step in COUNTING_STEPS:
            # the next whole second of the step, so the counter moves once a second
            wakeups.append(self.since + math.floor(max(0.0, ctx.mono - self.since)) + 1.0)
        if self.note and self.note_until > ctx.mono:
            wakeups.append(self.note_until)
        return min(wakeups) if wakeups else None


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def external(event: core.OpStarted, current: core.Screen) -> core.Screen:
    """An operation the ECR or the system started (the Ui's on_external hook)."""
    return WorkingScreen(event.op, event.amount, event.source)
