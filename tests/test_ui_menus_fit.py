"""Issue 13 A14: every menu, in English and Chinese, on the 4x16 LCD: each item row shows its
digit key and its whole label (nothing cut: `7 Restore previo`), and the digit shown is the one
that picks it. The rows are read from the frames the screens draw, walking each menu with DOWN;
a cut is caught where it happens (core.fit cutting a row while a menu is drawn)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from test_ui_txn import Term

from firmware.ports import Key
from firmware.ui import core
from firmware.ui.dereg_screens import DirPick
from firmware.ui.diag_screens import ITEMS as DIAG_ITEMS
from firmware.ui.diag_screens import DiagMenu
from firmware.ui.held_screens import REASONS, ReasonPick
from firmware.ui.menu import MENUS, MenuScreen
from firmware.ui.review_screens import AnomalyDetail, AnomalyList, ReviewScreen
from firmware.ui.settings_screens import _ROOT_ITEMS, GroupsScreen

LANGS = ("en", "zh_CN")
DIGITS = "1234567890"


@contextmanager
def cuts_recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every text core.fit had to cut while the block ran."""
    cut: list[str] = []
    fit = core.fit

    def recording(text: str, cols: int) -> str:
        out = fit(text, cols)
        if out != text:
            cut.append(text)
        return out

    monkeypatch.setattr(core, "fit", recording)
    yield cut


def walk(screen: core.Screen, ctx: core.UiContext, count: int) -> list[str]:
    """The selected (inverse) row of each item, moving DOWN from the first."""
    rows = []
    for _ in range(count):
        frame = screen.render(ctx)
        assert frame.inverse_row is not None
        rows.append(frame.rows[frame.inverse_row].rstrip())
        moved = screen.handle(core.KeyIn(Key.DOWN), ctx)
        assert moved is not None
        screen = moved.screen
    return rows


def menus(lang: str) -> Iterator[tuple[str, core.Screen, int]]:
    """(name, screen, item count) of every menu a 16-column terminal draws."""
    for name, (_, items) in MENUS.items():
        yield f"menu {name}", MenuScreen(name, core.Screen()), len(items)
    yield "settings", GroupsScreen(core.Screen()), len(_ROOT_ITEMS)
    yield "diagnostics", DiagMenu(core.Screen()), len(DIAG_ITEMS)
    yield "held cancel reasons", ReasonPick({}, core.Screen()), len(REASONS)  # type: ignore[arg-type]


CASES = [(lang, name) for lang in LANGS for name, _, _ in menus(lang)]


