"""The transaction screens through core.Ui with a fake clock: flows, CANCEL at every step, timeouts
and wake-ups, amount/PIN/password entry rules, results, and no typed secret in any repr."""

from __future__ import annotations

import itertools
import math
import sys
import types
from datetime import datetime, timedelta
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware.ports import Key, text_cells
from firmware.ui import core
from firmware.ui.entry import AmountEntry, NumberEntry, PasswordEntry, PinEntry, valid_mmdd
from firmware.ui.idle import IdleScreen
from firmware.ui.machine import build_ui
from firmware.ui.menu import MenuScreen
from firmware.ui.results import ResultScreen
from firmware.ui.scroll import ScrollScreen
from firmware.ui.txn import ConfirmScreen, WorkingScreen

TYPES = ["sale", "void", "refund", "balance", "preauth", "preauth_void", "completion", "completion_void"]
SETTINGS = {"transactions": {"enabled": TYPES, "max_amount": 10_000_000, "currency": "156"},
            "display": {"language": "en", "idle_timeout_s": 60}}
PAN = "622202******1234"


class Term:
    """A Ui with a hand-built context and a clock the test moves."""

    def __init__(self, settings_: dict | None = None, **context) -> None:
        self.ui = build_ui()
        self.mono = 1000.0
        self.now = datetime(2024, 5, 1, 12, 34, 56)
        self.settings = settings_ or SETTINGS
        self.context = {"merchant_name": "Demo Shop", "link_up": True, "paper": "ok", **context}
        self.commands: list[core.UiCommand] = []
        self.out: core.Output | None = None

    def ctx(self) -> core.UiContext:
        return core.UiContext(now=self.now, mono=self.mono, settings=self.settings, **self.context)

    def feed(self, event: core.UiEvent) -> tuple[core.UiCommand, ...]:
        self.out = self.ui.feed(event, self.ctx())
        self.commands += self.out.commands
        return self.out.commands

    def keys(self, script: str) -> list[core.UiCommand]:
        got: list[core.UiCommand] = []
        for name in script.split():
            got += self.feed(core.KeyIn(Key[name] if name in Key.__members__ else Key(name)))
        return got

    def run(self, *steps: str | core.UiEvent) -> list[core.UiCommand]:
        got: list[core.UiCommand] = []
        for step in steps:
            got += self.keys(step) if isinstance(step, str) else self.feed(step)
        return got

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.now += timedelta(seconds=seconds)

    @property
    def screen(self) -> core.Screen:
        return self.ui.screen

    def text(self) -> str:
        return "\n".join(self.ui.frame(self.ctx()).rows)

    def all_text(self) -> str:
        """Every row of a scrollable screen, joined by spaces (so wrapped sentences read whole):
        DOWN (one row each) until the frame stops changing. A last row that stays (the result's
        ENTER hint) is a footer: the row scrolled in is the one above it, and the footer counts once."""
        rows = self.text().splitlines()
        footer: list[str] = []
        for _ in range(30):
            before = self.text()
            self.keys("DOWN")
            if self.text() == before:
                break
            now = self.text().splitlines()
            if now[-1] == before.splitlines()[-1]:
                footer = [now[-1]]
                rows = rows[:-1] if rows[-1] == now[-1] else rows
                rows.append(now[-2])
            else:
                rows.append(now[-1])
        return " ".join(row.strip() for row in rows + footer)


# The settlement's review (firmware/ui/review_screens.py) loads on the first tick; a clean one.
REVIEW_TICK = core.Tick()
REVIEWED = core.OpDone(core.OpOutcome("settle_review", "done", "review_ready",
                                      lines=("Sales 2   36.00",)))


def found(voucher: str, kind: str, amount: int = 5000) -> core.OriginalFound:
    """The app's answer to LookupOriginal: the original exists and may be used."""
    return core.OriginalFound(voucher, True, "", kind, amount, PAN)


def outcome(status: str = "approved", op: str = "sale", **fields) -> core.OpDone:
    base = {"message_key": "approved", "amount": 1234, "pan_masked": PAN, "auth_code": "123456",
            "voucher": "000321", "rrn": "123456789012"}
    return core.OpDone(core.OpOutcome(op, status, **{**base, **fields}))


