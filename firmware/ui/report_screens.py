"""The on-screen reports (Reports > Transactions, Reports > Totals, Settlement > Subtotals):
loaded from the app, read with UP/DOWN, printed with F1 (the bottom row says so); ENTER or
CANCEL goes back to the menu that opened them, never to idle. Sans-I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from firmware.ports import Frame, Key, text_cells
from firmware.ui import core
from firmware.ui.scroll import message, paged, scrolled, wrap_all
from firmware.ui.texts import op_title

# report op shown on the LCD -> the op that queues the same report on paper
PRINT_OP: dict[str, str] = {
    "report_list": "print_txn_list",
    "report_totals": "print_subtotals",
    "subtotals": "print_subtotals",
}

CATALOG: core.Catalog = {
    "report_loading": ("Loading...", "读取中..."),
    "report_print_hint": ("F1 print", "F1 打印"),
    "report_printing": ("Printing...", "正在打印..."),
    "report_sent": ("Sent to printer", "已送打印机"),
    "report_not_printed": ("Not printed", "未能打印"),
}


def _t(ctx: core.UiContext, key: str, **values: Any) -> str:
    return core.say(CATALOG, key, ctx.lang, **values)


def report_flow(op: str, back: core.Screen) -> core.Transition:
    """Ask the app for the report's lines; the report screen shows them over `back`."""
    return core.Transition(ReportLoad(op, back), (core.StartOp(op),))


@dataclass(frozen=True)
class ReportLoad(core.Screen):
    """The report is being read from the journal; CANCEL goes back (a reading changes nothing)."""

    staged: ClassVar[bool] = False
    running: ClassVar[bool] = True

    op: str
    back: core.Screen

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OpDone) and event.outcome.op == self.op:
            outcome = event.outcome
            if outcome.status == "done":
                return core.Transition(ReportScreen(outcome, self.back))
            # cannot be read (service mode, busy): the reason in words, then back one level
            return core.Transition(message(outcome.message_key, self.back, f"op_{self.op}"))
        if isinstance(event, core.KeyIn):
            return core.Transition(self.back if event.key is Key.CANCEL else self)
        return None

    def render(self, ctx: core.UiContext) -> Frame:
        return core.frame(ctx, [op_title(ctx, self.op), _t(ctx, "report_loading")])


@dataclass(frozen=True)
class ReportScreen(core.Screen):
    """The report's lines above a bottom row that says what F1 does (or how printing went)."""

    outcome: core.OpOutcome
    back: core.Screen
    top: int = 0
    note: str | None = None  # a CATALOG key shown on the bottom row instead of the hint
    printing: bool = False

    @property
    def print_op(self) -> str:
        return PRINT_OP[self.outcome.op]

    def rows(self, ctx: core.UiContext) -> list[str]:
        # The app drew the lines for this width (amounts right-aligned): only a longer one wraps.
        return [row for line in self.outcome.lines
                for row in ([line] if text_cells(line) <= ctx.cols else wrap_all([line], ctx.cols))]

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if isinstance(event, core.OpDone) and event.outcome.op == self.print_op:
            note = "report_sent" if event.outcome.ok else "report_not_printed"
            return core.Transition(replace(self, printing=False, note=note))
        if not isinstance(event, core.KeyIn):
            return None
        if event.key in (Key.ENTER, Key.CANCEL):
            return core.Transition(self.back)
        if event.key is Key.F1 and not self.printing:
            return core.Transition(replace(self, printing=True, note="report_printing"),
                                   (core.StartOp(self.print_op),))
        inner = replace(ctx, rows=ctx.rows - 1)
        top = scrolled(event.key, self.top, len(self.rows(ctx)), inner)
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        inner = replace(ctx, rows=ctx.rows - 1)
        window = paged(inner, op_title(ctx, self.outcome.op), self.rows(ctx), self.top)
        bottom = _t(ctx, self.note or "report_print_hint")
        return core.frame(ctx, [*window.rows, bottom], inverse_row=ctx.rows - 1)
