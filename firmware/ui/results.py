"""How an operation ended, in words: one result screen per OpOutcome status, read-only.

The last row says "ENTER: continue"; ENTER or CANCEL goes to idle, and so does the result
timeout (display.result_timeout_s without a key); UP/DOWN scroll what does not fit; "host
unreachable" also offers F1, an echo test.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from firmware.ports import Frame, Key
from firmware.ui import core
from firmware.ui.scroll import ScrollScreen, paged, scrolled, wrap_all
from firmware.ui.texts import money, op_title, t, words

# status -> the catalog key of its headline when message_key does not say more
HEADLINES = {
    "approved": "approved",
    "declined": "res_declined",
    "cancelled": "cancelled",
    "reversed": "reversal_sent",
    "reversal_pending": "reversal_pending",
    "stored": "advice_stored",
    "failed": "res_failed",
    "refused": "res_failed",
    "settled": "settled_balanced",
    "done": "res_done",
}


def home() -> core.Screen:
    """Idle, named: idle opens the flows that end here, so this module cannot import it."""
    return core.Go("home")


def body(outcome: core.OpOutcome, ctx: core.UiContext) -> list[str]:
    """The result's rows before wrapping, in the screen's language."""
    status = outcome.status
    lines: list[str] = []
    if status == "declined":
        code = outcome.response_code or outcome.message_key
        lines += [t(ctx, "res_declined"), t(ctx, outcome.message_key), t(ctx, "res_code", code=code)]
    elif status in ("failed", "refused", "settled", "done", "cancelled", "stored",
                    "not_cancelled") and outcome.message_key:
        lines.append(words(ctx, outcome.message_key))
    elif status == "approved" and outcome.balance is not None:
        lines.append(t(ctx, "approved"))
    elif status in HEADLINES:
        lines.append(t(ctx, HEADLINES[status]))
    else:  # a status this screen does not know: say it rather than guess
        lines.append(t(ctx, "res_unknown", status=status))
    if ctx.paper == "out" and outcome.op != "print_resume":  # a receipt waits for paper
        lines.append(t(ctx, "res_paper_out"))
    if outcome.balance is not None:
        lines += [t(ctx, "res_balance"), money(ctx, outcome.balance)]
    elif outcome.amount is not None and status in ("approved", "stored", "declined", "reversed",
                                                   "reversal_pending", "not_cancelled"):
        lines.append(money(ctx, outcome.amount))
    if outcome.auth_code and status == "approved":
        lines.append(t(ctx, "res_auth", code=outcome.auth_code))
    if outcome.pan_masked:
        lines.append(core.pan_text(outcome.pan_masked, ctx.cols))
    if outcome.voucher:
        lines.append(t(ctx, "res_voucher", voucher=outcome.voucher))
    if outcome.rrn and status == "approved":
        lines.append(t(ctx, "res_rrn", rrn=outcome.rrn))
    if outcome.batch:
        lines.append(t(ctx, "res_batch", batch=outcome.batch))
    if outcome.detail and status in ("failed", "refused", "not_cancelled", "stored"):
        lines.append(words(ctx, outcome.detail))  # a catalog key (the terminal's notice) or words
    if outcome.message_key == "host_unreachable":
        lines.append(t(ctx, "f1_echo"))
    return lines + list(outcome.lines)


@dataclass(frozen=True)
class ResultScreen(core.Screen):
    """How an operation ended; the last row says ENTER goes on, and without a key the screen
    goes home after the result time (the machine's result timeout)."""

    staged: ClassVar[bool] = False
    result: ClassVar[bool] = True

    outcome: core.OpOutcome
    top: int = 0

    def rows(self, ctx: core.UiContext) -> list[str]:
        return wrap_all(body(self.outcome, ctx), ctx.cols)

    def handle(self, event: core.UiEvent, ctx: core.UiContext) -> core.Transition | None:
        if not isinstance(event, core.KeyIn):
            return None
        if event.key in (Key.ENTER, Key.CANCEL):
            return core.Transition(home())
        if event.key is Key.F1 and self.outcome.message_key == "host_unreachable":
            # txn.start (the echo's working screen and its StartOp), named: txn builds on results
            return core.Transition(core.Go("start", (core.StartOp("echo"),)))
        top = scrolled(event.key, self.top, len(self.rows(ctx)), above_hint(ctx))
        return core.Transition(replace(self, top=top) if top is not None else self)

    def render(self, ctx: core.UiContext) -> Frame:
        page = paged(above_hint(ctx), op_title(ctx, self.outcome.op), self.rows(ctx), self.top)
        return replace(page, rows=(*page.rows, core.fit(t(ctx, "enter_continue"), ctx.cols)))


def above_hint(ctx: core.UiContext) -> core.UiContext:
    """The rows a result pages through: all but the last, which keeps the ENTER hint."""
    return replace(ctx, rows=ctx.rows - 1)


# Operations that only read (the screen that asked may be gone when they answer).
READ_ONLY_OPS = frozenset({"settle_review", "deregister_check", "held_list",
                           "report_list", "report_totals", "subtotals",
                           "update_sources", "update_check", "firmware_status"})


def result_screen(outcome: core.OpOutcome, current: core.Screen | None = None) -> core.Screen:
    """The screen for an outcome (the Ui's on_result hook); reports go to a scroll screen."""
    if outcome.op in READ_ONLY_OPS and current is not None:
        # a reading the operator left with CANCEL before it came back: nothing to show
        return current
    if outcome.status == "done" and outcome.lines:
        return ScrollScreen(f"op_{outcome.op}", outcome.lines, home(), translate=False)
    if outcome.op == "settle" and (outcome.status in ("failed", "refused", "cancelled")
                                   or outcome.message_key == "settled_unbalanced"):
        # why it did not settle and what to do (echo test, batch detail, the host's code):
        # review_screens.settle_result_screen, named (the review builds on these results)
        return core.Go("settle_result", (outcome, home()))
    return ResultScreen(outcome)
