"""Operators (issue 17), without a terminal: the cashier PIN rules, the operator table in the
settings (validated without echoing a hash, migrated into old files, kept by the settings store
across a restore and never overwritten with the supervisor's hash), and the screens through the
real screen machine with a hand-built context: sign-in, the supervisor's management, sign-out,
the idle screen naming the operator, the supervisor refused a payment; snapshots en + zh_CN.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest
from ui_snapshots import assert_snapshot

from firmware.ports import Key
from firmware.settings.model import (
    SettingsInvalid,
    factory,
    hash_password,
    migrate,
    operator_pin_problem,
    validate,
    verify_password,
)
from firmware.settings.store import SettingsStore
from firmware.ui import core
from firmware.ui.entry import PasswordEntry
from firmware.ui.idle import IdleScreen
from firmware.ui.machine import build_ui, home_for
from firmware.ui.operator_screens import (
    NewPinEntry,
    OperatorPinEntry,
    OperatorsMenu,
    OperatorWait,
    SignInScreen,
)
from firmware.ui.scroll import ScrollScreen

HASH = "scrypt$16384$8$1$" + "ab" * 16 + "$" + "cd" * 32  # a well-formed stand-in (tests only)

# -- the PIN rules --------------------------------------------------------------------------


@pytest.mark.parametrize("pin", ["2580", "1357", "9024", "13579", "246813"])
def test_a_cashier_pin_of_4_to_6_digits_that_is_not_trivial_passes(pin: str) -> None:
    assert operator_pin_problem(pin) is None


@pytest.mark.parametrize(("pin", "rule"), [
    ("123", "operator_pin_rule_digits"), ("1234567", "operator_pin_rule_digits"),
    ("12a4", "operator_pin_rule_digits"), ("", "operator_pin_rule_digits"),
    ("0000", "operator_pin_rule_one_digit"), ("777777", "operator_pin_rule_one_digit"),
    ("1234", "operator_pin_rule_run"), ("9876", "operator_pin_rule_run"),
    ("8901", "operator_pin_rule_run"), ("43210", "operator_pin_rule_run"),
])
def test_a_trivial_cashier_pin_is_refused_by_the_rule_it_breaks(pin: str, rule: str) -> None:
    assert operator_pin_problem(pin) == rule


# -- the operator table in the settings ------------------------------------------------------

def test_the_factory_has_no_operators_and_an_old_file_is_migrated_to_none() -> None:
    assert factory()["security"]["operators"] == {}
    old = factory()
    del old["security"]["operators"]  # a file written before operators existed
    migrated, filled = migrate(old)
    assert filled == ("security.operators",) and migrated["security"]["operators"] == {}
    validate(migrated)


@pytest.mark.parametrize("table", [{"00": HASH}, {"100": HASH}, {"7": HASH}, {"07": "2580"},
                                   {"07": "scrypt$nope"}, ["07"], "07"])
def test_a_bad_operator_table_is_refused_by_name_without_showing_a_hash_or_pin(table) -> None:
    data = factory()
    data["security"]["operators"] = table
    with pytest.raises(SettingsInvalid) as caught:
        validate(data)
    message = caught.value.problems["security.operators"]
    assert message.startswith("Operators:") and "got" in message
    assert "2580" not in message and "scrypt" not in message and "abab" not in message


def _settings_with(tmp_path: Path, operators: dict[str, str], supervisor: str = "246810"):
    store = SettingsStore(tmp_path / "settings.json")
    data = factory()
    data["security"].update(supervisor_hash=hash_password(supervisor), password_changed=True,
                            operators=operators)
    store.save(data, "provisioned")
    return store, data


def test_the_history_keeps_cashier_hashes_and_a_restore_keeps_the_live_operators(tmp_path: Path) -> None:
    """The store rewrites the supervisor's hash in its history copies (no old password kept);
    the cashiers' hashes have the same format and must not become the supervisor's, and a version
    made live again must not bring back a removed cashier or an old PIN."""
    old_07 = hash_password("2580")
    store, data = _settings_with(tmp_path, {"07": old_07})
    data = {g: dict(v) for g, v in data.items()}
    data["display"]["contrast"] = 7
    store.save(data, "contrast")  # the history now holds the first version, cashier 07 in it
    data = {g: dict(v) for g, v in data.items()}
    data["security"] = {**data["security"], "supervisor_hash": hash_password("135790"),
                        "operators": {"08": hash_password("1357")}}
    store.save(data, "new supervisor password; 07 removed, 08 added")
    copies = [json.loads(p.read_text()) for p in sorted(store.history_dir.glob("*.json"))]
    assert all(verify_password("135790", c["security"]["supervisor_hash"]) for c in copies)
    assert [c["security"]["operators"] for c in copies[:2]] == [{"07": old_07}, {"07": old_07}]
    restored = store.restore_previous()
    # the newest copy differs from the live file only in its (stale) cashiers, which a restore
    # does not take: the one before it is restored, with the live cashiers
    assert restored["display"]["contrast"] == 5
    assert list(restored["security"]["operators"]) == ["08"]  # the live cashiers, not 07
    assert verify_password("1357", restored["security"]["operators"]["08"])
    reset = store.factory_defaults()
    assert list(reset["security"]["operators"]) == ["08"]  # kept as the supervisor password is


# -- the screens ------------------------------------------------------------------------------

class Term:
    """The real screen machine, `need` standing for the app's "nobody is signed in"."""

    def __init__(self, operators: tuple[str, ...] = ("07", "08"), operator: str = "",
                 lang: str = "en", rows: int = 4, cols: int = 16) -> None:
        self.need = not operator and bool(operators)
        self.ui = build_ui(lambda: self.need)
        self.settings = factory()
        self.settings["security"]["operators"] = {code: HASH for code in operators}
        self.operator, self.lang, self.rows, self.cols = operator, lang, rows, cols
        self.mono = 1000.0
        self.commands: list[core.UiCommand] = []

    def ctx(self) -> core.UiContext:
        return core.UiContext(now=datetime(2024, 5, 1, 12, 34), mono=self.mono, rows=self.rows,
                              cols=self.cols, lang=self.lang, merchant_name="Demo Shop",
                              link_up=True, paper="ok", settings=self.settings,
                              operator=self.operator)

    def feed(self, event: core.UiEvent) -> tuple[core.UiCommand, ...]:
        out = self.ui.feed(event, self.ctx())
        self.commands += out.commands
        return out.commands

    def keys(self, script: str) -> list[core.UiCommand]:
        got: list[core.UiCommand] = []
        for name in script.split():
            got += self.feed(core.KeyIn(Key[name] if name in Key.__members__ else Key(name)))
        return got

    @property
    def screen(self) -> core.Screen:
        return self.ui.screen

    def text(self) -> str:
        return "\n".join(self.ui.frame(self.ctx()).rows)

    def flat(self) -> str:
        """The rows as one line: a sentence wrapped over two rows reads whole again."""
        return " ".join(self.text().split())


