"""Issue 13 A15: the tear-off pause between copies. The setting (printer.tear_pause: auto, on,
off; auto = the printer profile has no cutter), the spooler holding the next copy until the
operator's ENTER, the idle screen's words in both languages, and the whole thing by keys on
the emulated printer."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from helpers import run
from panelkit import Shop
from test_panel_e2e import sale_by_keys
from test_ui_txn import Term
from ui_snapshots import assert_snapshot

from drivers.printer.profiles import get_profile
from firmware.app.services.printing import PrintDesk
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.printing.queue import PrintState
from firmware.settings.model import factory, migrate, validate
from firmware.ui import core


@pytest.mark.parametrize(("profile", "choice", "pauses"), [
    ("58mm", "auto", False), ("80mm", "auto", False), ("58mm-tear", "auto", True),
    ("58mm", "on", True), ("58mm-tear", "off", False),
])
def test_the_pause_follows_the_setting_and_the_printers_cutter(tmp_path: Path, profile: str,
                                                               choice: str, pauses: bool) -> None:
    settings = factory()
    settings["printer"].update(profile=profile, tear_pause=choice)
    validate(settings)
    journal = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32))
    try:
        assert PrintDesk(journal, None, lambda: settings).tear_pause() is pauses
    finally:
        journal.close()
    assert get_profile(profile).has_cutter is (profile != "58mm-tear")


def test_an_older_settings_file_gets_the_automatic_pause() -> None:
    old = copy.deepcopy(factory())
    del old["printer"]["tear_pause"]
    data, filled = migrate(old)
    assert "printer.tear_pause" in filled and data["printer"]["tear_pause"] == "auto"


@pytest.mark.parametrize(("lang", "words"), [
    ("en", "Tear off the copy, ENTER prints the next"),
    ("zh_CN", "请撕下存根, 按确认打印下一联"),
])
def test_idle_says_tear_off_and_enter_prints_the_next_copy(lang: str, words: str) -> None:
    term = Term(lang=lang, tear_off_job=7)
    shown = term.text().replace("\n", "")
    assert words.replace(" ", "") in shown.replace(" ", "")
    assert term.keys("ENTER") == [core.TearOff(7)]  # not the menu: the key is the printer's
    assert_snapshot(f"idle_tear_off_{lang}", term.ui.frame(term.ctx()), 16)
    assert Term(lang=lang).keys("ENTER") == []  # nothing waits: ENTER opens the menu as ever


def test_by_keys_the_second_copy_waits_for_the_tear_off(tmp_path: Path, sim) -> None:
    shop = Shop(tmp_path, sim.port)
    path = shop.data_dir / "settings.json"
    settings = json.loads(path.read_text())
    settings["printer"]["tear_pause"] = "on"  # the emulator cuts, so it is switched on here
    path.write_text(json.dumps(settings))

    async def go():
        async with shop:
            assert shop.printer is not None and shop.terminal is not None
            await sale_by_keys(shop, "1234")
            waiting = await shop.shows("Tear off")
            desk = shop.terminal.prints
            assert desk is not None and desk.spooler is not None
            job = desk.spooler.tear_off_job
            assert job is not None
            # The spooler is parked on the operator: the cardholder copy cannot have started.
            on_paper = len(shop.printer.slips)
            state = shop.journal.print_job(job)
            await shop.press("ENTER")
            slips = await shop.slips(2)
            await shop.idle()
            return waiting, on_paper, state, slips, shop.screen(), shop.journal.print_job(job)

    waiting, on_paper, state, slips, after, done = run(go())
    assert "ENTER" in waiting
    assert on_paper == 1 and state.copies_done == 1
    assert "MERCHANT COPY" in slips[0] and "CARDHOLDER COPY" in slips[1]
    assert "Tear off" not in after and done.state is PrintState.DONE
