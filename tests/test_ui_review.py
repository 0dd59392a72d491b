"""Settlement review screens through core.Ui with a fake clock: load, pending first with F1 send
now, ENTER refused while pending, the anomaly list and details with their actions (void behind the
password), CANCEL changes nothing, ENTER settles, the result with advice; snapshots en + zh_CN."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest
from ui_snapshots import assert_snapshot

from firmware.ports import Frame, Key
from firmware.settings.model import factory
from firmware.ui import core, machine
from firmware.ui.idle import IdleScreen
from firmware.ui.review_screens import settle_result_screen, settle_review_flow


@dataclass(frozen=True)
class Home(core.Screen):
    def handle(self, event, ctx):
        return None

    def render(self, ctx) -> Frame:
        return core.frame(ctx, ["HOME"])


HOME = Home()
LINES = ("Batch     000001", "COUNT          4", "CUP            3", "          46.00")
PENDING = {"kind": "reversal_due", "record_id": 5, "voucher": "000005", "pan": "622588******0001",
           "amount": 2000, "actions": ["retry"], "attempts": 3}
DUP = {"kind": "duplicate", "record_id": 2, "voucher": "000002", "pan": "622588******0001",
       "amount": 1500, "actions": ["void"], "related_voucher": "000001", "attempts": 0}
PRINT = {"kind": "print_failed", "record_id": 4, "voucher": "000004", "pan": "622588******0001",
         "amount": 1600, "actions": ["reprint"], "related_voucher": None, "attempts": 0}
STUCK = {"kind": "reversal_stuck", "record_id": 5, "voucher": "000005", "pan": "622588******0001",
         "amount": 2000, "actions": ["retry"], "related_voucher": None, "attempts": 3}
BLOCKED = core.OpOutcome("settle_review", "done", "review_blocked", lines=LINES,
                         items=(PENDING, DUP, PRINT, STUCK))
CLEAN = core.OpOutcome("settle_review", "done", "review_ready", lines=LINES, items=(DUP,))


class Driver:
    def __init__(self, lang: str = "en", rows: int = 4, cols: int = 16) -> None:
        self.lang, self.rows, self.cols = lang, rows, cols
        self.mono = 100.0
        # idle is the real one: a settlement's result goes home (idle), the review's back is HOME;
        # the routes as build_ui gives them (the settlement's result is named by results.py)
        self.ui = core.Ui(IdleScreen, lambda o, s: HOME, lambda e, s: HOME, routes=machine.ROUTES)
        self.ui.screen = settle_review_flow(HOME)

    def ctx(self) -> core.UiContext:
        return core.UiContext(now=datetime(2025, 5, 1, 10, 0), mono=self.mono, rows=self.rows,
                              cols=self.cols, lang=self.lang, settings=factory())

    def feed(self, event) -> core.Output:
        return self.ui.feed(event, self.ctx())

    def key(self, *keys: Key) -> core.Output:
        out = None
        for k in keys:
            out = self.feed(core.KeyIn(k))
        assert out is not None
        return out

    def load(self, outcome: core.OpOutcome = BLOCKED) -> core.Output:
        sent = self.feed(core.Tick())
        assert sent.commands == (core.StartOp("settle_review"),)
        return self.feed(core.OpDone(outcome))

    def snap(self, name: str, out: core.Output) -> None:
        suffix = "" if (self.rows, self.cols) == (4, 16) else f"_{self.rows}x{self.cols}"
        assert_snapshot(f"review_{name}_{self.lang}{suffix}", out.frame, self.cols)


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_review_pending_first_and_settle_refused_until_sent(lang):
    d = Driver(lang)
    d.snap("loading", core.Output(d.ui.frame(d.ctx()), (), False))
    out = d.load()
    d.snap("blocked", out)
    assert "000005" in "".join(out.frame.rows)
    refused = d.key(Key.ENTER)
    assert refused.commands == ()  # nothing is sent while the host is owed a reversal
    d.snap("blocked_enter", refused)
    d.key(Key.DOWN, Key.DOWN)
    d.snap("blocked_scrolled", d.key(Key.DOWN))
    sent = d.key(Key.F1)
    assert sent.frame.rows[0]
    tick = d.feed(core.Tick())
    assert tick.commands == (core.StartOp("anomaly_act", reason="retry"),)
    done = d.feed(core.OpDone(core.OpOutcome("anomaly_act", "done", "anomaly_retry_done")))
    d.snap("act_result", done)
    reload = d.key(Key.ENTER)
    assert d.feed(core.Tick()).commands == (core.StartOp("settle_review"),)
    assert reload.commands == ()


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_anomaly_list_details_and_void_behind_password(lang):
    d = Driver(lang)
    d.load()
    listing = d.key(Key.F2)
    d.snap("anomalies", listing)
    assert len([r for r in listing.frame.rows if r]) == 4  # title + 3 anomalies (pending not here)
    detail = d.key(Key.D1)
    d.snap("detail_duplicate", detail)
    password = d.key(Key.D1)
    assert password.sensitive and password.commands == ()
    for k in (Key.D2, Key.D4, Key.D6, Key.D8, Key.D1, Key.D0):
        d.key(k)
    asked = d.key(Key.ENTER)
    assert isinstance(asked.commands[0], core.CheckPassword) and asked.commands[0].purpose == "void"
    confirm = d.feed(core.PasswordChecked(True))
    # The menu's void ends on a confirm of the money; so does this one (issue 13 A14).
    d.snap("void_confirm", confirm)
    assert d.feed(core.Tick()).commands == ()  # nothing is sent before ENTER
    back = d.key(Key.CANCEL)
    assert back.commands == () and "000002" in "".join(back.frame.rows)  # the anomaly again
    d.key(Key.D1, *(Key.D2, Key.D4, Key.D6, Key.D8, Key.D1, Key.D0), Key.ENTER)
    d.feed(core.PasswordChecked(True))
    d.key(Key.ENTER)
    go = d.feed(core.Tick())
    assert go.commands == (core.StartOp("anomaly_act", voucher="000002", reason="void", authorised=True),)
    # CANCEL from a detail goes back one level; reprint needs no password.
    d2 = Driver(lang)
    d2.load()
    d2.key(Key.F2, Key.DOWN)
    detail = d2.key(Key.ENTER)
    d2.snap("detail_print_failed", detail)
    d2.feed(core.KeyIn(Key.D1))
    assert d2.feed(core.Tick()).commands == (core.StartOp("anomaly_act", voucher="000004",
                                                          reason="reprint"),)
    d3 = Driver(lang)
    d3.load()
    d3.key(Key.F2, Key.D3)
    d3.snap("detail_reversal_stuck", d3.ui.feed(core.KeyIn(Key.D9), d3.ctx()))


def test_cancel_anywhere_before_enter_changes_nothing():
    d = Driver()
    assert d.key(Key.CANCEL).commands == () and d.ui.screen is HOME  # before the review is asked
    for path in ([], [Key.F2], [Key.F2, Key.D1], [Key.F2, Key.D1, Key.D1]):
        d = Driver()
        d.load()
        if path:
            d.key(*path)
        commands = []
        while d.ui.screen is not HOME:
            commands += d.key(Key.CANCEL).commands
        assert commands == []


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_enter_settles_and_the_result_says_what_to_do(lang):
    d = Driver(lang)
    d.load(CLEAN)
    d.snap("clean", core.Output(d.ui.frame(d.ctx()), (), False))
    go = d.key(Key.ENTER)
    assert go.commands == (core.StartOp("settle", authorised=True),)
    d.feed(core.OpStep("settling", cancellable=False))
    assert d.key(Key.CANCEL).commands == ()  # the request left: CANCEL cannot stop it
    failed = d.feed(core.OpDone(core.OpOutcome("settle", "failed", "settlement_no_reply",
                                               detail="no reply to the settlement request (timeout)")))
    d.snap("result_no_reply", failed)
    body = " ".join(d.ui.screen.body(d.ctx()))
    assert "echo" in body.lower() or "回响" in body
    d.key(Key.ENTER)
    assert isinstance(d.ui.screen, IdleScreen)  # a settlement's result returns to idle, as any result


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_settle_result_screen_for_each_failure_class(lang):
    cases = {
        "result_unbalanced": core.OpOutcome("settle", "settled", "settled_unbalanced"),
        "result_host_code": core.OpOutcome("settle", "failed", "settlement_no_reply",
                                           detail="host refused the settlement (96)"),
        "result_blocked": core.OpOutcome("settle", "refused", "settlement_blocked",
                                         detail="1 reversal(s) and 0 advice(s) are not yet acknowledged"),
    }
    for name, outcome in cases.items():
        ui = core.Ui(lambda: HOME, lambda o, s: HOME, lambda e, s: HOME)
        ui.screen = settle_result_screen(outcome, HOME)
        ctx = core.UiContext(now=datetime(2025, 5, 1), mono=0.0, rows=8, cols=21, lang=lang)
        assert_snapshot(f"review_{name}_{lang}_8x21", ui.frame(ctx), 21)
    ui.feed(core.KeyIn(Key.DOWN), ctx)
    assert ui.feed(core.KeyIn(Key.CANCEL), ctx).frame.rows[0] == "HOME"


def test_big_lcd_review():
    d = Driver("zh_CN", rows=8, cols=21)
    d.snap("blocked", d.load())
    d = Driver("en", rows=8, cols=21)
    d.snap("blocked", d.load())