def test_nobody_signed_in_home_is_the_sign_in_screen_and_a_right_pin_goes_to_idle() -> None:
    term = Term()
    assert isinstance(term.screen, SignInScreen) and "Operator sign-in" in term.text()
    assert term.keys("1 2 3") == []  # a sale cannot start here: digits are the number
    assert "Operator no." in term.text() and "12" in term.text()
    term.keys("ENTER")
    assert "No such operator" in term.text()
    term.keys("0 7 ENTER")
    assert isinstance(term.screen, OperatorPinEntry) and "Operator 07" in term.text()
    term.keys("2 5 ENTER")
    assert "4-6 digits" in term.text()  # too short: said, nothing sent
    assert term.keys("8 0 ENTER") == [core.SignIn("07", "2580")]
    assert "****" in term.text() and "2580" not in term.text()
    assert "2580" not in repr(term.screen) and "2580" not in repr(term.commands)
    term.operator, term.need = "07", False  # what the app did on the right PIN
    term.feed(core.OperatorAnswer(True, "operator_signed_in"))
    assert isinstance(term.screen, IdleScreen)
    assert "Operator 07" in term.text()  # the idle screen names who is signed in


def test_an_unknown_number_a_wrong_pin_and_a_lock_are_said_in_words() -> None:
    term = Term()
    term.keys("0 9 ENTER")
    assert isinstance(term.screen, SignInScreen) and "No such operator" in term.text()
    term.keys("0 8 ENTER 1 1 1 1 ENTER")
    term.feed(core.OperatorAnswer(False, "operator_pin_wrong"))
    assert "Wrong PIN" in term.text() and isinstance(term.screen, OperatorPinEntry)
    term.keys("1 1 1 1 ENTER")
    term.feed(core.OperatorAnswer(False, "operator_locked_1m", locked_s=30.0))
    assert "Locked, 0:30 left" in term.flat()
    assert term.keys("2 5 8 0 ENTER") == []  # nothing is checked while it is locked
    term.mono += 31
    term.feed(core.Tick())
    assert "Enter PIN" in term.text()
    term.keys("CANCEL")
    assert isinstance(term.screen, SignInScreen)


def test_00_signs_in_with_the_supervisor_password_and_takes_no_payments() -> None:
    term = Term()
    term.keys("0 0 ENTER")
    assert "Supervisor 00" in term.text() and "Enter password" in term.text()
    term.keys("2 4 6 8 ENTER")
    assert "6-12 digits" in term.text()  # the supervisor password's length
    assert term.keys("1 0 ENTER") == [core.SignIn("00", "246810")]
    term.operator, term.need = "00", False
    term.feed(core.OperatorAnswer(True, "operator_signed_in"))
    assert isinstance(term.screen, IdleScreen)
    term.keys("F1")  # a sale
    assert "supervisor takes no payments" in term.flat().lower()
    assert not any(isinstance(c, core.StartOp) for c in term.commands)


