"""Held-order screens through core.Ui with a fake clock: the list, details, the cancel flow (reason,
details, password, right and wrong), the park flow with multi-tap note; snapshots en + zh_CN."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest
from ui_snapshots import assert_snapshot

from firmware.ports import Frame, Key
from firmware.settings.model import factory
from firmware.ui import core
from firmware.ui.held_screens import held_root, park_flow
from firmware.ui.idle import IdleScreen


@dataclass(frozen=True)
class Home(core.Screen):
    def handle(self, event, ctx):
        return None

    def render(self, ctx) -> Frame:
        return core.frame(ctx, ["HOME"])


HOME = Home()
SETTINGS = factory()
ORDERS = (
    {"id": 1, "time": "05-01 09:30", "amount": 12345, "type": "sale", "reference": "T12",
     "note": "table 12", "status": "HELD", "readonly": False},
    {"id": 2, "time": "05-01 09:41", "amount": 880, "type": "sale", "reference": "T7",
     "note": "", "status": "PAID", "readonly": False},
    {"id": None, "txn_id": 9, "time": "05-01 09:50", "amount": 555, "type": "sale",
     "reference": "", "voucher": "000031", "status": "REVERSAL_DUE", "doing": "held_doing_reversal",
     "readonly": True},
)


class Driver:
    def __init__(self, lang="en", rows=4, cols=16) -> None:
        self.lang, self.rows, self.cols, self.mono = lang, rows, cols, 100.0
        # idle is the real one: a money result goes home (idle), the flows' back is HOME
        self.ui = core.Ui(IdleScreen, lambda outcome, screen: screen, lambda op, screen: screen)
        self.commands: list = []

    def ctx(self) -> core.UiContext:
        return core.UiContext(now=datetime(2024, 5, 1, 10, 2), mono=self.mono, rows=self.rows,
                              cols=self.cols, lang=self.lang, settings=SETTINGS)

    def feed(self, event):
        out = self.ui.feed(event, self.ctx())
        self.commands += out.commands
        return out

    def keys(self, *keys: Key):
        out = None
        for key in keys:
            out = self.feed(core.KeyIn(key))
        return out

    def open(self, screen):
        self.ui.screen = screen
        out = self.feed(core.Tick())  # the list asks the app at once
        return out

    def snap(self, name: str) -> None:
        suffix = "" if self.rows == 4 else "_8x21"
        assert_snapshot(f"held_{name}_{self.lang}{suffix}", self.ui.frame(self.ctx()), self.cols)


def listed(d: Driver, items=ORDERS):
    out = d.open(held_root(HOME))
    assert out.commands == (core.StartOp("held_list"),)
    d.feed(core.OpDone(core.OpOutcome("held_list", "done", "held_list", items=items)))


LANGS = [("en", 4, 16), ("zh_CN", 4, 16), ("en", 8, 21), ("zh_CN", 8, 21)]


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_list_details_and_readonly_entries(lang, rows, cols):
    d = Driver(lang, rows, cols)
    listed(d)
    d.snap("list")
    d.keys(Key.ENTER)
    d.snap("details")
    d.keys(Key.CANCEL, Key.D3)
    d.snap("readonly")
    d.keys(Key.D1, Key.D2)  # no action on an entry being resolved
    assert d.commands == [core.StartOp("held_list")]
    d.keys(Key.CANCEL, Key.CANCEL)
    assert d.ui.screen is HOME


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_cancel_flow_reason_details_password(lang, rows, cols):
    d = Driver(lang, rows, cols)
    listed(d)
    d.keys(Key.D2)
    d.keys(Key.D2)
    d.snap("reasons")
    d.keys(Key.DOWN, Key.DOWN, Key.ENTER)  # operator error
    d.snap("cancel_confirm")
    d.keys(Key.ENTER, *[Key.D1] * 6, Key.ENTER)
    assert isinstance(d.commands[-1], core.CheckPassword) and d.commands[-1].purpose == "held_cancel"
    d.feed(core.PasswordChecked(False))  # wrong password: nothing starts
    d.snap("password_wrong")
    assert not any(isinstance(c, core.StartOp) and c.op == "held_cancel" for c in d.commands)
    d.keys(*[Key.D2] * 6, Key.ENTER)
    d.feed(core.PasswordChecked(True))
    out = d.feed(core.Tick())
    assert out.commands == (core.StartOp("held_cancel", order_id=2, reason="operator_error",
                                         authorised=True),)
    d.feed(core.OpDone(core.OpOutcome("held_cancel", "approved", "approved", amount=880)))
    d.snap("cancel_done")
    d.keys(Key.ENTER)  # the result in words, then idle (as after any money-moving operation)
    assert isinstance(d.ui.screen, IdleScreen)


def test_each_reason_can_be_chosen_by_digit():
    for digit, reason in ((Key.D1, "customer_cancelled"), (Key.D2, "payment_failed"),
                          (Key.D3, "operator_error"), (Key.D4, "other")):
        d = Driver()
        listed(d)
        d.keys(Key.D1, Key.D2, digit, Key.ENTER, *[Key.D5] * 6, Key.ENTER)
        d.feed(core.PasswordChecked(True))
        assert d.feed(core.Tick()).commands[0].reason == reason


def test_resume_and_trail_start_their_ops():
    d = Driver()
    listed(d)
    d.keys(Key.D1, Key.D1)
    assert d.feed(core.Tick()).commands == (core.StartOp("held_resume", order_id=1, amount=12345,
                                                         reference="T12"),)
    d.keys(Key.CANCEL)
    assert d.commands[-1] == core.CancelOp()
    listed(d)
    before = len(d.commands)
    d.keys(Key.D2, Key.D1)  # a PAID order cannot be resumed
    assert type(d.ui.screen).__name__ == "HeldDetails" and len(d.commands) == before
    assert d.feed(core.Tick()).commands == ()
    d.keys(Key.D3)
    assert d.feed(core.Tick()).commands == (core.StartOp("held_trail", order_id=2),)


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_rows_read_number_amount_status_and_only_working_actions_are_offered(lang, rows, cols):
    """Issue 13 A10: a row read "1.88.00 1001" (the row number ran into the amount) with no
    status, and a paid order offered "1 Resume", which did nothing."""
    d = Driver(lang, rows, cols)
    listed(d)
    shown = d.ui.frame(d.ctx()).rows
    status = {"en": ("open", "paid", "rev due"), "zh_CN": ("未付", "已付", "待冲正")}[lang]
    assert shown[1].startswith(f"1 123.45 {status[0]}") and shown[2].startswith(f"2 8.80 {status[1]}")
    assert shown[3].startswith(f"3 5.55 {status[2]}")
    d.keys(Key.D2)  # the paid order
    d.snap("details_paid")
    paid = "\n".join(d.ui.frame(d.ctx()).rows)
    resume, cancel = ("Resume", "Cancel") if lang == "en" else ("继续支付", "取消挂单")
    assert resume not in paid and cancel in paid and ("Paid" if lang == "en" else "已支付") in paid
    d.keys(Key.CANCEL, Key.D1)  # the open order: resume, cancel and trail
    assert resume in "\n".join(d.ui.frame(d.ctx()).rows)
    order_no = "Order no." if lang == "en" else "订单号"
    if rows > 4:
        assert f"{order_no}:T12" in d.ui.frame(d.ctx()).rows


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_park_flow_with_multitap_note(lang, rows, cols):
    d = Driver(lang, rows, cols)
    d.ui.screen = park_flow(HOME)
    d.keys(Key.D1, Key.D2, Key.D3, Key.D4)
    d.snap("park_amount")
    d.keys(Key.ENTER, Key.D4, Key.D2)
    d.snap("park_reference")
    d.keys(Key.ENTER)
    d.keys(Key.D8)  # t
    d.mono += 2
    d.feed(core.Tick())
    d.keys(Key.D2)  # a
    d.mono += 2
    d.feed(core.Tick())
    d.keys(Key.D2, Key.D2)  # b (same key twice within the multi-tap time)
    d.snap("park_note")
    d.keys(Key.ENTER)
    d.snap("park_confirm")
    d.keys(Key.ENTER)
    out = d.feed(core.Tick())
    assert out.commands == (core.StartOp("held_park", amount=1234, reference="42", note="tab"),)
    d.feed(core.OpDone(core.OpOutcome("held_park", "stored", "held_parked", amount=1234)))
    d.snap("park_done")


def test_empty_list_and_cancel_back_discards_the_park():
    d = Driver()
    listed(d, items=())
    d.snap("empty")
    d.ui.screen = park_flow(HOME)
    d.keys(Key.D5, Key.ENTER, Key.CANCEL, Key.CANCEL)
    assert d.ui.screen is HOME and not any(isinstance(c, core.StartOp) for c in d.commands[1:])