@pytest.mark.parametrize(("lang", "name"), CASES, ids=[f"{n}-{lang}" for lang, n in CASES])
def test_every_menu_item_shows_its_digit_and_its_whole_label(lang: str, name: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    screen, count = next((s, c) for n, s, c in menus(lang) if n == name)
    ctx = Term(lang=lang, rows=4, cols=16).ctx()
    assert count <= len(DIGITS), f"{name}: {count} items, but only ten digit keys"
    with cuts_recorded(monkeypatch) as cut:
        rows = walk(screen, ctx, count)
    assert cut == [], f"{name} ({lang}) cuts {cut}"
    for index, row in enumerate(rows):
        digit = DIGITS[index] if not isinstance(screen, MenuScreen) else \
            MENUS[screen.name][1][index].shortcut
        assert row[:1] == digit and row[1:2] in (" ", "."), f"{name} ({lang}): {row!r} has no digit"


@pytest.mark.parametrize("lang", LANGS)
def test_each_main_menu_digit_opens_the_item_it_shows(lang: str) -> None:
    ctx = Term(lang=lang, rows=4, cols=16).ctx()
    for name, (_, items) in MENUS.items():
        for index, item in enumerate(items):
            opened = MenuScreen(name, core.Screen()).handle(core.KeyIn(Key(item.shortcut)), ctx)
            assert opened is not None and opened.screen != MenuScreen(name, core.Screen())
            shown = MenuScreen(name, core.Screen(), selected=index)
            assert shown.moved(index, ctx).render(ctx).rows[0]  # drawable with the item selected


@pytest.mark.parametrize("lang", LANGS)
def test_the_backup_directory_list_shows_each_path_whole(lang: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """`1.~rminal/export` said nothing of where the backup would go: each path wraps whole."""
    dirs = ("/media/usb0", "/var/lib/posfw/terminal/export", "/mnt/sd")
    ctx = Term(lang=lang, rows=4, cols=16).ctx()
    with cuts_recorded(monkeypatch) as cut:
        seen = []
        for sel in range(len(dirs)):
            frame = DirPick(dirs, core.Screen(), sel).render(ctx)
            seen.append("".join(row.strip() for row in frame.rows[1:]))
            assert frame.rows[frame.inverse_row or 0].startswith(f"{sel + 1} ")
    assert cut == []
    assert any("2 /var/lib/posfw/terminal/export" in text for text in seen)
    assert "~" not in "".join(seen)


@pytest.mark.parametrize("lang", LANGS)
def test_anomaly_screens_fit(lang: str, monkeypatch: pytest.MonkeyPatch) -> None:
    item = {"kind": "duplicate", "record_id": 2, "voucher": "000002", "pan": "622588******0001",
            "amount": 1500, "actions": ["void"], "related_trace": "000001", "attempts": 0}
    review = ReviewScreen(core.OpOutcome("settle_review", "done", "review_ready", items=(item,)),
                          core.Screen())
    listing = AnomalyList((item,), review)
    ctx = Term(lang=lang, rows=4, cols=16).ctx()
    with cuts_recorded(monkeypatch) as cut:
        rows = walk(listing, ctx, 1)
        detail = AnomalyDetail(item, listing).render(ctx)
    assert cut == [] and rows[0].startswith("1 ")
    assert detail.rows[-1].startswith("1 ")


@pytest.mark.parametrize(("lang", "done", "balanced", "unbalanced"), [
    ("en", "Settlement done", "balanced", "unbalanced"),
    ("zh_CN", "结算完成", "对账平", "对账不平"),
])
def test_a_settlement_result_says_its_outcome_once(lang: str, done: str, balanced: str,
                                                   unbalanced: str) -> None:
    """The result's message and its advice said "Settlement done ... balanced" twice."""
    from firmware.diag.review import settlement_advice

    for key, word in (("settled_balanced", balanced), ("settled_unbalanced", unbalanced)):
        outcome = core.OpOutcome("settle", "settled", key, batch="000001")
        lines = tuple(settlement_advice(outcome, lang))
        term = Term(lang=lang, rows=4, cols=16)
        term.feed(core.OpStarted("settle", "ecr", None))
        term.feed(core.OpDone(core.OpOutcome("settle", "settled", key, batch="000001", lines=lines)))
        text = term.all_text().replace(" ", "")
        assert text.count(done.replace(" ", "")) == 1, text
        assert text.count(word) == 1, text


@pytest.mark.parametrize(("lang", "note"), [("en", "No dot: 123=1.23"), ("zh_CN", "无需小数点")])
def test_the_dot_key_in_an_amount_says_amounts_take_no_dot(lang: str, note: str) -> None:
    """Decision (A14): amounts shift in from the right as on CUP terminals, so '.' is not a
    digit: the entry says so (it was silently ignored) and the key legends stop calling it one."""
    from board.sim.console import LEGEND
    from drivers.keypad.terminal_keypad import KEY_HELP

    term = Term(lang=lang, rows=4, cols=16)
    term.keys("F1 1 2 DOT")
    text = term.text()
    assert note in text and "0.12" in text
    term.advance(3)
    term.feed(core.Tick())
    assert note not in term.text()
    term.keys("3")
    assert "1.23" in term.text()
    assert not any("0-9 ." in line for line in LEGEND) and "0-9 ." not in KEY_HELP