PW_OK = core.PasswordChecked(True)

# ---------------------------------------------------------------- flows end to end


def test_sale_from_menu_to_approved() -> None:
    term = Term()
    assert term.keys("MENU 1 1 2 3 4 ENTER ENTER") == [core.StartOp("sale", amount=1234)]
    assert isinstance(term.screen, WorkingScreen) and "Sale" in term.text()
    term.feed(core.OpStep("card"))
    assert "swipe card" in term.text() and "CNY 12.34" in term.text()
    term.feed(core.OpStep("connecting"))
    term.advance(3.2)
    term.feed(core.Tick())
    assert "Connecting... 3s" in term.text()
    term.feed(core.OpStep("sending"))
    assert "Processing... 0s" in term.text()
    term.feed(outcome())
    assert isinstance(term.screen, ResultScreen)
    shown = term.all_text()
    for words in ("Approved", "CNY 12.34", "Auth 123456", PAN, "Voucher 000321"):
        assert words in shown
    term.keys("ENTER")
    assert isinstance(term.screen, IdleScreen)


def test_sale_with_pin_bypass_and_retry() -> None:
    term = Term()
    term.keys("F1 5 0 0 ENTER ENTER")
    term.feed(core.PinWanted(PAN, 500, bypass_allowed=True))
    assert isinstance(term.screen, PinEntry) and term.out is not None and term.out.sensitive
    assert "CNY 5.00" in term.text() and PAN in term.text() and "Enter PIN" in term.text()
    assert term.keys("ENTER") == [core.SubmitPin(None)]
    assert isinstance(term.screen, WorkingScreen)
    term.feed(core.PinWanted(PAN, 500, bypass_allowed=False, tries_left=2))  # the last was wrong
    assert "Wrong PIN - 2" in term.text() and PAN in term.text()
    assert term.keys("ENTER") == []
    assert "PIN required" in term.text()
    term.keys("4 7 1")
    assert term.text().splitlines()[-1].strip() == "***"
    assert term.keys("ENTER") == [] and "PIN 4-12 digits" in term.text()
    term.keys("CLEAR 1 9 2")
    assert term.keys("ENTER") == [core.SubmitPin("47192")]
    term.feed(core.OpStep("sending"))
    term.feed(outcome("declined", message_key="51", response_code="51"))
    shown = term.all_text()
    assert "Declined" in shown and "Insufficient funds" in shown and "Code 51" in shown


def test_pin_keeps_progress_and_takes_the_outcome() -> None:
    term = Term()
    term.keys("F1 5 ENTER ENTER")
    term.feed(core.PinWanted(PAN, None, bypass_allowed=False))
    term.feed(core.OpStep("connecting"))
    assert isinstance(term.screen, PinEntry)
    assert isinstance(term.screen.back, WorkingScreen) and term.screen.back.step == "connecting"
    term.keys("1 2 3 4 5 6 7 8 9 0 1 2 3 4")
    assert term.text().splitlines()[-1].strip() == "*" * 12
    term.feed(outcome("cancelled", message_key="cancelled"))
    assert isinstance(term.screen, ResultScreen) and "Cancelled" in term.text()


@pytest.mark.parametrize(("script", "command"), [
    ("F2 1 2 3 4 5 6 ENTER", core.CheckPassword("void", "123456")),
    ("F3 1 2 3 4 5 6 ENTER", core.CheckPassword("settlement", "123456")),
    ("F4", core.StartOp("reprint_last")),
    ("7 5 ENTER ENTER", core.StartOp("sale", amount=75)),
    ("00 ENTER 9 ENTER ENTER", core.StartOp("sale", amount=9)),
])
def test_idle_shortcuts(script: str, command: core.UiCommand) -> None:
    term = Term()
    assert term.keys(script)[-1] == command


def test_card_at_idle_pays_for_the_sale() -> None:
    term = Term()
    term.feed(core.CardPresented(PAN, "swipe"))
    assert isinstance(term.screen, AmountEntry) and PAN in term.text()
    assert term.keys("2 0 0 ENTER") == []
    assert PAN in term.text()
    assert term.keys("ENTER") == [core.StartOp("sale", amount=200, use_card=True)]


