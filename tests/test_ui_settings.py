"""The settings screens through core.Ui with a fake clock: cancel, timeout, save, self-tests,
roll back, restore, factory defaults, password change, multi-tap, and snapshots (en, zh_CN)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest
from ui_snapshots import assert_snapshot

from firmware.ports import Frame, Key
from firmware.settings.model import factory
from firmware.ui import core
from firmware.ui import settings_screens as ss
from firmware.ui.core import (
    Audit,
    ChangePassword,
    DiagResult,
    DropCard,
    FactoryDefaults,
    KeyIn,
    RestorePrevious,
    RollBackSettings,
    RunDiag,
    SaveSettings,
    SettingsSaved,
    Tick,
)


@dataclass(frozen=True)
class Stub(core.Screen):
    name: str

    def handle(self, event, ctx):
        return None

    def render(self, ctx) -> Frame:
        return core.frame(ctx, [self.name])


IDLE, MENU = Stub("idle"), Stub("menu")


class Driver:
    """A Ui at the settings root, a fake monotonic clock and every command emitted."""

    def __init__(self, lang: str = "en", rows: int = 4, cols: int = 16) -> None:
        self.ui = core.Ui(lambda: IDLE, lambda outcome, screen: screen, lambda op, screen: screen)
        self.ui.screen = ss.settings_root(MENU)
        self.mono = 100.0
        self.ui.last_input = self.mono
        self.lang, self.rows, self.cols = lang, rows, cols
        self.settings = factory()
        self.commands: list = []
        self.out: core.Output | None = None

    def ctx(self) -> core.UiContext:
        return core.UiContext(now=datetime(2024, 5, 1, 10, 2), mono=self.mono, rows=self.rows,
                              cols=self.cols, lang=self.lang, settings=self.settings)

    def feed(self, event) -> core.Output:
        self.out = self.ui.feed(event, self.ctx())
        self.commands.extend(self.out.commands)
        return self.out

    def keys(self, *keys: Key, step: float = 0.1) -> core.Output:
        for key in keys:
            self.mono += step
            self.feed(KeyIn(key))
        assert self.out is not None
        return self.out

    def text(self) -> str:
        return "\n".join(self.ui.frame(self.ctx()).rows)

    def snap(self, name: str) -> None:
        suffix = "" if (self.rows, self.cols) == (4, 16) else f"_{self.rows}x{self.cols}"
        assert_snapshot(f"settings_{name}_{self.lang}{suffix}", self.ui.frame(self.ctx()), self.cols)


def _stage_port(d: Driver, digits: str = "9000") -> None:
    d.keys(Key.D2, Key.D2)  # Comms, Port
    assert isinstance(d.ui.screen, ss.NumberEditor)
    d.keys(*(getattr(Key, f"D{c}") for c in digits), Key.ENTER)
    assert isinstance(d.ui.screen, ss.FieldList)
    assert d.ui.screen.staged.changed() == {"comms.port": (5800, int(digits))}


def test_cancel_with_changes_asks_then_discards_with_an_audit() -> None:
    d = Driver()
    _stage_port(d)
    assert "*Port" in d.text()
    d.keys(Key.CANCEL)
    assert d.text().startswith("Discard changes?")
    d.keys(Key.CANCEL)  # no: back to the list, changes kept
    assert isinstance(d.ui.screen, ss.FieldList) and d.ui.screen.staged.changes
    d.keys(Key.CANCEL, Key.ENTER)
    assert d.ui.screen is MENU
    assert d.commands == [Audit("settings", "1 change(s) discarded", "cancelled")]


def test_cancel_without_changes_goes_back_one_level() -> None:
    d = Driver()
    d.keys(Key.D2, Key.CANCEL)
    assert isinstance(d.ui.screen, ss.GroupsScreen)
    d.keys(Key.CANCEL)
    assert d.ui.screen is MENU and d.commands == []


def test_idle_timeout_discards_staged_changes() -> None:
    d = Driver()
    _stage_port(d)
    d.mono += 59
    d.feed(Tick())
    assert isinstance(d.ui.screen, ss.FieldList)
    d.mono += 1.5
    d.feed(Tick())
    assert d.ui.screen is IDLE
    assert not any(isinstance(c, SaveSettings) for c in d.commands)
    assert d.commands == [DropCard(), Audit("input", "idle timeout", "discarded")]


def test_save_with_problems_keeps_the_staged_values() -> None:
    d = Driver()
    _stage_port(d)
    d.keys(Key.F1)
    assert d.text().startswith("Save 1 edit(s)?")
    d.keys(Key.ENTER)
    (save,) = d.commands
    assert isinstance(save, SaveSettings) and save.data["comms"]["port"] == 9000
    assert "comms.port" in save.reason
    assert d.ui.screen.running
    d.feed(SettingsSaved(ok=False, problems={"comms.host": "Host: bad", "comms.port": "Port: bad"}))
    assert isinstance(d.ui.screen, ss.ProblemsScreen)
    assert d.text().startswith("Not saved:\nHost: bad")
    d.keys(Key.ENTER)
    assert isinstance(d.ui.screen, ss.FieldList)
    assert d.ui.screen.staged.changed() == {"comms.port": (5800, 9000)}


def _saved_with(d: Driver, tests: tuple[str, ...], version: str = "v42") -> None:
    _stage_port(d)
    d.keys(Key.F1, Key.ENTER)
    d.commands.clear()
    d.feed(SettingsSaved(ok=True, self_tests=tests, version=version))


def test_failing_self_test_then_roll_back_restores_the_saved_version() -> None:
    d = Driver()
    _saved_with(d, ("echo", "printer"))
    assert d.commands == [RunDiag("echo")]
    d.mono += 1000  # the test screens have no idle timeout
    d.feed(Tick())
    assert isinstance(d.ui.screen, ss.DiagWait)
    d.feed(DiagResult("echo", False, "no reply from host", "check the host address"))
    assert d.text().startswith("Test failed:\necho: no reply")
    d.keys(Key.D2)
    assert d.commands[-1] == RollBackSettings("v42")
    assert RunDiag("printer") not in d.commands
    d.feed(SettingsSaved(ok=True, version="v43"))
    assert d.text().startswith("Rolled back")
    d.keys(Key.ENTER)
    assert isinstance(d.ui.screen, ss.GroupsScreen)


def test_failing_self_test_keep() -> None:
    d = Driver()
    _saved_with(d, ("printer",))
    d.feed(DiagResult("printer", False, "paper out", "load paper"))
    d.keys(Key.ENTER)  # not a choice
    assert isinstance(d.ui.screen, ss.TestFailed)
    d.keys(Key.D1)
    assert d.commands[-1] == Audit("settings", "self-test printer failed", "kept")
    assert not any(isinstance(c, RollBackSettings) for c in d.commands)
    assert d.text().startswith("Saved; the test\nfailed")


def test_all_self_tests_pass_including_the_display_pattern() -> None:
    d = Driver()
    _saved_with(d, ("echo", "display"))
    d.feed(DiagResult("printer", True, "stray answer"))  # not the test we wait for
    assert isinstance(d.ui.screen, ss.DiagWait)
    d.feed(DiagResult("echo", True, "reply in 40 ms"))
    assert isinstance(d.ui.screen, ss.DisplayTest)
    assert d.ui.frame(d.ctx()).rows[0] == "\u2588" * 16
    d.keys(Key.ENTER, Key.ENTER, Key.ENTER)
    assert d.ui.frame(d.ctx()).rows[0].endswith("|")
    d.keys(Key.ENTER)
    assert d.text().startswith("All cells shown?")
    d.keys(Key.ENTER)
    assert d.commands == [RunDiag("echo"), Audit("settings", "display self-test", "passed")]
    assert d.text().startswith("Saved")


def test_display_answer_no_is_a_failure() -> None:
    d = Driver()
    _saved_with(d, ("display",))
    d.keys(Key.CANCEL, Key.CANCEL)
    assert d.commands == [Audit("settings", "display self-test", "failed")]
    assert isinstance(d.ui.screen, ss.TestFailed)


@pytest.mark.parametrize(("row", "command"), [(Key.D7, RestorePrevious()), (Key.D8, FactoryDefaults())])
def test_restore_and_factory_confirm_or_cancel(row: Key, command) -> None:
    d = Driver()
    d.keys(row)
    assert "A backup is kept." in d.text().replace("\n", " ") or isinstance(d.ui.screen, ss.ConfirmScreen)
    d.keys(Key.CANCEL)
    assert isinstance(d.ui.screen, ss.GroupsScreen) and d.commands == []
    d.keys(row, Key.ENTER)
    assert d.commands == [command]
    d.feed(SettingsSaved(ok=True, self_tests=("echo",), version="v9"))
    assert d.commands[-1] == RunDiag("echo")
    d.feed(DiagResult("echo", False, "refused", "check port"))
    d.keys(Key.D2)
    assert d.commands[-1] == RollBackSettings("v9")


def test_history_shows_the_lines_the_app_gives() -> None:
    d = Driver()
    d.keys(Key.D9)
    assert d.commands == [RunDiag("settings_history")]
    d.feed(DiagResult("settings_history", True, "", lines=("2024-05-01 10:02", " edited", "x", "y")))
    assert d.text() == "History\n2024-05-01 10:02\n edited\nx"
    d.keys(Key.DOWN)
    assert d.text().endswith("y")
    d.keys(Key.CANCEL)
    assert isinstance(d.ui.screen, ss.GroupsScreen)


def _to_password(d: Driver) -> None:
    d.keys(Key.D6, Key.D3)  # Security, Change password (after the two fields)
    assert isinstance(d.ui.screen, ss.PasswordEntry)
    assert d.out is not None and d.out.sensitive


def _type(d: Driver, digits: str) -> None:
    d.keys(*(getattr(Key, f"D{c}") for c in digits))


def test_change_password_mismatch_then_success() -> None:
    d = Driver()
    _to_password(d)
    _type(d, "12345")
    d.keys(Key.ENTER)
    assert "6-12 digits" in d.text()
    _type(d, "000000")
    d.keys(Key.ENTER)
    assert "Not 000000" in d.text()
    _type(d, "246810")
    assert "******" in d.text() and "246810" not in d.text()
    assert "246810" not in repr(d.ui.screen)
    d.keys(Key.ENTER)
    _type(d, "246811")
    d.keys(Key.ENTER)
    assert "Not the same" in d.text() and d.commands == []
    _type(d, "246810")
    d.keys(Key.ENTER)
    _type(d, "246810")
    d.keys(Key.ENTER)
    assert d.commands == [ChangePassword("246810")]
    assert "246810" not in repr(d.commands)
    d.feed(SettingsSaved(ok=True))
    assert d.text().startswith("Password changed")


def test_change_password_refused_by_the_app_shows_the_problem() -> None:
    d = Driver()
    _to_password(d)
    _type(d, "135790")
    d.keys(Key.ENTER)
    _type(d, "135790")
    d.keys(Key.ENTER)
    d.feed(SettingsSaved(ok=False, problems={"security.supervisor_hash": "disk is full"}))
    assert "disk is full" in d.text()


def test_multitap_text_entry() -> None:
    d = Driver()
    d.keys(Key.D1, Key.D4)  # Merchant, Header (empty)
    assert isinstance(d.ui.screen, ss.TextEditor)
    d.keys(Key.D2, Key.D2, step=0.3)
    wake = d.ui.next_wakeup(d.ctx())
    assert wake == pytest.approx(d.mono + 1.0)
    d.mono = wake
    d.feed(Tick())
    assert d.ui.screen.text == "b"
    d.keys(Key.D3, Key.D3, Key.D3, Key.D2, step=0.2)  # another key commits "f" at once
    assert d.ui.screen.text == "bf" and d.ui.screen._committed() == "bfa"
    d.keys(Key.CLEAR)  # drops the pending letter
    d.keys(Key.D1, Key.ENTER, step=0.2)
    assert d.ui.screen.staged.changed() == {"merchant.receipt_header": ("", "bf ")}


def test_editors_by_kind() -> None:
    d = Driver()
    d.keys(Key.D3)  # Transactions
    d.keys(Key.D6)  # PIN bypass: a bool toggles in place
    assert d.ui.screen.staged.changed() == {"transactions.allow_pin_bypass": (False, True)}
    d.keys(Key.D1)  # Enabled: multi
    d.keys(Key.DOWN, Key.ENTER)  # untick void
    d.keys(*([Key.UP] * 2), Key.ENTER)  # OK row
    assert d.ui.screen.staged.get("transactions", "enabled")[:2] == ["sale", "refund"]
    d.keys(Key.CANCEL, Key.ENTER)  # discard: back to the menu
    assert d.ui.screen is MENU
    d = Driver()
    d.keys(Key.D5, Key.D2)  # Display, Contrast
    d.keys(Key.D2, Key.D0, Key.ENTER)
    assert "10" in d.text() and isinstance(d.ui.screen, ss.NumberEditor)  # over the limit: stays
    d.keys(Key.CLEAR, Key.ENTER)
    assert d.ui.screen.staged.changed() == {"display.contrast": (5, 2)}
    d.keys(Key.D1, Key.DOWN, Key.ENTER)  # Language: choice
    assert d.ui.screen.staged.get("display", "language") == "zh_CN"
    d = Driver()
    d.keys(Key.D2, Key.D3, Key.D4, Key.D5, Key.ENTER)  # Comms, Connect timeout: tenths
    assert d.ui.screen.staged.changed() == {"comms.connect_timeout": (10.0, 4.5)}


def _walk_snapshots(lang: str, rows: int = 4, cols: int = 16) -> None:
    d = Driver(lang, rows, cols)
    d.snap("groups")
    for key, name in [(Key.D1, "merchant"), (Key.D2, "comms"), (Key.D3, "transactions"),
                      (Key.D4, "printer"), (Key.D5, "display"), (Key.D6, "security")]:
        d.keys(key)
        d.snap(f"fields_{name}")
        d.keys(Key.CANCEL)
    d.keys(Key.D2, Key.D2)
    d.snap("edit_number")
    d.keys(Key.D9, Key.D0, Key.D0, Key.D0, Key.D0, Key.D0, Key.ENTER)
    d.snap("edit_number_error")
    d.keys(Key.CANCEL, Key.D1)
    d.keys(Key.D8, Key.D8)
    d.snap("edit_text")
    d.keys(Key.CANCEL, Key.CANCEL, Key.D4, Key.D1)
    d.snap("edit_choice")
    d.keys(Key.CANCEL, Key.CANCEL, Key.D3, Key.D1)
    d.snap("edit_multi")
    d.keys(Key.CANCEL, Key.CANCEL)
    _stage_port(d)
    d.snap("fields_changed")
    d.keys(Key.CANCEL)
    d.snap("discard")
    d.keys(Key.CANCEL, Key.F1)
    d.snap("summary")
    d.keys(Key.ENTER)
    d.snap("saving")
    d.feed(SettingsSaved(ok=False, problems={"comms.port": "Port: whole number 1-65535, got 0"}))
    d.snap("problems")
    d.keys(Key.ENTER, Key.F1, Key.ENTER)
    d.feed(SettingsSaved(ok=True, self_tests=("echo", "display"), version="v1"))
    d.snap("test_wait")
    d.feed(DiagResult("echo", True, "ok"))
    d.snap("test_display")
    d.keys(Key.ENTER, Key.ENTER, Key.ENTER)
    d.snap("test_display_edges")
    d.keys(Key.ENTER)
    d.snap("test_display_ask")
    d.keys(Key.CANCEL)
    d.snap("test_failed")
    d.keys(Key.D2)
    d.snap("rolling_back")
    d.feed(SettingsSaved(ok=True))
    d.snap("rolled_back")
    d.keys(Key.ENTER, Key.D7)
    d.snap("confirm_restore")
    d.keys(Key.ENTER)
    d.snap("restoring")
    d.feed(SettingsSaved(ok=True))
    d.snap("saved")
    d.keys(Key.ENTER, Key.D8)
    d.snap("confirm_factory")
    d.keys(Key.CANCEL, Key.D9)
    d.snap("history_wait")
    d.feed(DiagResult("settings_history", True, "", lines=("2024-05-01 10:02", " edited on the keypad")))
    d.snap("history")
    d.keys(Key.CANCEL, Key.D6, Key.D3)
    _type(d, "1234")
    d.snap("password_new")
    _type(d, "56")
    d.keys(Key.ENTER)
    _type(d, "1")
    d.keys(Key.ENTER)
    d.snap("password_mismatch")


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_snapshots_4x16(lang: str) -> None:
    _walk_snapshots(lang)


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_snapshots_8x21(lang: str) -> None:
    _walk_snapshots(lang, 8, 21)
