"""Issue 13 A7: every on-screen report (Reports > Transactions, Reports > Totals, Settlement >
Subtotals) says and takes F1 to print, and ENTER/CANCEL go back to its menu; every not-found
or refusal screen of a flow goes back one level with its words, never to idle (where the next
digit would start a sale)."""

from __future__ import annotations

import pytest
from test_ui_txn import PW_OK, Term, found

from firmware.ui import core
from firmware.ui.entry import AmountEntry, NumberEntry
from firmware.ui.idle import IdleScreen
from firmware.ui.menu import MenuScreen
from firmware.ui.report_screens import ReportLoad, ReportScreen
from firmware.ui.scroll import ScrollScreen

PW = "1 2 3 4 5 6 ENTER"
S = core.StartOp

# report op -> (keys from idle, the menu it belongs to, the op that prints it)
REPORTS = {
    "report_list": ("MENU 8 1", "reports", "print_txn_list"),
    "report_totals": ("MENU 8 2", "reports", "print_subtotals"),
    "subtotals": ("MENU 6 2", "settlement", "print_subtotals"),
}
LINES = ("SALES          1", "           12.34", "VOIDS          1", "           12.34",
         "NET         0.00")


def open_report(op: str, lang: str = "en", lines: tuple[str, ...] = LINES) -> Term:
    keys, _, _ = REPORTS[op]
    term = Term(lang=lang)
    assert term.keys(keys) == [S(op)]
    assert isinstance(term.screen, ReportLoad)
    term.feed(core.OpDone(core.OpOutcome(op, "done", "", lines=lines)))
    assert isinstance(term.screen, ReportScreen)
    return term


def assert_back_in_menu(term: Term, menu: str) -> None:
    """Back in the report's menu: a digit now opens a menu item, it does not start a sale."""
    assert isinstance(term.screen, MenuScreen) and term.screen.name == menu
    assert not isinstance(term.screen, IdleScreen)


@pytest.mark.parametrize("op", sorted(REPORTS))
@pytest.mark.parametrize("key", ["ENTER", "CANCEL"])
def test_enter_or_cancel_on_a_report_goes_back_to_its_menu(op: str, key: str) -> None:
    term = open_report(op)
    term.keys(key)
    assert_back_in_menu(term, REPORTS[op][1])


@pytest.mark.parametrize("op", sorted(REPORTS))
@pytest.mark.parametrize(("lang", "hint", "printing", "sent", "failed"), [
    ("en", "F1 print", "Printing...", "Sent to printer", "Not printed"),
    ("zh_CN", "F1 打印", "正在打印...", "已送打印机", "未能打印"),
])
def test_a_report_says_f1_prints_it_and_f1_does(op: str, lang: str, hint: str, printing: str,
                                               sent: str, failed: str) -> None:
    term = open_report(op, lang)
    assert term.text().splitlines()[-1] == hint
    assert term.keys("F1") == [S(REPORTS[op][2])]
    assert term.text().splitlines()[-1] == printing
    assert term.keys("F1") == []  # one print per press, not a second while the first is queued
    term.feed(core.OpDone(core.OpOutcome(REPORTS[op][2], "done", "report_queued")))
    assert term.text().splitlines()[-1] == sent
    assert isinstance(term.screen, ReportScreen)  # still reading the report
    assert term.keys("F1") == [S(REPORTS[op][2])]  # another copy
    term.feed(core.OpDone(core.OpOutcome(REPORTS[op][2], "failed", "service_mode")))
    assert term.text().splitlines()[-1] == failed
    term.keys("ENTER")
    assert_back_in_menu(term, REPORTS[op][1])


@pytest.mark.parametrize("op", sorted(REPORTS))
@pytest.mark.parametrize(("lang", "empty"), [("en", "NO TRANSACTIONS"), ("zh_CN", "无交易")])
def test_an_empty_report_says_so_prints_and_goes_back(op: str, lang: str, empty: str) -> None:
    term = open_report(op, lang, lines=(empty,))
    assert term.text().splitlines()[1] == empty
    assert term.keys("F1") == [S(REPORTS[op][2])]
    term.keys("CANCEL")
    assert_back_in_menu(term, REPORTS[op][1])


@pytest.mark.parametrize("op", sorted(REPORTS))
def test_a_report_that_cannot_be_read_says_why_and_goes_back(op: str) -> None:
    keys, menu, _ = REPORTS[op]
    term = Term()
    term.keys(keys)
    term.feed(core.OpDone(core.OpOutcome(op, "failed", "service_mode")))
    assert isinstance(term.screen, ScrollScreen) and "Service mode" in term.all_text()
    term.keys("ENTER")
    assert_back_in_menu(term, menu)


def test_cancel_while_a_report_loads_goes_back_to_its_menu() -> None:
    term = Term()
    term.keys("MENU 8 1")
    term.keys("CANCEL")
    assert_back_in_menu(term, "reports")
    term.feed(core.OpDone(core.OpOutcome("report_list", "done", "", lines=LINES)))
    assert_back_in_menu(term, "reports")  # a late answer to a reading nobody waits for