def test_card_sale_cancel_drops_the_card() -> None:
    term = Term()
    term.feed(core.CardPresented(PAN, "swipe"))
    term.keys("5 ENTER")
    assert term.keys("CANCEL") == []  # confirm -> amount: the card is still wanted
    assert isinstance(term.screen, AmountEntry) and term.screen.amount == 5
    assert term.keys("CANCEL") == [core.DropCard()]
    assert isinstance(term.screen, IdleScreen)


def test_chip_at_idle_starts_a_sale_whose_card_step_reads_it() -> None:
    term = Term()
    term.feed(core.ChipSeen(True))
    assert isinstance(term.screen, AmountEntry)
    assert term.keys("1 ENTER ENTER") == [core.StartOp("sale", amount=1)]
    term.feed(core.OpStep("card"))
    term.feed(core.ChipSeen(True))
    assert "Card inserted" in term.text()
    term.feed(core.OpStep("chip_reading"))
    assert "do not remove" in term.text().replace("\n", " ")
    term.feed(core.OpStep("remove_card", cancellable=False))
    assert "Please remove card" in term.text().replace("\n", " ")


def test_the_cardholder_chooses_the_chip_application_or_cancels() -> None:
    term = Term()
    term.keys("1 ENTER ENTER")
    term.feed(core.OpStep("card"))
    term.feed(core.AppChoiceWanted(("UnionPay Debit", "UnionPay Credit")))
    assert "Choose app" in term.text()
    assert "1>UnionPay Debit" in term.text() and "2 UnionPay Cred" in term.text()
    assert term.keys("DOWN ENTER") == [core.SubmitChoice(1)]  # back to the working screen
    term.feed(core.AppChoiceWanted(("UnionPay Debit", "UnionPay Credit")))
    assert term.keys("2") == [core.SubmitChoice(1)]
    term.feed(core.AppChoiceWanted(("UnionPay Debit", "UnionPay Credit")))
    assert term.keys("9") == []  # no such line: nothing chosen
    assert term.keys("CANCEL") == [core.CancelOp()]


def test_card_refused_at_idle_is_shown_in_words() -> None:
    term = Term()
    term.feed(core.CardRefused("card_expired"))
    assert "Card expired" in term.text()
    term.keys("ENTER")
    assert isinstance(term.screen, IdleScreen)


# ---------------------------------------------------------------- CANCEL at every step

CANCEL_CASES = {
    # flow: (steps, after CANCEL at step i: the screen type expected)
    "sale": (["MENU", "1", "1 2 3 ENTER", "ENTER"], [IdleScreen, MenuScreen, AmountEntry]),
    "void": (["MENU", "2", "1 2 3 4 5 6 ENTER", PW_OK, "1 2 ENTER", found("000012", "sale"), "ENTER"],
             [IdleScreen, MenuScreen, MenuScreen, MenuScreen, NumberEntry, NumberEntry]),
    "refund": (["MENU", "3", "1 2 3 4 5 6 ENTER", PW_OK, "5 0 ENTER", "1 2 3 4 5 6 7 8 9 0 1 2 ENTER",
                "0 5 1 2 ENTER", "ENTER"],
               [IdleScreen, MenuScreen, MenuScreen, MenuScreen, AmountEntry, NumberEntry, NumberEntry]),
    "settle": (["MENU", "6", "1", "1 2 3 4 5 6 ENTER", PW_OK, REVIEW_TICK, REVIEWED, "ENTER"],
               [IdleScreen, MenuScreen, MenuScreen, MenuScreen, MenuScreen, MenuScreen, MenuScreen]),
}


@pytest.mark.parametrize("flow", sorted(CANCEL_CASES))
def test_cancel_at_every_step_goes_back_one_level(flow: str) -> None:
    steps, expected = CANCEL_CASES[flow]
    for depth, want in enumerate(expected, start=1):
        term = Term()
        term.run(*steps[:depth])
        before = term.screen
        got = term.keys("CANCEL")
        assert isinstance(term.screen, want), (flow, depth, before, term.screen)
        # nothing that changes anything: the settlement review only reads
        assert not any(isinstance(c, core.StartOp) and c.op != "settle_review"
                       for c in term.commands), (flow, depth)
        assert got == []
    # the full script does start the op, and CANCEL under it asks the app to cancel
    term = Term()
    started = term.run(*steps)
    assert isinstance(started[-1], core.StartOp)
    assert term.keys("CANCEL") == [core.CancelOp()]
    assert "Cancelling..." in term.text()
    assert term.keys("CANCEL") == []  # once is enough


