"""Paper out during a receipt, on the keypad and LCD with the emulated printer: the result
screen says the receipt waits for paper, and the idle prompt's ENTER does what it says (asks
the printer now: "Printing resumes" once paper is in, "Still no paper" while it is not)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run
from panelkit import Shop

from firmware.i18n import text
from firmware.ui.idle import IdleScreen
from firmware.ui.results import ResultScreen
from firmware.ui.texts import CATALOG as UI


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_the_result_says_the_receipt_waits_for_paper(lang: str, tmp_path: Path, sim):
    async def go() -> str:
        async with Shop(tmp_path, sim.port) as shop:  # 4 x 16
            assert shop.printer is not None and shop.terminal is not None
            shop.terminal.settings["display"]["language"] = lang
            shop.printer.paper_out_after(0)
            await shop.press("1200", "ENTER", "ENTER")
            await shop.swipe("cup_credit")
            screen = await shop.shows_words(UI["res_paper_out"][lang != "en"])
            assert isinstance(shop.current, ResultScreen)
            return screen

    screen = run(go())
    assert text("approved", lang) in screen  # the sale's own words stay


def test_enter_at_idle_asks_the_printer_and_says_what_it_found(tmp_path: Path, sim):
    async def go() -> tuple[str, str, str, list[str]]:
        # The spooler looks at a paused printer only when woken: the ENTER is what resumes.
        async with Shop(tmp_path, sim.port, print_poll_s=3600.0) as shop:
            assert shop.printer is not None
            printer = shop.printer
            printer.paper_out_after(0)
            await shop.press("1200", "ENTER", "ENTER")
            await shop.swipe("cup_credit")
            await shop.shows_words("Receipt-no paper")
            await shop.press("ENTER")
            idle = await shop.shows_words("Paper out - load paper and press ENTER")
            await shop.press("ENTER")  # no paper yet
            still = await shop.shows_words("Still no paper - load paper and")  # the rest scrolls
            await shop.press("ENTER")
            await shop.until(lambda: isinstance(shop.current, IdleScreen), "idle")
            printer.load_paper()
            await shop.press("ENTER")
            resumed = await shop.shows_words("Printing resumes")
            return idle, still, resumed, await shop.slips(2)

    idle, still, resumed, slips = run(go())
    assert "Paper out" in idle and "Still no paper" in still
    assert "Paper out" not in resumed
    assert len(slips) == 2 and all("12.00" in s for s in slips)
