"""Snapshots of every transaction and menu screen in en and zh_CN at 4x16, and the main ones at 8x21
(tests/snapshots/ui/<area>_<screen>_<lang>[_8x21].txt; UPDATE_SNAPSHOTS=1 rewrites them)."""

from __future__ import annotations

import pytest
from test_reports import LIST_RECORDS
from test_ui_txn import PAN, PW_OK, REVIEW_TICK, REVIEWED, Term, found, outcome
from ui_snapshots import assert_snapshot

from firmware.ports import Frame, text_cells
from firmware.printing import reports
from firmware.ui import core

PW = "1 2 3 4 5 6 ENTER"
RRN = "1 2 3 4 5 6 7 8 9 0 1 2 ENTER"
PAN19 = "622202*********0017"  # a 19-digit card, masked: wider than 16 columns


def lines_done(op: str, totals: dict | None = None):
    """The app's answer to a report op: the lines firmware.printing.reports draws for this
    language and width (a 12.34 sale and its void, unless totals say otherwise)."""
    def answer(lang: str, cols: int) -> core.OpDone:
        if op == "report_list":
            lines = reports.transaction_lines(LIST_RECORDS[:2] if totals is None else [], lang, cols)
        else:
            lines = reports.subtotal_lines(SALE_AND_VOID if totals is None else totals, lang, cols)
        return core.OpDone(core.OpOutcome(op, "done", "", lines=tuple(lines)))
    return answer


SALE_AND_VOID = {("domestic", "sale"): (1, 1234), ("domestic", "void"): (1, 1234)}