def test_cancel_keeps_what_was_typed_one_level_down() -> None:
    term = Term()
    term.run("MENU 3 1 2 3 4 5 6 ENTER", PW_OK, "5 0 ENTER 1 2 3 4 5 6 7 8 9 0 1 2 ENTER 0 5 1 2 ENTER")
    assert isinstance(term.screen, ConfirmScreen)
    term.keys("CANCEL")
    assert isinstance(term.screen, NumberEntry) and term.screen.digits == "0512"
    term.keys("CANCEL")
    assert isinstance(term.screen, NumberEntry) and term.screen.digits == "123456789012"
    term.keys("CANCEL")
    assert isinstance(term.screen, AmountEntry) and term.screen.amount == 50
    term.keys("CANCEL")
    assert isinstance(term.screen, MenuScreen) and term.screen.selected == 2


def test_cancel_at_pin_cancels_the_operation() -> None:
    term = Term()
    term.keys("F1 1 ENTER ENTER")
    term.feed(core.PinWanted(PAN, 1, bypass_allowed=False))
    term.keys("1 2")
    assert term.keys("CANCEL") == [core.CancelOp()]
    assert isinstance(term.screen, WorkingScreen) and "Cancelling..." in term.text()
    term.feed(outcome("cancelled", message_key="cancelled"))
    assert "Cancelled" in term.text()


def test_settlement_cannot_be_cancelled_once_sent() -> None:
    term = Term()
    term.run("F3 1 2 3 4 5 6 ENTER", PW_OK, REVIEW_TICK, REVIEWED)
    assert term.keys("ENTER") == [core.StartOp("settle", authorised=True)]
    term.feed(core.OpStep("settling", cancellable=False))
    assert term.keys("CANCEL") == []
    assert "Cannot cancel" in term.text()
    term.advance(3)
    term.feed(core.Tick())
    assert "Cannot cancel" not in term.text()
    term.feed(core.OpStep("uploading", done=12, total=40, cancellable=False))
    assert "Uploading 12/40" in term.text()
    term.feed(core.OpStep("printing", done=1, total=2, cancellable=False))
    assert "Printing 1/2" in term.text()
    term.feed(outcome("settled", op="settle", message_key="settled_unbalanced", batch="000002", amount=None,
                      pan_masked=None, auth_code=None, voucher=None))
    shown = term.all_text().replace("\n", " ")
    # unbalanced: the words, then what to do about it (the batch detail for the acquirer)
    assert "Settlement done - unbalanced" in shown and "transaction list" in shown


# ---------------------------------------------------------------- timeouts and wake-ups


def test_idle_timeout_discards_staged_input() -> None:
    term = Term()
    term.feed(core.CardPresented(PAN, "swipe"))
    term.keys("4 2")
    assert term.ui.next_wakeup(term.ctx()) == pytest.approx(term.mono + 60)
    term.advance(59)
    assert term.feed(core.Tick()) == ()
    term.advance(1)
    assert term.feed(core.Tick()) == (core.DropCard(), core.Audit("input", "idle timeout", "discarded"))
    assert isinstance(term.screen, IdleScreen)


def test_results_time_out_but_running_screens_do_not() -> None:
    term = Term()
    term.keys("F4")
    assert term.ui.next_wakeup(term.ctx()) is None  # no step counting yet, no idle deadline
    term.advance(600)
    assert term.feed(core.Tick()) == () and isinstance(term.screen, WorkingScreen)
    term.feed(outcome("failed", op="reprint_last", message_key="reprint_not_found"))
    term.advance(60)
    term.feed(core.Tick())
    assert isinstance(term.screen, IdleScreen)


