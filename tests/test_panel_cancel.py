"""CANCEL on the keypad at every step of a sale, void, refund and settlement does what the row of
docs/cancel-semantics.md for that step says: asserted on the journal, the simulator's ledger,
the LCD and the card reader, with the real terminal, panel, keypad driver and peripherals."""

from __future__ import annotations

import contextlib
import os
import pty
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import TID, TerminalProcess, run
from panelkit import KEY_BYTES, Shop

from firmware.engine.states import TxnState
from firmware.ui.entry import AmountEntry, NumberEntry
from firmware.ui.idle import IdleScreen
from firmware.ui.menu import MenuScreen

# A reply the host holds back this long is still out when CANCEL is pressed; the reply timeout
# is longer, so it is the CANCEL (not a timeout) that ends the wait.
HELD_REPLY_S = 1.0
REPLY_TIMEOUT_S = 3.0


async def approved_sale(shop: Shop, digits: str = "5000") -> Any:
    await shop.press(digits, "ENTER", "ENTER")
    await shop.swipe("cup_credit")
    await shop.shows("Approved")
    await shop.press("ENTER")
    await shop.idle()
    return shop.journal.records()[-1]


async def host_has(shop: Shop, sim: Any, kind: str) -> None:
    """Until the simulator has booked a message of this kind (its reply is being held)."""
    await shop.until(lambda: any(r.kind == kind for r in sim.ledger.rows(TID)), f"the host to book a {kind}")


async def cancel(shop: Shop) -> None:
    await shop.press("CANCEL")


# ---------------------------------------------------------------------------- the sale


async def sale_amount(shop: Shop, sim: Any) -> str | None:
    await shop.press("12")
    await shop.shows("0.12")
    await cancel(shop)
    return None


async def sale_held_card(shop: Shop, sim: Any) -> str | None:
    """A card swiped at idle, then CANCEL at the amount: the card is forgotten, not kept for later."""
    await shop.swipe_at_idle("cup_credit")
    await shop.shows("622588******0001")
    await cancel(shop)
    await shop.idle()
    assert shop.panel is not None and shop.panel._held_card is None
    await shop.press("1200", "ENTER", "ENTER")
    screen = await shop.shows("Swipe card")  # the next sale asks for a card of its own
    await shop.reader_armed()
    await cancel(shop)
    return screen


async def sale_confirm(shop: Shop, sim: Any) -> str | None:
    await shop.press("1200", "ENTER")
    await shop.shows("ENTER confirm")
    await cancel(shop)
    return None


async def sale_card(shop: Shop, sim: Any) -> str | None:
    await shop.press("1200", "ENTER", "ENTER")
    await shop.shows("Swipe card")
    await shop.reader_armed()
    await cancel(shop)
    return None


async def sale_pin(shop: Shop, sim: Any) -> str | None:
    await shop.press("1200", "ENTER", "ENTER")
    await shop.swipe("cup_debit")
    await shop.shows("Enter PIN")
    await shop.press("12")
    await cancel(shop)
    return None


async def sale_sending(shop: Shop, sim: Any) -> str | None:
    sim.add_fault("delay", mti="0200", seconds=HELD_REPLY_S)
    await shop.press("1200", "ENTER", "ENTER")
    await shop.swipe("cup_credit")
    await host_has(shop, sim, "sale")
    await cancel(shop)
    return None


async def sale_approved(shop: Shop, sim: Any) -> str | None:
    await shop.press("1200", "ENTER", "ENTER")
    await shop.swipe("cup_credit")
    await shop.shows("Approved")
    await cancel(shop)
    return None


# ---------------------------------------------------------------------------- the void


async def void_password(shop: Shop, sim: Any) -> str | None:
    await approved_sale(shop)
    await shop.press("MENU", "2", "24")
    await shop.shows("Supervisor pwd", "**")
    await cancel(shop)
    return None


async def void_voucher(shop: Shop, sim: Any) -> str | None:
    sale = await approved_sale(shop)
    await shop.press("MENU", "2")
    await shop.password()
    await shop.shows("Voucher no.")
    await shop.press(sale.invoice[-1])
    await cancel(shop)
    return None


async def void_confirm(shop: Shop, sim: Any) -> str | None:
    sale = await approved_sale(shop)
    await shop.press("MENU", "2")
    await shop.password()
    await shop.press(sale.invoice, "ENTER")
    await shop.shows("ENTER confirm")
    await cancel(shop)
    return None


async def void_sending(shop: Shop, sim: Any) -> str | None:
    sale = await approved_sale(shop)
    sim.add_fault("delay", mti="0200", seconds=HELD_REPLY_S)
    await shop.press("MENU", "2")
    await shop.password()
    await shop.press(sale.invoice, "ENTER", "ENTER")
    await host_has(shop, sim, "void")
    await cancel(shop)
    return None