def test_the_supervisor_adds_a_cashier_with_a_pin_typed_twice() -> None:
    term = Term(operator="08")
    term.keys("MENU 0 8")
    assert isinstance(term.screen, PasswordEntry)
    assert term.keys("2 4 6 8 1 0 ENTER") == [core.CheckPassword("operators", "246810")]
    term.feed(core.PasswordChecked(True))
    assert isinstance(term.screen, OperatorsMenu) and "Operators" in term.text()
    term.keys("1 0 7 ENTER")
    assert "Exists already" in term.text()  # 07 is set up
    term.keys("CLEAR CLEAR 0 0 ENTER")
    assert "01-99" in term.text()  # 00 is the supervisor, not a cashier
    term.keys("CLEAR CLEAR 0 5 ENTER")
    assert isinstance(term.screen, NewPinEntry)
    term.keys("1 2 3 4 ENTER")
    assert "Not a run: 1234" in term.flat()  # refused at once, in words
    term.keys("2 5 8 0 ENTER 2 5 8 1 ENTER")
    assert "PINs differ" in term.text()
    assert term.keys("2 5 8 0 ENTER 2 5 8 0 ENTER") == [core.ManageOperator("add", "05", "2580")]
    assert isinstance(term.screen, OperatorWait) and "2580" not in repr(term.commands)
    term.feed(core.OperatorAnswer(True, "operators_saved"))
    assert "Operators saved" in term.text()
    term.keys("ENTER")
    assert isinstance(term.screen, OperatorsMenu)  # back to the list for the next change


def test_change_remove_list_and_the_supervisors_sign_out() -> None:
    term = Term(operator="07")
    term.keys("MENU 0 8 2 4 6 8 1 0 ENTER")
    term.feed(core.PasswordChecked(True))
    term.keys("2 0 9 ENTER")
    assert "No such operator" in term.text()  # change needs one set up
    term.keys("CLEAR CLEAR 0 8 ENTER 1 3 5 7 ENTER 1 3 5 7 ENTER")
    assert term.commands[-1] == core.ManageOperator("change_pin", "08", "1357")
    term.feed(core.OperatorAnswer(False, "operator_unknown"))  # removed meanwhile: refused
    term.keys("ENTER CANCEL")
    assert isinstance(term.screen, OperatorsMenu)
    term.keys("3 0 8 ENTER")
    assert "Remove 08?" in term.text()
    assert term.keys("ENTER") == [core.ManageOperator("remove", "08")]
    term.feed(core.OperatorAnswer(True, "operators_saved"))
    term.keys("ENTER 4")
    assert isinstance(term.screen, ScrollScreen)
    assert "00 supervisor" in term.text() and "07 signed in" in term.text()
    term.keys("ENTER DOWN")
    assert "5 Sign out 07" in term.text()
    assert term.keys("5") == [core.SignOut(by_supervisor=True)]
    assert isinstance(term.screen, SignInScreen)


def test_manage_sign_out_signs_the_keypads_operator_out_and_says_when_nobody_is() -> None:
    term = Term(operator="07")
    assert term.keys("MENU 0 9") == [core.SignOut()]
    assert isinstance(term.screen, SignInScreen)
    none = Term(operators=())
    assert isinstance(none.screen, IdleScreen)  # no operators: the terminal of before
    assert none.keys("MENU 0 9") == []
    assert "No operators are set up" in none.flat()


def test_an_idle_screen_reached_by_a_back_while_nobody_is_signed_in_becomes_the_sign_in() -> None:
    assert isinstance(home_for(IdleScreen(), True), SignInScreen)
    assert isinstance(home_for(SignInScreen(), False), IdleScreen)
    assert home_for(IdleScreen(), False) is None and home_for(SignInScreen(), True) is None


def test_a_number_typed_and_left_is_cleared_after_the_idle_time() -> None:
    term = Term()
    term.keys("0")
    term.mono += 61
    term.feed(core.Tick())
    assert term.screen == SignInScreen()
    assert term.commands == []  # the home screen's timeout audits nothing


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
@pytest.mark.parametrize("size", [(4, 16), (8, 21)])
def test_snapshots(lang: str, size: tuple[int, int]) -> None:
    rows, cols = size
    suffix = f"{lang}" + ("" if size == (4, 16) else f"_{rows}x{cols}")
    term = Term(lang=lang, rows=rows, cols=cols)
    assert_snapshot(f"operator_sign_in_{suffix}", term.ui.frame(term.ctx()), cols)
    term.keys("0 7 ENTER 2 5")
    assert_snapshot(f"operator_pin_{suffix}", term.ui.frame(term.ctx()), cols)
    term.keys("8 0 ENTER")
    term.feed(core.OperatorAnswer(False, "operator_locked_5m", locked_s=300.0))
    assert_snapshot(f"operator_locked_{suffix}", term.ui.frame(term.ctx()), cols)
    signed = Term(operator="07", lang=lang, rows=rows, cols=cols)
    assert_snapshot(f"operator_idle_{suffix}", signed.ui.frame(signed.ctx()), cols)
    signed.keys("MENU 0 8 2 4 6 8 1 0 ENTER")
    signed.feed(core.PasswordChecked(True))
    assert_snapshot(f"operators_menu_{suffix}", signed.ui.frame(signed.ctx()), cols)
    signed.keys("1 0 5 ENTER 2 5 8 0 ENTER")
    assert_snapshot(f"operators_pin_again_{suffix}", signed.ui.frame(signed.ctx()), cols)