def test_idle_wakes_once_a_minute_at_most() -> None:
    term = Term()
    wakeups = []
    for _ in range(10):
        wake = term.ui.next_wakeup(term.ctx())
        assert wake is not None and wake > term.mono
        wakeups.append(wake)
        term.advance(wake - term.mono)
        term.feed(core.Tick())
    assert wakeups[0] == pytest.approx(1004.0)  # 12:34:56 -> 12:35:00
    gaps = [b - a for a, b in itertools.pairwise(wakeups)]
    assert all(gap == pytest.approx(60.0) for gap in gaps)
    assert "12:44" in term.text()


def test_working_screen_wakes_once_a_second_while_counting() -> None:
    term = Term()
    term.keys("F4")
    term.feed(core.OpStep("connecting"))
    start = term.mono
    assert term.ui.next_wakeup(term.ctx()) == pytest.approx(start + 1)
    term.advance(0.4)
    assert term.ui.next_wakeup(term.ctx()) == pytest.approx(start + 1)
    term.advance(0.6)
    term.feed(core.Tick())
    assert term.ui.next_wakeup(term.ctx()) == pytest.approx(start + 2)
    term.feed(core.OpStep("printing", 1, 1))
    assert term.ui.next_wakeup(term.ctx()) is None


# ---------------------------------------------------------------- entry rules


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(st.sampled_from([Key.D0, Key.D1, Key.D5, Key.D9, Key.D00, Key.CLEAR, Key.DOT, Key.UP,
                                      Key.F2, Key.MENU]), max_size=25),
       limit=st.integers(min_value=1, max_value=10_000_000))
def test_amount_entry_stays_in_range(keys: list[Key], limit: int) -> None:
    term = Term({"transactions": {"max_amount": limit}})
    term.keys("F1")
    for key in keys:
        term.feed(core.KeyIn(key))
        screen = term.screen
        assert isinstance(screen, AmountEntry)
        assert 0 <= screen.amount <= limit
        assert term.text().splitlines()[2].strip() == f"CNY {core.format_fen(screen.amount)}"


def test_amount_entry_shift_clear_max_and_zero() -> None:
    term = Term({"transactions": {"max_amount": 10_000_000}})
    term.keys("F1")
    shown = []
    for key in ("1", "2", "3"):
        term.keys(key)
        shown.append(term.text().splitlines()[2].strip())
    assert shown == ["CNY 0.01", "CNY 0.12", "CNY 1.23"]
    term.keys("00 DOT")
    assert term.screen.amount == 12300
    term.keys("CLEAR CLEAR CLEAR CLEAR CLEAR CLEAR")
    assert term.screen.amount == 0
    assert term.keys("ENTER") == [] and "Enter an amount" in term.text()
    term.keys("1 0 0 0 0 0 0 0")
    assert term.screen.amount == 10_000_000
    term.keys("1")
    assert term.screen.amount == 10_000_000 and "Max 100000.00" in term.text()
    term.advance(2.5)
    term.feed(core.Tick())
    assert "Max" not in term.text()


@pytest.mark.parametrize(("digits", "ok"), [("0229", True), ("1231", True), ("0230", False), ("1301", False),
                                            ("0000", False), ("0431", False), ("0101", True)])
def test_mmdd_is_a_real_date(digits: str, ok: bool) -> None:
    assert valid_mmdd(digits) is ok


def test_number_entry_lengths() -> None:
    term = Term()
    term.run("MENU 3 1 2 3 4 5 6 ENTER", PW_OK, "1 ENTER 1 2 3 ENTER")
    assert "Need 12 digits" in term.text()
    term.keys("4 5 6 7 8 9 0 1 2 3 4 5")  # the 13th digit and beyond are not taken
    assert term.screen.digits == "123456789012"
    term.keys("ENTER 1 3 0 1 ENTER")
    assert "Not a valid date" in term.text()
    term.keys("CLEAR CLEAR CLEAR CLEAR 0 2 2 9")
    assert term.keys("ENTER ENTER") == [core.StartOp("refund", amount=1, rrn="123456789012", date="0229",
                                                      authorised=True)]


def test_voucher_is_padded_and_required() -> None:
    term = Term()
    term.run("MENU 7 2")
    assert term.keys("ENTER") == [] and "Need 1-6 digits" in term.text()
    assert term.keys("4 2 ENTER") == [core.StartOp("reprint_voucher", voucher="000042")]