async def void_approved(shop: Shop, sim: Any) -> str | None:
    sale = await approved_sale(shop)
    await shop.press("MENU", "2")
    await shop.password()
    await shop.press(sale.invoice, "ENTER", "ENTER")
    await shop.shows("Approved")
    await cancel(shop)
    return None


# ---------------------------------------------------------------------------- the refund


async def refund_until(shop: Shop, step: str) -> None:
    """A sale, then a refund of part of it, typed up to (not including) step."""
    sale = await approved_sale(shop, "8000")
    answers: list[tuple[str, tuple[str, ...]]] = [
        ("password", ()), ("amount", ("3000", "ENTER")), ("rrn", (sale.rrn, "ENTER")),
        ("date", (sale.local_date, "ENTER")), ("confirm", ("ENTER",))]
    await shop.press("MENU", "3")
    for name, keys in answers:
        if name == step:
            return
        if name == "password":
            await shop.password()
        else:
            await shop.press(*keys)


async def refund_password(shop: Shop, sim: Any) -> str | None:
    await refund_until(shop, "password")
    await shop.press("2468")
    await cancel(shop)
    return None


async def refund_amount(shop: Shop, sim: Any) -> str | None:
    await refund_until(shop, "amount")
    await shop.press("30")
    await shop.shows("Enter amount", "0.30")
    await cancel(shop)
    return None


async def refund_rrn(shop: Shop, sim: Any) -> str | None:
    await refund_until(shop, "rrn")
    await shop.press("1234")
    await shop.shows("Orig. ref. no.")
    await cancel(shop)
    return None


async def refund_date(shop: Shop, sim: Any) -> str | None:
    await refund_until(shop, "date")
    await shop.press("11")
    await shop.shows("Orig. date MMDD")
    await cancel(shop)
    return None


async def refund_confirm(shop: Shop, sim: Any) -> str | None:
    await refund_until(shop, "confirm")
    await shop.shows("30.00", "ENTER confirm")
    await cancel(shop)
    return None


async def refund_card(shop: Shop, sim: Any) -> str | None:
    await refund_until(shop, "card")
    await shop.shows("Swipe card")
    await shop.reader_armed()
    await cancel(shop)
    return None


async def refund_sending(shop: Shop, sim: Any) -> str | None:
    await refund_until(shop, "card")
    sim.add_fault("delay", mti="0220", seconds=HELD_REPLY_S)
    await shop.swipe("cup_credit")
    await host_has(shop, sim, "refund")
    await cancel(shop)
    screen = await shop.shows("Refund stored")
    await shop.until(lambda: shop.terminal is not None and not shop.terminal.busy, "the refund to end")
    assert shop.journal.records()[-1].state is TxnState.ADVICE_DUE  # stored, never reversed
    await shop.press("ENTER")
    await shop.idle()
    await approved_sale(shop, "100")
    return screen


async def refund_approved(shop: Shop, sim: Any) -> str | None:
    await refund_until(shop, "card")
    await shop.swipe("cup_credit")
    await shop.shows("Approved")
    await cancel(shop)
    return None


# ---------------------------------------------------------------------------- the settlement


async def settle_until(shop: Shop, step: str) -> None:
    await approved_sale(shop)
    await shop.press("MENU", "6", "1")
    if step == "password":
        return
    await shop.password()
    await shop.shows("Settle review", "ENTER settle")


async def settle_password(shop: Shop, sim: Any) -> str | None:
    await settle_until(shop, "password")
    await shop.press("246")
    await cancel(shop)
    return None


async def settle_confirm(shop: Shop, sim: Any) -> str | None:
    await settle_until(shop, "confirm")
    await cancel(shop)
    return None


async def settle_sent(shop: Shop, sim: Any) -> str:
    await settle_until(shop, "confirm")
    sim.add_fault("delay", mti="0500", seconds=HELD_REPLY_S)
    await shop.press("ENTER")
    await shop.shows("Settling")
    await cancel(shop)
    return await shop.shows("Cannot cancel now")


Scenario = Callable[[Shop, Any], Awaitable[str | None]]


@dataclass
class Seen:
    """What a scenario left behind, read before the shop closed."""

    at_cancel: str | None  # the LCD right after CANCEL, where the scenario looked
    screen: str  # the LCD once the terminal is idle again
    current: Any  # the screen object
    records: list[Any]
    audit: list[tuple[str, str, str]]  # (action, detail, outcome)
    settlement: Any
    batch: str


