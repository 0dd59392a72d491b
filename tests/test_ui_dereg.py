"""Deregistration screens through core.Ui with a fake clock: the check, the backup directory, the
warning, the password, the final confirm, the steps and every ending; CANCEL at every step before
the operation (no "deregister" ever starts); the blocked path with its settle offer; snapshots."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest
from ui_snapshots import assert_snapshot

from firmware.ports import Frame, Key, text_cells
from firmware.settings.model import factory
from firmware.ui import core
from firmware.ui.dereg_screens import CATALOG, STEPS, deregister_root
from firmware.ui.entry import PasswordEntry
from firmware.ui.idle import IdleScreen


@dataclass(frozen=True)
class Home(core.Screen):
    def handle(self, event, ctx):
        return None

    def render(self, ctx) -> Frame:
        return core.frame(ctx, ["HOME"])


HOME = Home()
SETTINGS = factory()
DIRS = ("/media/usb0", "/var/lib/posfw/data/export")
READY = core.OpOutcome("deregister_check", "done", "dereg_ready",
                       items=tuple({"kind": "dir", "path": p} for p in DIRS))
BLOCKING = (  # as firmware/app/services/deregister.py pending_items() writes them
    {"kind": "dereg_item_reversal", "count": 1, "action": "retry"},
    {"kind": "dereg_item_batch", "count": 3, "amount": 12345, "action": "settle"},
)
BLOCKED = core.OpOutcome("deregister_check", "refused", "dereg_blocked",
                         detail="1 reversal(s) pending; 3 unsettled", items=BLOCKING)
REPORT = ("DEREGISTRATION", "TID 12345678", "Backup 42 txns", "Keys wiped", "Host: unbound")
PASSWORD = (Key.D1, Key.D2, Key.D3, Key.D4, Key.D5, Key.D6)
LANGS = [("en", 4, 16), ("zh_CN", 4, 16), ("en", 8, 21), ("zh_CN", 8, 21)]


class Driver:
    def __init__(self, lang="en", rows=4, cols=16) -> None:
        self.lang, self.rows, self.cols, self.mono = lang, rows, cols, 100.0
        self.unclaimed: list[core.OpOutcome] = []
        # idle is the real one: a finished deregistration goes home (the banner), the flow's back is HOME
        self.ui = core.Ui(IdleScreen, self._on_result, lambda op, screen: screen)
        self.commands: list = []

    def _on_result(self, outcome, screen):
        self.unclaimed.append(outcome)
        return screen

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

    def wake(self):
        """The app's Tick at the screen's next_wakeup (when it asks for one)."""
        wakeup = self.ui.next_wakeup(self.ctx())
        if wakeup is not None:
            self.mono = max(self.mono, wakeup)
        return self.feed(core.Tick())

    def snap(self, name: str) -> None:
        suffix = "" if self.rows == 4 else "_8x21"
        assert_snapshot(f"dereg_{name}_{self.lang}{suffix}", self.ui.frame(self.ctx()), self.cols)

    def started(self, op: str) -> list[core.StartOp]:
        return [c for c in self.commands if isinstance(c, core.StartOp) and c.op == op]


def checked(d: Driver, outcome: core.OpOutcome = READY) -> None:
    d.ui.screen = deregister_root(HOME)
    assert d.ui.next_wakeup(d.ctx()) == d.mono  # the check is asked for at once
    out = d.feed(core.Tick())
    assert out.commands == (core.StartOp("deregister_check"),)
    d.feed(core.OpDone(outcome))


def to_confirm(d: Driver) -> None:
    checked(d)
    d.keys(Key.DOWN, Key.ENTER, Key.ENTER, *PASSWORD, Key.ENTER)
    d.feed(core.PasswordChecked(True))


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_the_whole_flow_commands_and_screens(lang, rows, cols):
    d = Driver(lang, rows, cols)
    d.ui.screen = deregister_root(HOME)
    d.snap("checking")
    d.wake()
    d.feed(core.OpDone(READY))
    d.snap("dirs")
    d.keys(Key.DOWN)
    d.snap("dirs_second")
    d.keys(Key.ENTER)
    d.snap("warning")
    d.keys(Key.DOWN, Key.DOWN)
    d.snap("warning_scrolled")
    d.keys(Key.ENTER)
    assert isinstance(d.ui.screen, PasswordEntry) and d.ui.screen.purpose == "deregistration"
    assert d.ui.screen.sensitive
    d.keys(*PASSWORD)
    d.snap("password")
    d.keys(Key.ENTER)
    assert d.commands[-1] == core.CheckPassword("deregistration", "123456")
    d.feed(core.PasswordChecked(True))
    d.snap("confirm")
    assert not d.started("deregister")
    out = d.keys(Key.ENTER)
    assert out.commands == (core.StartOp("deregister", path=DIRS[1], authorised=True),)
    assert d.ui.screen.running and d.ui.next_wakeup(d.ctx()) is None  # no idle timeout under it
    d.snap("working_start")
    d.feed(core.OpStep("dereg_backup", cancellable=True))
    d.snap("working_backup")
    d.feed(core.OpStep("dereg_wiped", cancellable=False))
    d.snap("working_wiped")
    d.feed(core.OpDone(core.OpOutcome("deregister", "done", "dereg_done", detail=DIRS[1] + "/T1",
                                      lines=REPORT)))
    d.snap("done")
    d.keys(*[Key.DOWN] * 12)
    d.snap("done_scrolled")
    d.keys(Key.ENTER)
    assert isinstance(d.ui.screen, IdleScreen)
    assert d.commands == [core.StartOp("deregister_check"), core.CheckPassword("deregistration", "123456"),
                          core.StartOp("deregister", path=DIRS[1], authorised=True)]
    assert d.unclaimed == []


def test_every_step_name_reads_in_words_both_languages():
    for lang in ("en", "zh_CN"):
        d = Driver(lang)
        to_confirm(d)
        d.keys(Key.ENTER)
        seen = set()
        for i, step in enumerate(STEPS):
            d.feed(core.OpStep(step, cancellable=i < 3))
            rows = d.ui.frame(d.ctx()).rows
            assert f"{i + 1}/{len(STEPS)}" in " ".join(rows)
            seen.add(rows[1])
        assert len(seen) == len(STEPS)  # each step has its own words


def test_digit_picks_a_directory():
    d = Driver()
    checked(d)
    d.keys(Key.D2, Key.ENTER, *PASSWORD, Key.ENTER)
    d.feed(core.PasswordChecked(True))
    assert d.keys(Key.ENTER).commands == (core.StartOp("deregister", path=DIRS[1], authorised=True),)
    d = Driver()
    checked(d)
    d.keys(Key.D9, Key.ENTER, Key.ENTER, *PASSWORD, Key.ENTER)  # no ninth directory: ENTER takes the first
    d.feed(core.PasswordChecked(True))
    assert d.keys(Key.ENTER).commands == (core.StartOp("deregister", path=DIRS[0], authorised=True),)


# Each entry: the keys (and events) reaching a screen, then what CANCEL there must show.
def _at_checking(d):
    d.ui.screen = deregister_root(HOME)


def _at_checking_sent(d):
    d.ui.screen = deregister_root(HOME)
    d.wake()


def _at_dirs(d):
    checked(d)


def _at_warning(d):
    checked(d)
    d.keys(Key.DOWN, Key.ENTER)


def _at_password(d):
    _at_warning(d)
    d.keys(Key.ENTER, Key.D1, Key.D2)


def _at_password_checking(d):
    _at_warning(d)
    d.keys(Key.ENTER, *PASSWORD, Key.ENTER)


def _at_password_wrong(d):
    _at_password_checking(d)
    d.feed(core.PasswordChecked(False))


def _at_confirm(d):
    to_confirm(d)


CANCEL_CASES = [
    (_at_checking, "Home"), (_at_checking_sent, "Home"), (_at_dirs, "Home"), (_at_warning, "DirPick"),
    (_at_password, "WipeWarning"), (_at_password_checking, "WipeWarning"),
    (_at_password_wrong, "WipeWarning"), (_at_confirm, "WipeWarning"),
]


@pytest.mark.parametrize(("reach", "back_to"), CANCEL_CASES, ids=[c[0].__name__ for c in CANCEL_CASES])
def test_cancel_goes_back_one_level_and_starts_nothing(reach, back_to):
    d = Driver()
    reach(d)
    before = list(d.commands)
    d.keys(Key.CANCEL)
    assert type(d.ui.screen).__name__ == back_to
    assert d.commands == before  # CANCEL itself emits nothing
    for _ in range(5):  # and on back to where the flow began, still nothing
        d.keys(Key.CANCEL)
    assert d.ui.screen is HOME
    assert not d.started("deregister")
    assert all(isinstance(c, (core.StartOp, core.CheckPassword)) for c in d.commands)
    assert {c.op for c in d.commands if isinstance(c, core.StartOp)} <= {"deregister_check"}


def test_directory_kept_when_coming_back_and_late_check_result_is_not_lost_in_a_screen():
    d = Driver()
    _at_warning(d)
    d.keys(Key.CANCEL)
    assert d.ui.screen.sel == 1  # the warning's CANCEL comes back to the chosen directory
    d = Driver()
    _at_checking_sent(d)
    d.keys(Key.CANCEL)
    d.feed(core.OpDone(READY))  # the read-only check answers after CANCEL: the app's result hook
    assert d.ui.screen is HOME and d.unclaimed == [READY] and not d.started("deregister")


def test_idle_timeout_before_the_password_discards_the_flow():
    d = Driver()
    _at_warning(d)
    d.mono += float(SETTINGS["display"]["idle_timeout_s"]) + 1
    d.feed(core.Tick())
    assert isinstance(d.ui.screen, IdleScreen) and not d.started("deregister")


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_cancel_while_working_only_when_cancellable(lang, rows, cols):
    d = Driver(lang, rows, cols)
    to_confirm(d)
    d.keys(Key.ENTER)
    d.feed(core.OpStep("dereg_wiping", cancellable=False))
    d.keys(Key.CANCEL)
    assert core.CancelOp() not in d.commands
    d.snap("working_cannot_cancel")
    d.mono += 5
    d.wake()
    assert "CANCEL" not in "".join(d.ui.frame(d.ctx()).rows)  # the note goes away by itself

    d = Driver(lang, rows, cols)
    to_confirm(d)
    d.keys(Key.ENTER)
    d.feed(core.OpStep("dereg_verified", cancellable=True))
    d.keys(Key.CANCEL, Key.CANCEL)
    assert d.commands.count(core.CancelOp()) == 1
    d.snap("working_cancelling")
    d.feed(core.OpDone(core.OpOutcome("deregister", "cancelled", "dereg_cancelled")))
    d.snap("cancelled")
    d.keys(Key.ENTER)
    assert d.ui.screen is HOME


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_refused_and_failed_say_why(lang, rows, cols):
    d = Driver(lang, rows, cols)
    to_confirm(d)
    d.keys(Key.ENTER)
    d.feed(core.OpDone(core.OpOutcome("deregister", "refused", "dereg_refused",
                                      detail="backup verify failed: txn count 41 != 42")))
    d.snap("refused")
    d.keys(Key.CANCEL)
    assert d.ui.screen is HOME

    d = Driver(lang, rows, cols)
    to_confirm(d)
    d.keys(Key.ENTER)
    d.feed(core.OpDone(core.OpOutcome("deregister", "failed", "dereg_host_pending",
                                      detail="host unreachable: connection refused")))
    d.snap("host_pending")
    d.keys(Key.ENTER)
    assert d.ui.screen is HOME


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_already_deregistered_check(lang, rows, cols):
    d = Driver(lang, rows, cols)
    checked(d, core.OpOutcome("deregister_check", "refused", "dereg_already", detail="DEREGISTERED"))
    d.snap("already")
    d.keys(Key.ENTER)
    assert d.ui.screen is HOME and d.commands == [core.StartOp("deregister_check")]


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_blocked_lists_problems_and_offers_to_settle(lang, rows, cols):
    d = Driver(lang, rows, cols)
    checked(d, BLOCKED)
    d.snap("blocked")
    d.keys(*[Key.DOWN] * 20)
    d.snap("blocked_end")
    d.keys(Key.D1)
    assert isinstance(d.ui.screen, PasswordEntry) and d.ui.screen.purpose == "settlement"
    d.keys(Key.CANCEL)
    assert type(d.ui.screen).__name__ == "Blocked"
    d.keys(Key.D1, *PASSWORD, Key.ENTER)
    assert d.commands[-1] == core.CheckPassword("settlement", "123456")
    assert not d.started("settle")
    d.feed(core.PasswordChecked(True))
    out = d.wake()
    assert out.commands == (core.StartOp("settle", authorised=True),)
    d.feed(core.OpStep("settling", cancellable=False))
    d.snap("settling")
    d.keys(Key.CANCEL)
    assert core.CancelOp() not in d.commands
    d.feed(core.OpDone(core.OpOutcome("settle", "settled", "settled_balanced", batch="000007")))
    d.snap("settle_done")
    d.keys(Key.ENTER)  # check again
    assert d.wake().commands == (core.StartOp("deregister_check"),)
    d.feed(core.OpDone(READY))
    assert type(d.ui.screen).__name__ == "DirPick"
    assert not d.started("deregister") and d.unclaimed == []


def test_blocked_cancel_and_no_settle_offer_when_settling_does_not_help():
    d = Driver()
    checked(d, BLOCKED)
    d.keys(Key.CANCEL)
    assert d.ui.screen is HOME
    only_reversal = core.OpOutcome("deregister_check", "refused", "dereg_blocked", items=BLOCKING[:1])
    d = Driver()
    checked(d, only_reversal)
    d.keys(Key.D1)
    assert type(d.ui.screen).__name__ == "Blocked"
    assert "Settle now" not in " ".join(d.ui.frame(d.ctx()).rows)
    # the short kind names read the same
    d = Driver()
    checked(d, core.OpOutcome("deregister_check", "refused", "dereg_blocked",
                              items=({"kind": "settlement_open", "count": 1, "action": "settle"},)))
    assert "Settlement interrupted" in " ".join(d.ui.frame(d.ctx()).rows)
    d.keys(Key.D1)
    assert isinstance(d.ui.screen, PasswordEntry)


def test_settle_cancel_while_cancellable_and_cancel_from_its_result():
    d = Driver()
    checked(d, BLOCKED)
    d.keys(Key.D1, *PASSWORD, Key.ENTER)
    d.feed(core.PasswordChecked(True))
    d.wake()
    d.feed(core.OpStep("connecting", cancellable=True))
    d.keys(Key.CANCEL)
    assert d.commands[-1] == core.CancelOp()
    d.feed(core.OpDone(core.OpOutcome("settle", "cancelled", "cancelled")))
    d.keys(Key.CANCEL)
    assert d.ui.screen is HOME and not d.started("deregister")


def test_single_row_texts_fit_the_small_lcd():
    for key in ("dereg_title", "dereg_blocked_title", "dereg_warn_title"):  # titles with "^v" marks
        for text in CATALOG[key]:
            assert text_cells(text) <= 14, (key, text)
    single = ["dereg_checking", "dereg_working", "dereg_confirm_q", "dereg_offer_settle", "dereg_hint_back",
              "dereg_enter_continue", "dereg_cannot_cancel", "dereg_cancel_stops",
              *(f"dereg_step_{step}" for step in STEPS)]
    for key in single:
        for text in CATALOG[key]:
            assert text_cells(text) <= 16, (key, text)
    for text in CATALOG["dereg_dir_title"]:
        assert text_cells(text) + len("9/9") <= 16
    for text in CATALOG["dereg_step_n"]:
        assert text_cells(text.format(n=9, total=9)) <= 16
    for key in CATALOG:
        assert all(CATALOG[key]), key  # both languages present


@pytest.mark.parametrize(("lang", "rows", "cols"), LANGS)
def test_an_interrupted_deregistration_is_finished_only_after_the_password(lang, rows, cols):
    d = Driver(lang, rows, cols)
    checked(d, core.OpOutcome("deregister_check", "done", "dereg_resume", detail="DEREGISTERED"))
    frame = "\n".join(d.ui.frame(d.ctx()).rows)
    assert ("ENTER=finish" if lang == "en" else "完成注销") in frame.replace("\n", "")
    d.keys(Key.ENTER)
    assert isinstance(d.ui.screen, PasswordEntry) and d.ui.screen.purpose == "deregistration"
    d.keys(*PASSWORD, Key.ENTER)
    d.feed(core.PasswordChecked(False))
    assert d.started("deregister") == []  # a wrong password starts nothing
    d.keys(*PASSWORD, Key.ENTER)
    d.feed(core.PasswordChecked(True))
    d.wake()
    assert d.started("deregister") == [core.StartOp("deregister", path="", authorised=True)]
    d.feed(core.OpStep("dereg_deregistered", cancellable=False))
    d.feed(core.OpDone(core.OpOutcome("deregister", "done", "dereg_done", lines=REPORT)))
    assert type(d.ui.screen).__name__ == "DeregResult"


def test_cancel_on_the_resume_offer_starts_nothing():
    d = Driver()
    checked(d, core.OpOutcome("deregister_check", "done", "dereg_resume", detail="DEREGISTERED"))
    d.keys(Key.CANCEL)
    assert d.ui.screen is HOME and d.started("deregister") == []