def test_password_wrong_then_locked() -> None:
    term = Term()
    term.keys("F2 1 2 3 ENTER")
    assert "6-12 digits" in term.text()
    assert term.keys("4 5 6 ENTER") == [core.CheckPassword("void", "123456")]
    assert "Checking..." in term.text()
    assert term.keys("7 ENTER") == []  # nothing is typed while the check runs
    term.feed(core.PasswordChecked(False))
    assert "Wrong password" in term.text() and "*" not in term.text()
    term.keys("9 9 9 9 9 9 ENTER")
    term.feed(core.PasswordChecked(False, locked_s=299.0))
    assert "Locked - try again in 4:59" in term.text().replace("\n", " ")
    assert term.keys("1 2 3 4 5 6 ENTER") == []
    term.advance(299.5)  # no Tick: the idle timeout would (rightly) have gone back to idle
    assert term.keys("1 2 3 4 5 6 ENTER") == [core.CheckPassword("void", "123456")]


def test_password_lock_shown_at_once() -> None:
    term = Term(password_locked_s=120.0)
    term.keys("F2")
    assert "Locked - try again in 2:00" in term.text().replace("\n", " ")
    assert term.keys("1 2 3 4 5 6 ENTER") == []
    assert isinstance(term.screen, PasswordEntry) and term.out is not None and term.out.sensitive
    term.keys("CANCEL")
    assert isinstance(term.screen, IdleScreen)


def test_no_repr_holds_the_typed_pin_or_password() -> None:
    term = Term()
    seen: list[str] = []
    term.keys("F2 5 8 3 9 2 0 7")
    seen += [repr(term.screen), repr(term.out)]
    term.keys("ENTER")
    seen += [repr(term.screen), repr(term.out), repr(term.commands)]
    term = Term()
    term.keys("F1 1 ENTER ENTER")
    term.feed(core.PinWanted(PAN, 1, bypass_allowed=False))
    term.keys("8 1 7 4 6")
    seen += [repr(term.screen), repr(term.out)]
    term.keys("ENTER")
    seen += [repr(term.screen), repr(term.out), repr(term.commands)]
    for text in seen:
        assert "5839207" not in text and "583920" not in text
        assert "81746" not in text and "8174" not in text


# ---------------------------------------------------------------- results and idle states


@pytest.mark.parametrize(("status", "key", "words"), [
    ("cancelled", "cancelled", "Cancelled"),
    ("reversed", "reversal_sent", "Cancelled - reversal sent"),
    ("reversal_pending", "reversal_pending", "Reversal pending"),
    ("stored", "advice_stored", "Refund stored, not confirmed yet"),
    ("failed", "no_reply", "No reply from host - nothing was charged"),
    ("refused", "original_settled", "Original is settled - use refund"),
    ("declined", "Z9", "Transaction failed (Z9)"),
])
def test_results_say_what_happened(status: str, key: str, words: str) -> None:
    term = Term()
    term.keys("F4")
    term.feed(outcome(status, message_key=key))
    assert words in " ".join(line.strip() for line in term.all_text().splitlines())


def test_host_unreachable_offers_an_echo_test() -> None:
    term = Term()
    term.keys("F4")
    term.feed(outcome("failed", op="reprint_last", message_key="host_unreachable"))
    assert "F1: echo test" in term.all_text()
    assert term.keys("F1") == [core.StartOp("echo")]
    assert isinstance(term.screen, WorkingScreen) and "Echo test" in term.text()


def test_reports_scroll_above_their_print_key() -> None:
    term = Term()
    assert term.keys("MENU 8 2") == [core.StartOp("report_totals")]
    lines = tuple(f"Line {i}" for i in range(1, 8))
    term.feed(core.OpDone(core.OpOutcome("report_totals", "done", "", lines=lines)))
    assert term.text().splitlines()[1:] == ["Line 1", "Line 2", "F1 print"]
    term.keys("DOWN 1 2 DOWN")
    assert term.text().splitlines()[1:] == ["Line 3", "Line 4", "F1 print"]
    term.keys("UP")
    assert term.text().splitlines()[1] == "Line 2"
    term.keys("CANCEL")
    assert isinstance(term.screen, MenuScreen) and term.screen.name == "reports"


