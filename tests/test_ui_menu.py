"""The menu tree: every path from idle to its exact command and on to its final screen, moving
and scrolling, disabled types, language switch, About, and the docstring's table kept true."""

from __future__ import annotations

import sys
import types

import pytest
from test_ui_txn import PAN, PW_OK, REVIEW_TICK, REVIEWED, SETTINGS, TYPES, Term, found, outcome

from firmware.ui import core, machine
from firmware.ui.entry import PasswordEntry
from firmware.ui.idle import IdleScreen
from firmware.ui.menu import MENUS, LanguageSwitch, MenuScreen, menu_paths
from firmware.ui.report_screens import ReportLoad, ReportScreen
from firmware.ui.results import ResultScreen
from firmware.ui.scroll import ScrollScreen
from firmware.ui.txn import WorkingScreen

PW = "1 2 3 4 5 6 ENTER"
S = core.StartOp

# opens -> (the script from idle, the commands it must give, in order)
PATHS: dict[str, tuple[list, list]] = {
    "sale": (["MENU 1 1 2 3 4 ENTER ENTER"], [S("sale", amount=1234)]),
    "void": (["MENU 2", PW, PW_OK, "1 2 3 ENTER", found("000123", "sale"), "ENTER"],
             [core.CheckPassword("void", "123456"), core.LookupOriginal("void", "000123"),
              S("void", voucher="000123", authorised=True)]),
    "refund": (["MENU 3", PW, PW_OK, "5 0 0 ENTER 1 2 3 4 5 6 7 8 9 0 1 2 ENTER 0 5 1 2 ENTER ENTER"],
               [core.CheckPassword("refund", "123456"),
                S("refund", amount=500, rrn="123456789012", date="0512", authorised=True)]),
    "balance": (["MENU 4 ENTER"], [S("balance")]),
    "preauth": (["MENU 5 1 9 9 ENTER ENTER"], [S("preauth", amount=99)]),
    "completion": (["MENU 5 2 4 5 ENTER", found("000045", "preauth"), "1 0 0 ENTER ENTER"],
                   [core.LookupOriginal("completion", "000045"),
                    S("completion", voucher="000045", amount=100)]),
    "preauth_void": (["MENU 5 3", PW, PW_OK, "7 ENTER", found("000007", "preauth"), "ENTER"],
                     [core.CheckPassword("void", "123456"), core.LookupOriginal("preauth_void", "000007"),
                      S("preauth_void", voucher="000007", authorised=True)]),
    "completion_void": (["MENU 5 4", PW, PW_OK, "8 ENTER", found("000008", "completion"), "ENTER"],
                        [core.CheckPassword("void", "123456"),
                         core.LookupOriginal("completion_void", "000008"),
                         S("completion_void", voucher="000008", authorised=True)]),
    "settle": (["MENU 6 1", PW, PW_OK, REVIEW_TICK, REVIEWED, "ENTER"],
               [core.CheckPassword("settlement", "123456"), S("settle_review"),
                S("settle", authorised=True)]),

    "subtotals": (["MENU 6 2"], [S("subtotals")]),
    "reprint_settlement": (["MENU 6 3"], [S("reprint_settlement")]),
    "reprint_last": (["MENU 7 1"], [S("reprint_last")]),
    "reprint_voucher": (["MENU 7 2 1 2 ENTER"], [S("reprint_voucher", voucher="000012")]),
    "report_list": (["MENU 8 1"], [S("report_list")]),
    "report_totals": (["MENU 8 2"], [S("report_totals")]),
    "sign_on": (["MENU 0 3"], [S("sign_on")]),
    "sign_off": (["MENU 0 4"], [S("sign_off")]),
}
REPORTS = {"subtotals", "report_list", "report_totals"}


def test_every_leaf_of_the_tree_has_a_scripted_path() -> None:
    leaves = {item.opens for _, item in menu_paths()}
    # held orders, deregistration, operators and ECR tills open their own screens
    # (tests/test_ui_held.py, test_ui_dereg.py, test_operators.py, test_ecr_auth_pairing.py)
    assert leaves == set(PATHS) | {"settings", "diagnostics", "language", "about", "held_park",
                                   "held_list", "deregister", "operators", "sign_out", "tills"}


@pytest.mark.parametrize("op", sorted(PATHS))
def test_menu_path_to_command_and_result(op: str) -> None:
    script, expected = PATHS[op]
    term = Term()
    assert term.run(*script) == expected
    if op in REPORTS:  # a reading: the report, then ENTER back to its menu (tests/test_ui_reports.py)
        assert isinstance(term.screen, ReportLoad)
        term.feed(core.OpDone(core.OpOutcome(op, "done", "", lines=("Sale x3   36.00",))))
        assert isinstance(term.screen, ReportScreen) and "Sale x3   36.00" in term.text()
        term.keys("ENTER")
        assert isinstance(term.screen, MenuScreen)
        return
    assert isinstance(term.screen, WorkingScreen)
    term.feed(core.OpStep("connecting"))
    term.advance(2)
    term.feed(core.Tick())
    assert "Connecting... 2s" in term.text()
    term.feed(outcome(op=op))
    assert isinstance(term.screen, ResultScreen)
    term.keys("ENTER")
    assert isinstance(term.screen, IdleScreen)