# name -> (context overrides, the steps from idle)
SCREENS: dict[str, tuple[dict, list]] = {
    "idle_home": ({}, []),
    "idle_alerts": ({"reversals_due": 1, "advices_due": 2, "notice": "settlement_interrupted"}, []),
    "idle_key_check_failed": ({"notice": "key_check_failed"}, []),
    "idle_paper_out": ({"paper": "out"}, []),
    "idle_print_confirm": ({"print_confirm_job": 3}, []),
    "idle_deregistered": ({"deregistered": True, "link_up": False}, []),
    "idle_card_refused": ({}, [core.CardRefused("card_unreadable")]),
    "menu_main": ({}, ["MENU"]),
    "menu_main_end": ({}, ["MENU UP"]),
    "menu_preauth": ({}, ["MENU 5 DOWN"]),
    "menu_settlement": ({}, ["MENU 6"]),
    "menu_reprint": ({}, ["MENU 7"]),
    "menu_reports": ({}, ["MENU 8"]),
    "menu_signon": ({}, ["MENU 0 3"]),
    "result_signon_key_check": ({}, ["MENU 0 3", core.OpDone(core.OpOutcome(
        "sign_on", "failed", "sign_on_failed", detail="key_check_failed"))]),
    "menu_manage": ({}, ["MENU 0"]),
    "menu_language_saving": ({}, ["MENU 0 5"]),
    "menu_about_reading": ({}, ["MENU 0 6"]),
    "menu_disabled": ({"settings": {"transactions": {"enabled": ["sale"]}}}, ["MENU 3"]),
    "entry_amount": ({}, ["F1 1 2 3 4"]),
    "entry_amount_no_dot": ({}, ["F1 1 2 DOT"]),
    "entry_amount_card": ({}, [core.CardPresented(PAN, "swipe"), "5 0 0"]),
    "entry_amount_max": ({}, ["F1 1 0 0 0 0 0 0 0 1"]),
    "entry_voucher": ({}, ["MENU 7 2 4 2"]),
    "entry_rrn": ({}, ["MENU 3", PW, PW_OK, "5 0 ENTER 1 2 3"]),
    "entry_date_invalid": ({}, ["MENU 3", PW, PW_OK, "5 0 ENTER", RRN, "1 3 3 2 ENTER"]),
    "entry_password": ({}, ["F2 1 2 3"]),
    "entry_password_checking": ({}, ["F2 " + PW]),
    "entry_password_wrong": ({}, ["F2 " + PW, core.PasswordChecked(False)]),
    "entry_password_locked": ({}, ["F2 " + PW, core.PasswordChecked(False, 299.0)]),
    "entry_pin": ({}, ["F1 1 2 3 4 ENTER ENTER", core.PinWanted(PAN, 1234, False), "1 2 3 4"]),
    "entry_pin_wrong": ({}, ["F1 1 2 3 4 ENTER ENTER", core.PinWanted(PAN, 1234, False, 2), "1 2"]),
    "entry_pin_last_try": ({}, ["F1 1 2 3 4 ENTER ENTER", core.PinWanted(PAN, 1234, False, 1)]),
    "entry_pin_short": ({}, ["F1 1 ENTER ENTER", core.PinWanted(PAN, 1, True), "1 2 ENTER"]),
    "txn_confirm_sale": ({}, ["F1 1 2 3 4 ENTER"]),
    "txn_confirm_void": ({}, ["F2 " + PW, PW_OK, "1 2 3 ENTER", found("000123", "sale")]),
    "txn_confirm_completion": ({}, ["MENU 5 2 4 5 ENTER", found("000045", "preauth"), "8 0 0 0 ENTER"]),
    "txn_original_not_found": ({}, ["F2 " + PW, PW_OK, "9 ENTER",
                                    core.OriginalFound("000009", False, "original_not_found")]),
    "txn_confirm_refund": ({}, ["MENU 3", PW, PW_OK, "5 0 ENTER", RRN, "0 5 1 2 ENTER"]),
    "txn_confirm_settle": ({}, ["F3 " + PW, PW_OK, REVIEW_TICK, REVIEWED]),
    "txn_confirm_balance": ({}, ["MENU 4"]),
    "txn_working_card": ({}, ["F1 1 2 3 4 ENTER ENTER", core.OpStep("card")]),
    "txn_working_card_chip_swiped": ({}, ["F1 1 2 3 4 ENTER ENTER", core.OpStep("card"),
                                          core.CardRefused("insert_chip")]),
    "txn_working_card_unreadable": ({}, ["F1 1 2 3 4 ENTER ENTER", core.OpStep("card"),
                                         core.CardRefused("card_unreadable")]),
    "txn_working_connecting": ({}, ["F1 1 2 3 4 ENTER ENTER", core.OpStep("connecting"), 3.0]),
    "txn_working_reversing": ({}, ["F1 1 ENTER ENTER", core.OpStep("reversing")]),
    "txn_working_uploading": ({}, ["F3 " + PW, PW_OK, REVIEW_TICK, REVIEWED, "ENTER",
                                   core.OpStep("uploading", 12, 40, False)]),
    "txn_working_printing": ({}, ["F4", core.OpStep("printing", 1, 2)]),
    "txn_working_signing_on": ({}, ["MENU 0 3", core.OpStep("signing_on")]),
    "txn_working_cancelling": ({}, ["F1 1 ENTER ENTER", core.OpStep("sending"), "CANCEL"]),
    "txn_working_cannot_cancel": ({}, ["F3 " + PW, PW_OK, REVIEW_TICK, REVIEWED, "ENTER",
                                       core.OpStep("settling", None, None, False), "CANCEL"]),
    "txn_working_ecr": ({}, [core.OpStarted("sale", "ecr", 5000)]),
    "result_approved": ({}, ["F4", outcome()]),
    "result_approved_paper_out": ({"paper": "out"}, ["F4", outcome()]),
    "result_paper_still_out": ({"paper": "out"}, ["ENTER", core.OpDone(core.OpOutcome(
        "print_resume", "refused", "paper_still_out"))]),
    "pan19_entry_amount_card": ({}, [core.CardPresented(PAN19, "swipe"), "5 0 0"]),
    "pan19_entry_pin": ({}, ["F1 1 2 3 4 ENTER ENTER", core.PinWanted(PAN19, 1234, False), "1 2"]),
    "pan19_entry_pin_wrong": ({}, ["F1 1 2 3 4 ENTER ENTER", core.PinWanted(PAN19, 1234, False, 2)]),
    "pan19_txn_working": ({}, [core.OpStarted("sale", "ecr", 5000), core.CardPresented(PAN19, "swipe"),
                               core.OpStep("sending")]),
    "pan19_result_approved": ({}, ["F4", outcome(pan_masked=PAN19), "DOWN DOWN"]),
    "result_declined": ({}, ["F4", outcome("declined", message_key="51", response_code="51")]),
    "result_cancelled": ({}, ["F4", outcome("cancelled", message_key="cancelled")]),
    "result_reversed": ({}, ["F4", outcome("reversed", message_key="reversal_sent")]),
    "result_reversal_pending": ({}, ["F4", outcome("reversal_pending", message_key="reversal_pending")]),
    "result_stored": ({}, ["F4", outcome("stored", op="refund", message_key="advice_stored")]),
    "result_unreachable": ({}, ["F4", outcome("failed", message_key="host_unreachable", amount=None)]),
    "result_refused": ({}, [core.OpStarted("void", "ecr", None),
                            outcome("refused", op="void", message_key="original_already_voided")]),
    # a keypad flow refused: its words, then ENTER goes back to the entry (issue 13 A7)
    "refused_back_reprint_voucher": ({}, ["MENU 7 2 4 2 ENTER", core.OpDone(core.OpOutcome(
        "reprint_trace", "refused", "reprint_not_found"))]),
    "refused_back_reprint_voucher_enter": ({}, ["MENU 7 2 4 2 ENTER", core.OpDone(core.OpOutcome(
        "reprint_trace", "refused", "reprint_not_found")), "ENTER"]),
    "refused_back_original_not_found": ({}, ["MENU 5 2 9 9 ENTER", core.OriginalFound(
        "000099", False, "original_not_found")]),
    "report_loading": ({}, ["MENU 8 2"]),
    "report_list": ({}, ["MENU 8 1", lines_done("report_list")]),
    "report_subtotals": ({}, ["MENU 6 2", lines_done("subtotals")]),
    "report_empty": ({}, ["MENU 8 1", lines_done("report_list", {})]),
    "report_printing": ({}, ["MENU 8 1", lines_done("report_list"), "F1"]),
    "report_sent": ({}, ["MENU 8 1", lines_done("report_list"), "F1",
                         core.OpDone(core.OpOutcome("print_txn_list", "done", "report_queued"))]),
    "report_not_printed": ({}, ["MENU 8 1", lines_done("report_list"), "F1",
                                core.OpDone(core.OpOutcome("print_txn_list", "failed", "busy"))]),
    "report_back_in_menu": ({}, ["MENU 8 1", lines_done("report_list"), "ENTER"]),
    "result_settled": ({}, ["F4", outcome("settled", op="settle", message_key="settled_balanced",
                                          batch="000002", amount=None, pan_masked=None, voucher=None)]),
    "result_balance": ({}, ["F4", outcome("approved", op="balance", balance=98765, amount=None,
                                          auth_code=None, voucher=None, rrn=None)]),
    "scroll_report": ({}, ["MENU 8 2", lines_done("report_totals")]),
    "scroll_report_down": ({}, ["MENU 8 2", lines_done("report_totals"), "DOWN DOWN"]),
    "scroll_about": ({}, ["MENU 0 6", core.DiagResult("version", True, "ok",
                                                            lines=("Firmware 0.4.0", "posio C ext 1.2",
                                                                   "Board devboard"))]),
}
BIG = ["idle_home", "idle_alerts", "idle_key_check_failed", "menu_main", "entry_amount", "entry_pin",
       "entry_pin_wrong", "result_approved"]