def test_balance_shows_the_amount() -> None:
    term = Term()
    assert term.keys("MENU 4 ENTER") == [core.StartOp("balance")]
    term.feed(outcome("approved", op="balance", amount=None, balance=98765, auth_code=None, voucher=None))
    assert "CNY 987.65" in term.all_text()


def test_idle_states_and_their_keys() -> None:
    term = Term(reversals_due=2, advices_due=1, notice="journal_full")
    assert "REV 2 ADV 1" in term.text() and "Storage full" in term.text()
    term = Term(notice="Call 400-123")
    assert "Call 400-123" in term.text()
    term = Term(paper="out")
    assert "Paper out" in term.text()
    assert term.keys("ENTER") == [core.StartOp("print_resume")] and isinstance(term.screen, IdleScreen)
    term = Term(print_confirm_job=7)
    assert "ENTER reprints" in term.text().replace("\n", " ")
    assert term.keys("ENTER") == [core.ConfirmPrint(7, True)]
    assert term.keys("CANCEL") == [core.ConfirmPrint(7, False)]


def test_deregistered_refuses_financial_operations() -> None:
    term = Term(deregistered=True)
    assert "DEREGISTERED" in term.text()
    for script in ("F1", "F2", "F3", "5", "MENU 1", "MENU 3", "MENU 6 1"):
        term = Term(deregistered=True)
        assert term.keys(script) == []
        assert "Terminal deregistered" in term.all_text().replace("\n", " ")
    term = Term(deregistered=True)
    assert term.feed(core.CardPresented(PAN, "swipe")) == (core.DropCard(),)
    assert term.keys("CANCEL") == [] and isinstance(term.screen, IdleScreen)
    assert Term(deregistered=True).keys("F4") == [core.StartOp("reprint_last")]


def test_external_operation_shows_its_source() -> None:
    term = Term()
    term.keys("MENU 1 5")
    term.feed(core.OpStarted("sale", "ecr", 500))
    assert isinstance(term.screen, WorkingScreen)
    assert term.text().splitlines()[0] == "ECR: Sale" and "CNY 5.00" in term.text()
    assert term.keys("CANCEL") == [core.CancelOp()]
    term.feed(outcome("reversed", message_key="reversal_sent"))
    assert "reversal sent" in term.all_text().replace("\n", " ")


# ---------------------------------------------------------------- bad input


def test_unknown_steps_and_statuses_still_read_in_words() -> None:
    term = Term()
    term.keys("F4")
    term.feed(core.OpStep("warp_drive"))
    assert "Please wait..." in term.text()
    term.feed(core.OpDone(core.OpOutcome("mystery_op", "exploded", "")))
    assert term.text().splitlines()[0] == "mystery_op" and "Done" not in term.text()


def stub_screen_modules() -> dict[str, types.ModuleType]:
    """Settings and diagnostics belong to other modules: stand-ins keep this test about ours."""
    settings_mod = types.ModuleType("firmware.ui.settings_screens")
    settings_mod.settings_root = lambda back: ScrollScreen("menu_settings", ("settings",), back)
    diag_mod = types.ModuleType("firmware.ui.diag_screens")
    diag_mod.diag_root = lambda back: ScrollScreen("menu_diag", ("diagnostics",), back)
    return {"firmware.ui.settings_screens": settings_mod, "firmware.ui.diag_screens": diag_mod}


EVENTS = st.one_of(
    st.sampled_from(list(Key)).map(core.KeyIn),
    st.just(core.Tick()),
    st.sampled_from([core.CardPresented(PAN, "swipe"), core.ChipSeen(True), core.CardRefused("bogus_key"),
                     core.OpStep("sending"), core.OpStep("uploading", 3, 9, False),
                     core.PinWanted(PAN, 100, True), PW_OK, core.PasswordChecked(False, 10.0),
                     core.SettingsSaved(False, {"display.language": "bad"}),
                     core.DiagResult("version", True, "v1"), outcome(), outcome("failed", message_key="x"),
                     core.OpStarted("settle", "system")]),
)


@settings(max_examples=60, deadline=None)
@given(events=st.lists(st.tuples(EVENTS, st.floats(0, 90)), max_size=40),
       size=st.sampled_from([(4, 16), (8, 21)]), lang=st.sampled_from(["en", "zh_CN"]))