def play(tmp_path: Path, sim: Any, scenario: Scenario) -> Seen:
    async def go() -> Seen:
        async with Shop(tmp_path, sim.port, rows=8, cols=21, reply_timeout=REPLY_TIMEOUT_S) as shop:
            assert shop.reader is not None and shop.panel is not None
            reader, panel = shop.reader, shop.panel
            at_cancel = await scenario(shop, sim)
            terminal = shop.terminal
            assert terminal is not None
            await shop.until(lambda: not terminal.busy, "the operation to end")
            await shop.quiet()
            # only the idle card watch may hold the reader: a cancelled card step let it go
            await shop.until(lambda: not reader.armed or panel._watch is not None,
                             "the reader to be disarmed")
            audit = [(line[2], line[3], line[4]) for line in shop.journal.audit_lines(50)]
            return Seen(at_cancel, shop.screen(), shop.current, shop.journal.records(), audit,
                        shop.journal.last_settlement(), shop.journal.current_batch())

    return run(go())


def states(seen: Seen) -> list[tuple[str, TxnState]]:
    return [(r.kind.value, r.state) for r in seen.records]


def booked(sim: Any) -> list[tuple[str, str, bool]]:
    return [(r.kind, r.state, r.voided) for r in sim.ledger.rows(TID)]


def flat(screen: str) -> str:
    """The LCD's rows as one line: a sentence wrapped over two rows reads whole again."""
    return " ".join(screen.split())


def cancelled_in_words(seen: Seen, step: str, op: str) -> None:
    """Nothing was sent: the result says "Cancelled" and the audit log names the step."""
    assert "Cancelled" in seen.screen and "reversal" not in seen.screen, seen.screen
    assert (f"{op} cancelled", f"at step {step}", "cancelled") in seen.audit, seen.audit


# ---------------------------------------------------------------------------- the rows

BEFORE_SEND = "before_send"  # still being typed: CANCEL goes back one level, nothing exists
NOTHING_SENT = "nothing_sent"  # the operation runs, nothing went to the host: "Cancelled"
OUT = "out"  # the request is at the host: reversal (or, for the refund advice, store-and-forward)
AFTER = "after"  # approved: CANCEL only leaves the result screen

SALE = {
    "amount": (sale_amount, BEFORE_SEND, IdleScreen),
    "amount_card_swiped_first": (sale_held_card, NOTHING_SENT, None),
    "confirm": (sale_confirm, BEFORE_SEND, AmountEntry),
    "card": (sale_card, NOTHING_SENT, None),
    "pin": (sale_pin, NOTHING_SENT, None),
    "request_out": (sale_sending, OUT, None),
    "approved": (sale_approved, AFTER, IdleScreen),
}
@pytest.mark.parametrize("step", list(SALE))
def test_cancel_a_sale(step: str, tmp_path: Path, sim):
    scenario, kind, screen = SALE[step]
    seen = play(tmp_path, sim, scenario)
    if screen is not None:
        assert isinstance(seen.current, screen), seen.screen
    if kind == BEFORE_SEND:
        assert seen.records == [] and booked(sim) == []
        if step == "confirm":
            assert seen.current.amount == 1200, "back at the amount, as typed"
    elif kind == NOTHING_SENT:
        assert seen.records == [] and booked(sim) == []
        cancelled_in_words(seen, "card" if step == "amount_card_swiped_first" else step, "sale")
    elif kind == OUT:
        assert "Cancelled - reversal sent" in flat(seen.screen) and "Approved" not in seen.screen
        assert states(seen) == [("sale", TxnState.REVERSED)]
        assert seen.records[0].reversal_reason == "06"
        assert booked(sim) == [("sale", "reversed", False)]
    else:
        assert states(seen) == [("sale", TxnState.APPROVED)]
        assert booked(sim) == [("sale", "approved", False)]
        assert sim.ledger.reversals(TID) == []


VOID = {
    "password": (void_password, MenuScreen),
    "voucher": (void_voucher, MenuScreen),
    "confirm": (void_confirm, NumberEntry),
    "request_out": (void_sending, None),
    "approved": (void_approved, IdleScreen),
}


@pytest.mark.parametrize("step", list(VOID))
def test_cancel_a_void(step: str, tmp_path: Path, sim):
    scenario, screen = VOID[step]
    seen = play(tmp_path, sim, scenario)
    if screen is not None:
        assert isinstance(seen.current, screen), seen.screen
    if step in ("password", "voucher", "confirm"):
        assert states(seen) == [("sale", TxnState.APPROVED)]
        assert booked(sim) == [("sale", "approved", False)]
    elif step == "request_out":
        assert "Cancelled - reversal sent" in flat(seen.screen) and "Approved" not in seen.screen
        assert states(seen) == [("sale", TxnState.APPROVED), ("void", TxnState.REVERSED)]
        assert booked(sim) == [("sale", "approved", False), ("void", "reversed", False)]
    else:
        assert states(seen) == [("sale", TxnState.VOIDED), ("void", TxnState.APPROVED)]
        assert booked(sim) == [("sale", "approved", True), ("void", "approved", False)]


