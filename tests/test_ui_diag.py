"""The diagnostics screens through core.Ui with a fake clock: the menu, tests the app runs
(RunDiag -> DiagResult, late results dropped), the reader, keypad and display tests, and
snapshots of every screen in both languages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pytest
from ui_snapshots import assert_snapshot

from firmware.diag.checks import EchoHistory, echo_result
from firmware.ports import Frame, Icon, Key
from firmware.ui import core
from firmware.ui.core import (
    Audit,
    CardPresented,
    CardRefused,
    ChipSeen,
    DiagResult,
    DropCard,
    KeyIn,
    OpOutcome,
    OpStarted,
    RunDiag,
    Screen,
    Tick,
    Transition,
    Ui,
    UiContext,
    UiEvent,
)
from firmware.ui.diag_screens import (
    CATALOG,
    KEY_NAMES,
    DiagMenu,
    DiagResultScreen,
    DiagRunning,
    DisplayTest,
    DisplayVerdict,
    KeypadTest,
    ReaderTest,
    diag_root,
)

LANGS = ("en", "zh_CN")


@dataclass(frozen=True)
class Idle(Screen):
    """Stands in for the idle screen (written elsewhere): opens diagnostics on MENU."""

    def handle(self, event: UiEvent, ctx: UiContext) -> Transition | None:
        if isinstance(event, KeyIn) and event.key is Key.MENU:
            return Transition(diag_root(self))
        return None

    def render(self, ctx: UiContext) -> Frame:
        return core.frame(ctx, ["IDLE"])


class Clock:
    def __init__(self) -> None:
        self.mono = 1000.0

    def ctx(self, lang: str = "en", rows: int = 4, cols: int = 16) -> UiContext:
        return UiContext(now=datetime(2025, 3, 14, 9, 26, 53), mono=self.mono, rows=rows, cols=cols,
                         lang=lang, link_up=True, paper="ok")


class Driver:
    """A Ui at the diagnostics menu, fed through a fake clock."""

    def __init__(self, lang: str = "en", rows: int = 4, cols: int = 16) -> None:
        self.clock = Clock()
        self.lang, self.rows, self.cols = lang, rows, cols
        self.ui = Ui(Idle, self._on_result, self._on_external)
        self.out = self.feed(KeyIn(Key.MENU))

    @staticmethod
    def _on_result(outcome: OpOutcome, screen: Screen) -> Screen:
        return screen

    @staticmethod
    def _on_external(event: OpStarted, screen: Screen) -> Screen:
        return screen

    def ctx(self) -> UiContext:
        return self.clock.ctx(self.lang, self.rows, self.cols)

    def feed(self, event: UiEvent) -> core.Output:
        self.out = self.ui.feed(event, self.ctx())
        return self.out

    def keys(self, *keys: Key) -> core.Output:
        for key in keys:
            self.feed(KeyIn(key))
        return self.out

    @property
    def rows_shown(self) -> tuple[str, ...]:
        return self.out.frame.rows

    def text(self) -> str:
        return "\n".join(self.rows_shown)


def result(passed: bool = True, name: str = "echo") -> DiagResult:
    if passed:
        return DiagResult(name, True, "Host answered in 35 ms", "Nothing to do",
                          ("Host 10.0.0.1:5000", "09:26:50 OK 35ms", "09:20:11 FAIL refused"))
    return DiagResult(name, False, "No answer from the host: refused",
                      "Check the network cable / host address in Settings > Comms",
                      ("Host 10.0.0.1:5000", "09:26:50 FAIL refused"))


# ---------------------------------------------------------------------------- menu


def test_menu_lists_the_ten_tests_and_moves_with_up_down_wrapping():
    d = Driver()
    assert d.rows_shown == ("Diagnostics", "1 Printer test", "2 Card reader", "3 Keypad test")
    assert d.out.frame.inverse_row == 1
    d.keys(Key.DOWN, Key.DOWN, Key.DOWN)
    assert d.rows_shown[1:] == ("2 Card reader", "3 Keypad test", "4 Display test")
    assert d.out.frame.inverse_row == 3
    d.keys(Key.UP, Key.UP, Key.UP, Key.UP)  # past the top wraps to the last item
    assert d.rows_shown[3] == "0 Firmware" and d.out.frame.inverse_row == 3
    assert d.keys(Key.CANCEL).frame.rows[0] == "IDLE"


@pytest.mark.parametrize("digit, name", [(Key.D1, "printer"), (Key.D5, "echo"), (Key.D6, "network"),
                                         (Key.D7, "journal"), (Key.D8, "log"), (Key.D9, "version"),
                                         (Key.D0, "firmware")])
def test_digit_runs_the_app_test_and_its_result_is_shown(digit, name):
    d = Driver()
    out = d.keys(digit)
    assert out.commands == (RunDiag(name),)
    assert isinstance(d.ui.screen, DiagRunning) and d.ui.screen.running
    assert "0" in d.rows_shown[1]
    d.feed(DiagResult(name, True, "All good here", "Nothing to do", ("detail one",)))
    assert isinstance(d.ui.screen, DiagResultScreen)
    assert d.rows_shown[0] == "== PASS ==   1/4"  # 4 body rows, 3 shown
    assert d.rows_shown[1:] == ("All good here", "Next: Nothing to", "do")
    d.keys(Key.ENTER)  # back to the menu, on the item that was run
    assert isinstance(d.ui.screen, DiagMenu)
    assert d.rows_shown[d.out.frame.inverse_row].startswith(digit.value + " ")


def test_enter_opens_the_selected_item():
    d = Driver()
    d.keys(Key.DOWN, Key.ENTER)
    assert isinstance(d.ui.screen, ReaderTest)
    d = Driver()
    assert d.keys(Key.UP, Key.ENTER).commands == (RunDiag("firmware"),)


def test_printer_test_counts_seconds_and_cancel_drops_the_late_result():
    d = Driver()
    d.keys(Key.D1)
    assert d.rows_shown[1] == "Printing... 0s"
    assert d.ui.next_wakeup(d.ctx()) == 1001.0
    d.clock.mono += 3.4
    d.feed(Tick())
    assert d.rows_shown[1] == "Printing... 3s"
    assert d.ui.next_wakeup(d.ctx()) == 1004.0
    d.clock.mono += 120  # longer than the idle timeout: a running test is not cut short
    d.feed(Tick())
    assert isinstance(d.ui.screen, DiagRunning)
    out = d.keys(Key.CANCEL)
    assert out.commands == () and isinstance(d.ui.screen, DiagMenu)
    menu_rows = d.rows_shown
    out = d.feed(DiagResult("printer", True, "Test slip printed", "Nothing to do"))
    assert isinstance(d.ui.screen, DiagMenu) and d.rows_shown == menu_rows and out.commands == ()


def test_a_result_for_another_test_is_not_taken_as_this_one():
    d = Driver()
    d.keys(Key.D5)
    d.feed(DiagResult("printer", True, "Test slip printed"))  # late, from a cancelled printer test
    assert isinstance(d.ui.screen, DiagRunning)
    d.feed(result(False))
    assert d.rows_shown[0] == "== FAIL ==  1/11" and d.out.frame.inverse_row == 0


def test_result_scrolls_through_reason_next_step_and_lines():
    d = Driver()
    d.keys(Key.D5)
    d.feed(result(False))
    body = ["No answer from", "the host:", "refused", "Next: Check the", "network cable /",
            "host address in", "Settings > Comms", "Host", "10.0.0.1:5000", "09:26:50 FAIL", "refused"]
    assert d.rows_shown == ("== FAIL ==  1/11", *body[:3])
    for top in range(1, len(body) - 2):
        d.keys(Key.DOWN)
        assert d.rows_shown == (f"== FAIL ==  {top + 1}/11", *body[top: top + 3])
    d.keys(Key.DOWN, Key.DOWN)  # DOWN at the end stays at the end
    assert d.rows_shown[1:] == tuple(body[-3:])
    d.keys(*[Key.UP] * 20)
    assert d.rows_shown[1:] == tuple(body[:3])
    d.keys(Key.CANCEL)
    assert isinstance(d.ui.screen, DiagMenu)


# ---------------------------------------------------------------------------- card reader


def test_reader_test_shows_the_masked_card_chip_and_refusal():
    d = Driver()
    d.keys(Key.D2)
    assert type(d.ui.screen).card_purpose == "test"
    assert d.rows_shown == ("Card reader test", "Swipe or insert", "a card", "F1: link check")
    d.feed(CardPresented("622588******0001", "swipe", "2712"))
    assert d.rows_shown == ("Card reader test", "622588******0001", "Swipe Exp 12/27", "F1: link check")
    d.feed(ChipSeen(True))
    assert d.rows_shown[1:] == ("Chip card", "present", "622588******0001")
    d.feed(ChipSeen(False))
    assert d.rows_shown[1:3] == ("Chip card", "removed")
    d.feed(CardRefused("card_unreadable"))
    assert d.rows_shown[1:] == ("Card could not", "be read - swipe", "again")


def test_reader_test_never_shows_a_full_pan_even_if_given_one():
    d = Driver(rows=8, cols=21)
    d.keys(Key.D2)
    d.feed(CardPresented("6225880000000001", "fallback", None))
    assert "6225880000000001" not in d.text()
    assert "622588******0001" in d.text() and "Fallback" in d.text()


def test_reader_link_check_runs_from_f1_and_comes_back_to_the_reader_test():
    d = Driver()
    d.keys(Key.D2)
    d.feed(CardPresented("622588******0001", "swipe", "2712"))
    assert d.keys(Key.F1).commands == (RunDiag("reader"),)
    assert d.rows_shown[:2] == ("Card reader", "Testing... 0s")
    d.feed(DiagResult("reader", True, "Reader answers", ""))
    assert d.rows_shown[0].strip() == "== PASS ==" and d.rows_shown[1:] == ("Reader answers", "", "")
    d.keys(Key.ENTER)
    assert isinstance(d.ui.screen, ReaderTest) and "622588******0001" in d.text()
    d.keys(Key.F1, Key.CANCEL)  # cancel the link check: back to the reader test, result dropped
    assert isinstance(d.ui.screen, ReaderTest)
    d.feed(DiagResult("reader", False, "Card reader did not answer"))
    assert isinstance(d.ui.screen, ReaderTest)
    out = d.keys(Key.CANCEL)
    assert out.commands == (DropCard(),) and isinstance(d.ui.screen, DiagMenu)


# ---------------------------------------------------------------------------- keypad


def test_keypad_test_names_every_key_and_counts_distinct_ones():
    d = Driver()
    d.keys(Key.D3)
    assert d.rows_shown == ("Keypad test", " Press each key", "Keys seen: 0/22", "CANCEL x2: exit")
    d.keys(Key.ENTER)
    assert d.rows_shown[1].strip() == "ENTER (确认)"
    d.keys(Key.D5, Key.D5, Key.MENU, Key.UP)
    assert d.rows_shown[1].strip() == "UP (向上)" and d.rows_shown[2] == "Keys seen: 4/22"
    d.keys(Key.CANCEL)  # CANCEL is a key under test too: named, counted, not leaving
    assert isinstance(d.ui.screen, KeypadTest)
    assert d.rows_shown[1].strip() == "CANCEL (取消)" and d.rows_shown[2] == "Keys seen: 5/22"
    d.keys(Key.F1, Key.CANCEL)  # not twice in a row
    assert isinstance(d.ui.screen, KeypadTest)
    for key in Key:
        d.keys(key)
        if key is not Key.CANCEL:
            assert d.rows_shown[1].strip() == KEY_NAMES[key]
    assert d.rows_shown[2] == "Keys seen: 22/22"
    out = d.keys(Key.CANCEL, Key.CANCEL)
    assert isinstance(d.ui.screen, DiagMenu) and out.commands == ()


def test_keypad_names_fit_the_small_lcd():
    assert set(KEY_NAMES) == set(Key)
    assert all(core.text_cells(name) <= 16 for name in KEY_NAMES.values())


# ---------------------------------------------------------------------------- display


@pytest.mark.parametrize("verdict_key, passed", [(Key.ENTER, True), (Key.CANCEL, False)])
def test_display_test_walks_the_patterns_then_audits_the_verdict(verdict_key, passed):
    d = Driver()
    d.keys(Key.D4)
    for phase in range(4):
        assert list(d.rows_shown) == core.test_pattern(4, 16, phase)
        assert (d.out.frame.icons == frozenset(Icon)) is (phase == 0)
        assert d.keys(Key.ENTER).commands == ()
    assert d.rows_shown[1:] == ("All cells shown?", "ENTER=PASS", "CANCEL=FAIL")
    out = d.keys(verdict_key)
    assert out.commands == (Audit("diagnostics", "display test", "pass" if passed else "fail"),)
    assert d.rows_shown[0] == ("== PASS ==   1/4" if passed else "== FAIL ==   1/7")
    assert d.out.frame.inverse_row == (None if passed else 0)
    d.keys(Key.CANCEL)
    assert isinstance(d.ui.screen, DiagMenu)


def test_cancel_during_the_patterns_leaves_without_a_verdict():
    d = Driver()
    d.keys(Key.D4, Key.ENTER)
    out = d.keys(Key.CANCEL)
    assert out.commands == () and isinstance(d.ui.screen, DiagMenu)


def test_idle_timeout_from_a_diag_screen_returns_to_idle():
    d = Driver()
    d.keys(Key.D3, Key.D1)
    d.clock.mono += 61
    out = d.feed(Tick())
    assert out.frame.rows[0] == "IDLE"


# ---------------------------------------------------------------------------- words and snapshots


def test_catalog_is_complete_and_short_lines_fit_16_columns():
    wrapped = {"reader_prompt", "chip_in", "chip_out", "display_passed", "display_failed",
               "display_pass_next", "display_fail_next", "next", "keypad_left"}
    for key, (english, chinese) in CATALOG.items():
        assert english and chinese, key
        if key not in wrapped:
            for text in (english, chinese):
                assert core.text_cells(text.format(s=999, n=22, total=22, mm="12", yy="27")) <= 16, key


def _echo_results(lang: str) -> tuple[DiagResult, DiagResult]:
    """What the real echo check says (in lang) after a failure, then a success."""
    times = iter([datetime(2025, 3, 14, 9, 20, 11), datetime(2025, 3, 14, 9, 26, 50)])
    history = EchoHistory(clock=lambda: next(times))
    refused = {"en": "refused", "zh_CN": "连接被拒绝"}[lang]  # the app's words for the failure
    failed = echo_result(False, None, refused, history, lang, "10.0.0.1", 5000)
    passed = echo_result(True, 0.035, "", history, lang, "10.0.0.1", 5000)
    return passed, failed


def _screens(lang: str = "en") -> dict[str, Screen]:
    idle = Idle()
    echo_pass, echo_fail = _echo_results(lang)
    menu = DiagMenu(idle)
    reader_card = ReaderTest(menu, "622588******0001", "swipe", "2712", None, None, "card")
    return {
        "menu": menu,
        "menu_scrolled": DiagMenu(idle, selected=8),
        "running": DiagRunning(menu, "echo", 997.0),
        "running_printer": DiagRunning(menu, "printer", 995.0),
        "result_pass": DiagResultScreen(menu, echo_pass),
        "result_fail": DiagResultScreen(menu, echo_fail),
        "reader": ReaderTest(menu),
        "reader_card": reader_card,
        "reader_chip": ReaderTest(menu, chip=True, latest="chip"),
        "reader_refused": ReaderTest(menu, refused="card_unreadable", latest="refused"),
        "keypad": KeypadTest(menu),
        "keypad_cancel": KeypadTest(menu, frozenset({Key.CANCEL, Key.D1}), Key.CANCEL),
        **{f"display_{phase}": DisplayTest(menu, phase) for phase in range(4)},
        "display_question": DisplayTest(menu, 4),
        "display_pass": DisplayVerdict(menu, True),
        "display_fail": DisplayVerdict(menu, False),
    }


@pytest.mark.parametrize("lang", LANGS)
def test_snapshots_4x16(lang):
    clock = Clock()
    for name, screen in _screens(lang).items():
        assert_snapshot(f"diag_{name}_{lang}", screen.render(clock.ctx(lang)), 16)


@pytest.mark.parametrize("lang", LANGS)
def test_snapshots_8x21(lang):
    clock = Clock()
    for name in ("menu", "result_fail", "reader_card", "keypad", "display_3"):
        screen = _screens(lang)[name]
        assert_snapshot(f"diag_{name}_{lang}_8x21", screen.render(clock.ctx(lang, 8, 21)), 21)


@pytest.mark.parametrize("lang", LANGS)
def test_every_screen_fits_both_lcds(lang):
    clock = Clock()
    for rows, cols in ((4, 16), (8, 21)):
        for name, screen in _screens(lang).items():
            rendered = screen.render(clock.ctx(lang, rows, cols))
            assert len(rendered.rows) == rows, name
            assert all(core.text_cells(row) <= cols for row in rendered.rows), name