def test_any_event_sequence_keeps_a_drawable_screen(events, size, lang) -> None:
    term = Term(rows=size[0], cols=size[1], lang=lang)
    with mock.patch.dict(sys.modules, stub_screen_modules()):
        for event, wait in events:
            term.advance(wait)
            term.feed(event)
            frame = term.ui.frame(term.ctx())
            assert len(frame.rows) == size[0]
            assert all(text_cells(row) <= size[1] for row in frame.rows)
            wake = term.ui.next_wakeup(term.ctx())
            assert wake is None or math.isfinite(wake)


@pytest.mark.parametrize(("masked", "cols", "shown"), [
    ("622202******1234", 16, "622202******1234"),  # fits: as masked
    ("622202*********0017", 16, "622202******0017"),  # 19 digits: fewer stars, last 4 kept
    ("622202*********0017", 21, "622202*********0017"),
    ("622202*********0017", 12, "622202**0017"),
    ("622202*********0017", 10, "******0017"),  # too narrow for the first 6: the last 4 win
    ("******1234", 8, "****1234"),
])
def test_one_masked_pan_display_keeps_the_last_4(masked: str, cols: int, shown: str) -> None:
    assert core.pan_text(masked, cols) == shown


def result_on(term: Term) -> None:
    term.keys("F1 5 0 0 ENTER ENTER")
    term.feed(outcome())
    assert isinstance(term.screen, ResultScreen)


def test_a_result_says_enter_continues_and_goes_home_after_the_result_time() -> None:
    term = Term({**SETTINGS, "display": {"language": "en", "idle_timeout_s": 60, "result_timeout_s": 5}})
    result_on(term)
    assert term.text().splitlines()[-1].strip() == "ENTER: continue"
    assert term.ui.next_wakeup(term.ctx()) == term.mono + 5
    term.advance(3)
    term.keys("DOWN")  # reading it: the result time starts again
    term.advance(4.9)
    term.feed(core.Tick())
    assert isinstance(term.screen, ResultScreen)
    term.advance(0.1)
    assert term.feed(core.Tick()) == ()  # nothing was typed: no "discarded" note
    assert isinstance(term.screen, IdleScreen)


def test_the_result_time_defaults_short_of_the_idle_timeout() -> None:
    term = Term()  # no result_timeout_s in these settings: the default
    result_on(term)
    term.advance(15)
    term.feed(core.Tick())
    assert isinstance(term.screen, IdleScreen)


def test_enter_on_a_result_goes_home_at_once() -> None:
    term = Term()
    result_on(term)
    term.keys("ENTER")
    assert isinstance(term.screen, IdleScreen)


def test_a_settlement_that_did_not_settle_is_a_result_too() -> None:
    """Issue 13 A12 for the settlement's own result screen: the ENTER hint on the last row, and
    home after the result time, not after the idle timeout."""
    term = Term({**SETTINGS, "display": {"language": "en", "idle_timeout_s": 60, "result_timeout_s": 5}})
    term.run("F3 1 2 3 4 5 6 ENTER", PW_OK, REVIEW_TICK, REVIEWED)
    term.keys("ENTER")
    term.feed(core.OpStep("settling", cancellable=False))
    term.feed(outcome("failed", op="settle", message_key="settlement_no_reply", amount=None,
                      pan_masked=None, auth_code=None, voucher=None))
    assert term.screen.result
    assert term.text().splitlines()[-1].strip() == "ENTER: continue"
    assert term.ui.next_wakeup(term.ctx()) == term.mono + 5
    term.advance(5)
    term.feed(core.Tick())
    assert isinstance(term.screen, IdleScreen)


def test_a_chip_card_swiped_at_idle_starts_a_sale_that_says_to_insert_it() -> None:
    """Not a message screen (it would stop the card watch, and the insertion it asks for would
    go unseen): the sale's amount entry, saying to insert the card."""
    term = Term()
    term.feed(core.CardRefused("insert_chip"))
    assert isinstance(term.screen, AmountEntry)
    assert "Insert the card" in term.text()
    assert term.keys("1 ENTER ENTER") == [core.StartOp("sale", amount=1)]
