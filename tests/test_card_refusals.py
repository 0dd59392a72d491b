"""Every card the reader refuses during a sale's card step is said at once where the operator
looks, and the wait for a card goes on: the LCD's card screen (keypad and ECR-started sales),
and the till's `status` and reply. Emulated reader on a pty, real terminal and panel."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import TID, run
from panelkit import Shop, squeezed

from board.sim.reader import EmulatedReader
from firmware.i18n import text

# refusal -> (what the reader is given, the catalog key the terminal says)
REFUSALS: dict[str, tuple[Callable[[EmulatedReader], Any], str]] = {
    "chip_card_swiped": (lambda r: r.swipe("cup_chip"), "insert_chip"),
    "expired": (lambda r: r.swipe("expired"), "card_expired"),
    "bad_luhn": (lambda r: r.swipe("bad_luhn"), "card_invalid"),
    "unreadable": (lambda r: r.read_error(1), "card_unreadable"),
    "track_1_only": (lambda r: r.swipe(("B6225880000000001^TEST/CARD^3012101", None, None)),
                     "card_unreadable"),
}


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_a_refused_card_is_said_on_the_card_screen_and_the_wait_goes_on(refusal: str, lang: str,
                                                                       tmp_path: Path, sim):
    give, key = REFUSALS[refusal]

    async def go() -> tuple[str, str]:
        async with Shop(tmp_path, sim.port, rows=4, cols=16) as shop:
            assert shop.terminal is not None and shop.reader is not None
            shop.terminal.settings["display"]["language"] = lang
            await shop.press("1200", "ENTER", "ENTER")
            await shop.reader_armed()
            give(shop.reader)
            refused = await shop.shows_words(text(key, lang))
            await shop.swipe("cup_credit")  # the same sale takes the next card
            done = await shop.shows_words(text("approved", lang))
            return refused, done

    refused, done = run(go())
    assert squeezed(text(key, lang)) in squeezed(refused) and squeezed(text(key, lang)) not in squeezed(done)
    assert [row.state for row in sim.ledger.rows(TID)] == ["approved"]


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_an_ecr_sale_tells_the_lcd_and_the_till(refusal: str, tmp_path: Path, sim):
    give, key = REFUSALS[refusal]

    async def go() -> tuple[str, dict[str, Any], dict[str, Any]]:
        async with Shop(tmp_path, sim.port, ecr=True) as shop:
            assert shop.reader is not None
            reply = shop.ecr_request(op="sale", amount=1500)
            await shop.reader_armed()
            give(shop.reader)
            screen = await shop.shows_words(text(key))
            status = await shop.ecr_request(op="status")
            await shop.ecr_request(op="cancel")
            return screen, status, await reply

    screen, status, reply = run(go())
    assert "ECR" in screen
    assert status["busy"] and status["card_refused"] == {"key": key, "message": text(key)}
    assert reply["result"] == "cancelled"
    assert reply["card_refused"] == {"key": key, "message": text(key)}
    assert sim.ledger.rows(TID) == []