REFUND = {
    "password": (refund_password, MenuScreen),
    "amount": (refund_amount, MenuScreen),  # past the password: where it was asked from
    "rrn": (refund_rrn, AmountEntry),
    "date": (refund_date, NumberEntry),
    "confirm": (refund_confirm, NumberEntry),
    "card": (refund_card, None),
    "request_out": (refund_sending, None),
    "approved": (refund_approved, IdleScreen),
}


@pytest.mark.parametrize("step", list(REFUND))
def test_cancel_a_refund(step: str, tmp_path: Path, sim):
    scenario, screen = REFUND[step]
    seen = play(tmp_path, sim, scenario)
    if screen is not None:
        assert isinstance(seen.current, screen), seen.screen
    if step in ("password", "amount", "rrn", "date", "confirm", "card"):
        assert states(seen) == [("sale", TxnState.APPROVED)]
        assert booked(sim) == [("sale", "approved", False)]
        if step == "card":
            cancelled_in_words(seen, step, "refund")
    elif step == "request_out":
        # an advice is never reversed: it is stored and sent again until the host acknowledges it
        assert seen.at_cancel is not None and "Approved" not in seen.at_cancel
        assert "Refund stored, not confirmed yet" in flat(seen.at_cancel)
        # ... and the next sale sent it first: acknowledged once, booked once
        assert states(seen) == [("sale", TxnState.APPROVED), ("refund", TxnState.APPROVED),
                                ("sale", TxnState.APPROVED)]
        assert booked(sim) == [("sale", "approved", False), ("refund", "approved", False),
                               ("sale", "approved", False)]
    else:
        assert states(seen) == [("sale", TxnState.APPROVED), ("refund", TxnState.APPROVED)]
        assert booked(sim) == [("sale", "approved", False), ("refund", "approved", False)]


SETTLEMENT = {
    "password": (settle_password, MenuScreen),
    "confirm": (settle_confirm, MenuScreen),
    "request_sent": (settle_sent, None),
}


@pytest.mark.parametrize("step", list(SETTLEMENT))
def test_cancel_a_settlement(step: str, tmp_path: Path, sim):
    scenario, screen = SETTLEMENT[step]
    seen = play(tmp_path, sim, scenario)
    if screen is not None:
        assert isinstance(seen.current, screen), seen.screen
    if step != "request_sent":
        assert seen.settlement is None and seen.batch == "000001"
        assert states(seen) == [("sale", TxnState.APPROVED)]
    else:
        assert seen.at_cancel is not None and "Cannot cancel now" in seen.at_cancel
        assert "balanced" in seen.screen, seen.screen
        assert seen.settlement is not None and seen.settlement.batch == "000001"
        assert seen.batch != "000001"


# ---------------------------------------------------------------------------- the real process


class PtyScreen:
    """The master side of the pty a terminal process has as its keypad and LCD (the sim board's
    terminal drivers): everything drawn is read on a thread (so the process never blocks on a
    full pty) and kept; keys are written as a PC keyboard sends them."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self._drawn = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self._drawn += chunk

    def drawn(self) -> str:
        with self._lock:
            return self._drawn.decode("utf-8", "replace")

    def wait_for(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.drawn():
            assert time.monotonic() < deadline, f"{text!r} never drawn"
            time.sleep(0.05)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def test_cancel_at_the_pin_in_the_terminal_process(data_dir: Path, sim):
    """The terminal process (`python -m board.sim.firmware`) with its panel: CANCEL on the keypad
    at the PIN of an ECR sale answers "Cancelled" and sends nothing (the panel and the flow must
    agree on what CANCEL raises even when an entry point runs as __main__)."""
    screen = PtyScreen()
    term = TerminalProcess(data_dir, ["--panel", "board"], tty=screen.slave)
    try:
        term.start()
        term.send_only(op="sale", amount=1500, card="cup_debit")  # no PIN: the keypad asks
        screen.wait_for("Enter PIN")
        os.write(screen.master, KEY_BYTES["CANCEL"])
        reply = term.reply()
    finally:
        term.stop()
        screen.close()
    assert reply["result"] == "cancelled" and reply["message"] == "Cancelled", reply
    assert sim.ledger.rows(TID) == []