def drive(name: str, lang: str, rows: int, cols: int) -> Frame:
    context, steps = SCREENS[name]
    context = dict(context)
    term = Term(context.pop("settings", None), rows=rows, cols=cols, lang=lang, **context)
    for step in steps:
        if callable(step):
            step = step(lang, cols)
        if isinstance(step, float):
            term.advance(step)
            term.feed(core.Tick())
        else:
            term.run(step)
    return term.ui.frame(term.ctx())


CASES: list[tuple[str, str, int, int]] = [(name, lang, 4, 16) for name in SCREENS for lang in ("en", "zh_CN")]
CASES += [(name, lang, 8, 21) for name in BIG for lang in ("en", "zh_CN")]


@pytest.mark.parametrize(("name", "lang", "rows", "cols"), CASES,
                         ids=[f"{n}_{lang}_{r}x{c}" for n, lang, r, c in CASES])
def test_snapshot(name: str, lang: str, rows: int, cols: int) -> None:
    frame = drive(name, lang, rows, cols)
    assert len(frame.rows) == rows and all(text_cells(row) <= cols for row in frame.rows)
    suffix = "" if (rows, cols) == (4, 16) else f"_{rows}x{cols}"
    assert_snapshot(f"{name}_{lang}{suffix}", frame, cols)

