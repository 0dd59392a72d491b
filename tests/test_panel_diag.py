"""Diagnostics run from the keypad against the real devices: the card reader's link check on the
emulated reader's pty (answering and gone), and every result in the operator's language, with
catalog words only (an exception's text goes to the log, never to the LCD)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from helpers import run
from panelkit import Shop

from firmware.diag.checks import CATALOG as DIAG

ENGLISH_WORD = re.compile(r"[A-Za-z]{3,}")  # what a Chinese screen must not show (codes are short)


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_reader_link_check_passes_on_the_emulated_reader(lang: str, tmp_path: Path, sim):
    async def go() -> str:
        async with Shop(tmp_path, sim.port, rows=8, cols=21) as shop:
            await shop.press("MENU", "0", "2", "2")
            await shop.shows("Card reader test")
            assert shop.terminal is not None
            shop.terminal.settings["display"]["language"] = lang
            await shop.press("F1")
            answer = DIAG["reader_ok"][lang != "en"].split("{")[0].strip()
            return await shop.shows_words(answer)

    screen = run(go())
    assert "not callable" not in screen and "failed" not in screen.lower()


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_reader_link_check_fails_in_words_when_the_reader_is_gone(lang: str, tmp_path: Path, sim,
                                                                   caplog):
    async def go() -> str:
        async with Shop(tmp_path, sim.port, rows=8, cols=21) as shop:
            await shop.press("MENU", "0", "2", "2")
            await shop.shows("Card reader test")
            assert shop.terminal is not None and shop.reader is not None
            shop.terminal.settings["display"]["language"] = lang
            shop.reader.stop()  # its pty closes: the terminal's link gets no answer
            await shop.press("F1")
            return await shop.shows_words(DIAG["reader_silent"][lang != "en"])

    with caplog.at_level(logging.ERROR, logger="posfw.panel"):
        screen = run(go())
    if lang == "zh_CN":
        assert not ENGLISH_WORD.search(screen), screen
    assert "card reader link check" in caplog.text  # the why is in the log


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_a_check_that_breaks_shows_catalog_words_and_logs_the_exception(lang: str, tmp_path: Path,
                                                                        sim, caplog):
    async def go() -> str:
        async with Shop(tmp_path, sim.port, rows=8, cols=21) as shop:
            assert shop.terminal is not None
            shop.terminal.settings["display"]["language"] = lang
            shop.terminal.settings["comms"]["port"] = "not a port"  # the network check breaks
            await shop.press("MENU", "0", "2", "6")
            return await shop.shows_words(DIAG["check_failed"][lang != "en"])

    with caplog.at_level(logging.ERROR, logger="posfw.panel"):
        screen = run(go())
    assert "not a port" not in screen and "invalid literal" not in screen
    if lang == "zh_CN":
        assert not ENGLISH_WORD.search(screen), screen
    assert "invalid literal" in caplog.text
