"""A wrong PIN (host code 55) is said in words, with the tries left from the pin_tries setting:
on the keypad's PIN screen ("Wrong PIN - 2 tries left", "... last try"), in the result when the
tries are used up, and to the till (reply message and pin_tries_left) when the till brought
the PIN. Real terminal, panel, emulated reader and the acquirer simulator."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from ecrkit import Link, ecr_terminal
from helpers import TID, pin_for, provision, run
from panelkit import Shop

from firmware.engine import events as ev
from firmware.engine.financial import FinancialFlow, FlowContext
from firmware.engine.model import CardRead, TxnRecord, TxnRequest
from firmware.engine.states import TxnState
from firmware.host.messages import Message, Terminal, TxnKind
from firmware.i18n import text
from firmware.ui.entry import PinEntry
from firmware.ui.results import ResultScreen

CARD = "cup_debit"
WRONG = "0000"
assert pin_for(CARD) != WRONG


async def pin_screen(shop: Shop) -> None:
    """Until the PIN screen waits for its first digit."""
    assert shop.panel is not None
    panel = shop.panel
    await shop.until(lambda: isinstance(panel.ui.screen, PinEntry) and not panel.ui.screen.digits,
                     "the PIN screen")


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
@pytest.mark.parametrize("tries", [3, 4])
def test_the_keypad_says_wrong_pin_and_how_many_tries_are_left(tries: int, lang: str,
                                                               tmp_path: Path, sim):
    async def go() -> list[str]:
        async with Shop(tmp_path, sim.port, pin_tries=tries) as shop:  # 4 x 16
            assert shop.terminal is not None
            shop.terminal.settings["display"]["language"] = lang
            await shop.press("1200", "ENTER", "ENTER")
            await shop.swipe(CARD)
            seen = []
            for left in range(tries - 1, 0, -1):
                await pin_screen(shop)
                await shop.press(WRONG, "ENTER")
                words = text("pin_wrong_last", lang) if left == 1 else text("pin_wrong_left", lang, n=left)
                seen.append(await shop.shows_words(words))
            await pin_screen(shop)
            await shop.press(WRONG, "ENTER")
            await shop.until(lambda: isinstance(shop.current, ResultScreen), "the result")
            await shop.press("DOWN")  # 4 x 16: "Declined" first, the words wrap below it
            seen.append(await shop.shows_words(text("pin_tries_used", lang)))
            return seen

    seen = run(go())
    assert len(seen) == tries
    declined = sim.ledger.rows(TID)
    assert [row.state for row in declined] == ["declined"] * tries


def test_the_keypad_takes_the_right_pin_after_a_wrong_one(tmp_path: Path, sim):
    async def go() -> Any:
        async with Shop(tmp_path, sim.port) as shop:
            await shop.press("1200", "ENTER", "ENTER")
            await shop.swipe(CARD)
            await pin_screen(shop)
            await shop.press(WRONG, "ENTER")
            await shop.shows_words("Wrong PIN - 2 tries left")
            await pin_screen(shop)
            await shop.press(str(pin_for(CARD)), "ENTER")
            await shop.shows("Approved")
            return [r.state.value for r in shop.journal.records()]

    assert run(go()) == ["DECLINED", "APPROVED"]


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_an_ecr_sale_with_a_wrong_pin_asks_again_on_the_keypad(lang: str, tmp_path: Path, sim):
    async def go() -> dict[str, Any]:
        async with Shop(tmp_path, sim.port, ecr=True) as shop:
            assert shop.terminal is not None
            shop.terminal.settings["display"]["language"] = lang
            reply = shop.ecr_request(op="sale", amount=1500, card=CARD, pin=WRONG)
            await shop.shows_words(text("pin_wrong_left", lang, n=2))
            await pin_screen(shop)
            await shop.press(str(pin_for(CARD)), "ENTER")
            return await reply

    reply = run(go())
    assert reply["result"] == "approved", reply


@pytest.mark.parametrize(("tries", "key", "left"), [(3, "pin_wrong_left", 2), (2, "pin_wrong_last", 1),
                                                    (1, "pin_tries_used", None)])
@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_the_till_is_told_wrong_pin_and_the_tries_left(tries: int, key: str, left: int | None,
                                                       lang: str, tmp_path: Path, sim):
    data_dir = provision(tmp_path / "t", sim.port, pin_tries=tries)

    async def go() -> dict[str, Any]:
        async with ecr_terminal(data_dir) as (t, server):
            t.settings["display"]["language"] = lang
            link = Link(server.port)
            try:
                return await asyncio.to_thread(link.ask, op="sale", amount=1500, card=CARD, pin=WRONG)
            finally:
                link.close()

    reply = run(go())
    assert reply["result"] == "declined" and reply["code"] == "55", reply
    assert reply["message"] == text(key, lang, **({"n": left} if left else {}))
    assert reply.get("pin_tries_left") == left
    assert [row.state for row in sim.ledger.rows(TID)] == ["declined"]  # one try, nothing more sent


# -- the engine alone: the try limit, counted exactly ------------------------------------------

PIN_CARD = CardRead("swipe", "6222021000000000017", "3012", "120",
                    "6222021000000000017=30121200000000000")


def _record(attempt: int, state: TxnState) -> TxnRecord:
    return TxnRecord(id=attempt, kind=TxnKind.SALE, state=state, stan=f"{attempt:06d}",
                     batch="000001", invoice=f"{attempt:06d}", amount=1200, currency="156",
                     pan_masked="622202*********0017", foreign=False, entry_mode="swipe",
                     pin_entered=True, operator="01", local_date="1122", local_time="103000",
                     created_at=0.0, pos_entry="021")


def _wrong_pins_until_the_flow_ends(pin_tries: int, limit: int = 20) -> tuple[list, ev.Finish]:
    """Answer every PIN with 55 until the flow finishes; returns every AskPin and the Finish.
    `limit` stops a flow that would re-prompt for ever (that is the fault under test)."""
    ctx = FlowContext(term=Terminal(TID, "123456789012345"), batch="000001",
                      now=datetime(2026, 11, 22, 10, 30), reply_timeout=5.0, pin_tries=pin_tries)
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1200), ctx)
    assert isinstance(flow.start()[0], ev.AskCard)
    actions = flow.handle(ev.CardPresented(PIN_CARD))
    asks = []
    for attempt in range(1, limit + 1):
        assert isinstance(actions[-1], ev.AskPin), actions
        asks.append(actions[-1])
        assert isinstance(flow.handle(ev.PinEntered(b"\x11" * 8))[0], ev.WritePending)
        sent = flow.handle(ev.PendingWritten(_record(attempt, TxnState.PENDING)))
        assert isinstance(sent[0], ev.SendRequest)
        written = flow.handle(ev.ReplyReceived(Message("0210", {"39": "55", "11": f"{attempt:06d}"})))
        assert [w.event.value for w in written] == ["decline"]
        actions = flow.handle(ev.OutcomeWritten(_record(attempt, TxnState.DECLINED)))
        if isinstance(actions[-1], ev.Finish):
            return asks, actions[-1]
    raise AssertionError(f"still asking for the PIN after {limit} wrong ones")


@pytest.mark.parametrize("pin_tries", [1, 2, 3, 4])
def test_each_wrong_pin_is_counted_and_the_last_try_ends_the_sale(pin_tries: int):
    """Host 55 (wrong PIN) asks again with the tries left, this one included, and the
    pin_tries-th 55 ends the sale declined "tries used up": never an endless re-prompt, never
    one try fewer or one more than the setting (3 by default)."""
    asks, finish = _wrong_pins_until_the_flow_ends(pin_tries)
    assert [a.attempt for a in asks] == list(range(1, pin_tries + 1))
    assert [a.tries_left for a in asks] == [None, *range(pin_tries - 1, 0, -1)]
    result = finish.result
    assert (result.status, result.message_key, result.response_code) == (
        "declined", "pin_tries_used", "55")
    assert result.detail == f"wrong PIN {pin_tries} times"