# ---- not found / refused: back one level, with words, in every flow -----------------------

NOT_FOUND = core.OriginalFound("000099", False, "original_not_found")

# flow -> (steps from idle up to the refusal, what the words say, the screen ENTER returns to)
REFUSALS: dict[str, tuple[list, str, type]] = {
    "void": (["MENU 2", PW, PW_OK, "9 9 ENTER", NOT_FOUND], "Original transaction not found",
             NumberEntry),
    "preauth_void": (["MENU 5 3", PW, PW_OK, "9 9 ENTER", NOT_FOUND],
                     "Original transaction not found", NumberEntry),
    "completion_void": (["MENU 5 4", PW, PW_OK, "9 9 ENTER", NOT_FOUND],
                        "Original transaction not found", NumberEntry),
    "completion": (["MENU 5 2 9 9 ENTER", NOT_FOUND], "Original transaction not found", NumberEntry),
    "reprint_trace": (["MENU 7 2 9 9 ENTER",
                       core.OpDone(core.OpOutcome("reprint_trace", "refused", "reprint_not_found"))],
                      "No receipt to reprint", NumberEntry),
    "reprint_last": (["MENU 7 1",
                      core.OpDone(core.OpOutcome("reprint_last", "refused", "reprint_not_found"))],
                     "No receipt to reprint", MenuScreen),
    "reprint_settlement": (["MENU 6 3",
                            core.OpDone(core.OpOutcome("reprint_settlement", "refused",
                                                       "no_settlement_yet"))],
                           "No settlement", MenuScreen),
    "refund": (["MENU 3", PW, PW_OK, "5 0 0 ENTER", "1 2 3 4 5 6 7 8 9 0 1 2 ENTER",
                "0 5 1 2 ENTER", "ENTER",
                core.OpDone(core.OpOutcome("refund", "refused", "original_not_found"))],
               "Original transaction not found", NumberEntry),
    "sale": (["MENU 1 1 2 3 ENTER", "ENTER",
              core.OpDone(core.OpOutcome("sale", "refused", "amount_too_large"))],
             "", AmountEntry),
}


@pytest.mark.parametrize("flow", sorted(REFUSALS))
@pytest.mark.parametrize("key", ["ENTER", "CANCEL"])
def test_a_not_found_or_refused_flow_goes_back_one_level_with_words(flow: str, key: str) -> None:
    steps, words, back = REFUSALS[flow]
    term = Term()
    term.run(*steps)
    assert isinstance(term.screen, ScrollScreen)
    if words:
        assert words in term.all_text()
    term.keys(key)
    assert isinstance(term.screen, back) and not isinstance(term.screen, IdleScreen)


def test_an_ecr_refusal_still_shows_its_result_and_goes_to_idle() -> None:
    """Nothing was typed on the keypad for an ECR operation: its result leads to idle."""
    term = Term()
    term.feed(core.OpStarted("void", "ecr", None))
    term.feed(core.OpDone(core.OpOutcome("void", "refused", "original_not_found")))
    assert "Original transaction not found" in term.all_text()
    term.keys("ENTER")
    assert isinstance(term.screen, IdleScreen)


def test_the_anomaly_void_not_found_reloads_the_review() -> None:
    """The review's own not-found (ActResult) goes back to the review it came from."""
    term = Term()
    term.run("MENU 6 1", PW, PW_OK, core.Tick())
    review = core.OpOutcome("settle_review", "done", "review_ready", lines=("Batch 1",),
                            items=({"kind": "duplicate", "record_id": 2, "voucher": "000002",
                                    "pan": "6222", "amount": 1, "actions": ["reprint"]},))
    term.feed(core.OpDone(review))
    term.keys("F2 1 1")
    term.feed(core.Tick())
    term.feed(core.OpDone(core.OpOutcome("anomaly_act", "refused", "anomaly_not_found")))
    assert "Transaction not found" in term.all_text()
    assert term.keys("ENTER") == []
    term.feed(core.Tick())
    assert term.commands[-1] == S("settle_review")  # the review again, not idle


def test_found_originals_still_go_on() -> None:
    term = Term()
    term.run("MENU 2", PW, PW_OK, "9 9 ENTER", found("000099", "sale"))
    assert "ENTER" in term.text() or "confirm" in term.text().lower()


@pytest.mark.parametrize("key", ["ENTER", "CANCEL"])
@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_an_empty_pick_list_says_so_and_enter_or_cancel_goes_back(key: str, lang: str) -> None:
    from firmware.ui.held_screens import HeldList

    term = Term(lang=lang)
    term.keys("MENU 9")
    menu = term.screen
    term.ui.screen = HeldList(menu, ())
    assert ("No held orders" if lang == "en" else "没有挂单") in term.text()
    term.keys(key)
    assert term.screen is menu