@pytest.fixture
def other_screens(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Stand-ins for the settings and diagnostics modules other helpers write."""
    opened: dict[str, list] = {"settings": [], "diag": []}

    def root(kind: str):
        def make(back: core.Screen) -> core.Screen:
            opened[kind].append(back)
            return ScrollScreen(f"menu_{kind}", (kind,), back)
        return make

    settings_mod = types.ModuleType("firmware.ui.settings_screens")
    settings_mod.settings_root = root("settings")
    diag_mod = types.ModuleType("firmware.ui.diag_screens")
    diag_mod.diag_root = root("diag")
    monkeypatch.setitem(sys.modules, "firmware.ui.settings_screens", settings_mod)
    monkeypatch.setitem(sys.modules, "firmware.ui.diag_screens", diag_mod)
    return opened


def test_settings_needs_the_password(other_screens: dict[str, list]) -> None:
    term = Term()
    assert term.keys("MENU 0 1 " + PW) == [core.CheckPassword("settings", "123456")]
    assert other_screens["settings"] == []  # nothing opened before the password was right
    term.feed(core.PasswordChecked(False))
    assert isinstance(term.screen, PasswordEntry) and "Wrong password" in term.text()
    term.keys(PW)
    term.feed(PW_OK)
    assert len(other_screens["settings"]) == 1 and isinstance(term.screen, ScrollScreen)
    term.keys("CANCEL")
    assert isinstance(term.screen, MenuScreen) and term.screen.name == "manage"
    assert term.screen.selected == 0


def test_diagnostics_opens_without_a_password(other_screens: dict[str, list]) -> None:
    term = Term()
    assert term.keys("MENU 0 2") == []
    assert len(other_screens["diag"]) == 1 and isinstance(term.screen, ScrollScreen)
    term.keys("CANCEL")
    assert isinstance(term.screen, MenuScreen) and term.screen.name == "manage"
    assert term.screen.selected == 1


def test_language_switch_saves_and_waits() -> None:
    term = Term()
    commands = term.keys("MENU 0 5")
    assert len(commands) == 1 and isinstance(commands[0], core.SaveSettings)
    assert commands[0].reason == "language switch"
    assert commands[0].data["display"]["language"] == "zh_CN"
    assert commands[0].data["transactions"] == SETTINGS["transactions"]
    assert SETTINGS["display"]["language"] == "en"  # the live settings were not touched
    assert isinstance(term.screen, LanguageSwitch) and "Saving..." in term.text()
    term.context["lang"] = "zh_CN"
    term.feed(core.SettingsSaved(True))
    assert isinstance(term.screen, MenuScreen) and "语言" in term.text()
    commands = term.keys("ENTER")
    assert commands[0].data["display"]["language"] == "en"
    term.feed(core.SettingsSaved(False, {"display.language": "the language must be en or zh_CN"}))
    shown = term.all_text()
    assert "语言未保存" in shown and "display.language" in shown
    term.keys("ENTER")
    assert isinstance(term.screen, MenuScreen)


def test_about_shows_the_version_lines() -> None:
    term = Term()
    assert term.keys("MENU 0 6") == [core.RunDiag("version")]
    term.feed(core.DiagResult("echo", True, "ignored"))
    assert "Reading..." in term.text()
    term.feed(core.DiagResult("version", True, "ok", lines=("firmware 0.4.0", "posio C 1.2")))
    assert isinstance(term.screen, ScrollScreen)
    assert term.text().splitlines()[1:3] == ["firmware 0.4.0", "posio C 1.2"]
    term.keys("ENTER")
    assert isinstance(term.screen, MenuScreen)


def test_menu_moves_scrolls_and_wraps() -> None:
    term = Term()
    term.keys("MENU")
    rows = term.ui.frame(term.ctx())
    assert rows.rows == ("Menu        1/10", "1 Sale", "2 Void", "3 Refund") and rows.inverse_row == 1
    term.keys("DOWN DOWN DOWN")
    frame = term.ui.frame(term.ctx())
    assert frame.rows[1:] == ("2 Void", "3 Refund", "4 Balance") and frame.inverse_row == 3
    term.keys("UP UP")
    frame = term.ui.frame(term.ctx())
    assert frame.rows[1:] == ("2 Void", "3 Refund", "4 Balance") and frame.inverse_row == 1
    term.keys("UP UP")
    frame = term.ui.frame(term.ctx())
    assert frame.rows[1:] == ("8 Reports      >", "9 Held orders  >", "0 Manage       >")
    assert frame.inverse_row == 3 and frame.rows[0].endswith("10/10")
    term.keys("CANCEL")
    assert isinstance(term.screen, IdleScreen)


def test_submenu_cancel_goes_back_to_its_item() -> None:
    term = Term()
    term.keys("MENU 7")
    assert term.text().splitlines()[0].startswith("Reprint")
    term.keys("9 F1 DOT")  # keys with no meaning in this menu do nothing
    assert term.text().splitlines()[0].startswith("Reprint")
    term.keys("CANCEL")
    assert isinstance(term.screen, MenuScreen) and term.screen.selected == 6
    assert "7 Reprint" in term.text() and ">" in term.text()


def test_disabled_types_are_shown_but_refused() -> None:
    term = Term({"transactions": {"enabled": [t for t in TYPES if t != "refund"]}})
    term.keys("MENU")
    assert "3 Refund" in term.text()
    assert term.keys("3") == []
    assert "Transaction type disabled" in term.all_text()
    term.keys("CANCEL")
    assert isinstance(term.screen, MenuScreen) and term.screen.selected == 2
    assert Term({"transactions": {"enabled": []}}).keys("F1 1") == []
    term = Term({"transactions": {"enabled": []}})
    assert term.feed(core.CardPresented(PAN, "swipe")) == (core.DropCard(),)


def test_machine_docstring_draws_the_menu_table() -> None:
    doc = machine.__doc__ or ""
    for row in machine.menu_tree_text():
        assert f"\n    {row.rstrip()}\n" in doc, row
    assert len(machine.menu_tree_text()) == sum(len(items) for _, items in MENUS.values())
