"""CANCEL at every input step of every financial flow, from the keypad and from the till: the
steps are the operator-input requests (engine Ask* actions) each flow really makes, learned by
running it once, so a new step is covered (or, if it is a new kind of request, this test fails).
Each CANCEL must end in "Cancelled" (till reply and LCD) with nothing sent to the host. The
keypad's own steps before an operation starts (firmware/ui/txn.py STEPS, every op) are
cancelled too: nothing starts.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import PASSWORD, TID, pin_for, run
from panelkit import Shop
from test_ui_txn import REVIEW_TICK, REVIEWED, Term, found

from firmware.app.frontends.panel import FINANCIAL
from firmware.engine import events as ev
from firmware.ui import core
from firmware.ui.entry import PinEntry
from firmware.ui.results import READ_ONLY_OPS
from firmware.ui.txn import STEPS as KEYPAD_FLOWS
from firmware.ui.txn import WorkingScreen, open_flow

CARD = "cup_debit"  # a PIN card: every flow that takes a card also asks for its PIN
PIN = pin_for(CARD)
ASKS = {cls.__name__ for cls in typing.get_args(ev.Action) if cls.__name__.startswith("Ask")}
SOURCES = ("keypad", "ecr")


async def pin_screen(shop: Shop) -> None:
    assert shop.panel is not None
    panel = shop.panel
    await shop.until(lambda: isinstance(panel.ui.screen, PinEntry), "the PIN screen")


async def give_card(shop: Shop) -> None:
    await shop.swipe(CARD)


async def give_pin(shop: Shop) -> None:
    assert PIN is not None
    await pin_screen(shop)
    await shop.press(PIN, "ENTER")


async def press_cancel(shop: Shop, source: str) -> None:
    if source == "keypad":
        await shop.press("CANCEL")
    else:
        assert (await shop.ecr_request(op="cancel"))["ok"]


async def cancel_at_card(shop: Shop, source: str) -> None:
    await shop.reader_armed()
    await press_cancel(shop, source)


async def cancel_at_pin(shop: Shop, source: str) -> None:
    await pin_screen(shop)
    await shop.press("12")  # half a PIN typed
    await press_cancel(shop, source)


async def nothing(shop: Shop, *_: Any) -> None:
    """The password comes with the request; the CANCEL for this step is made by the hook."""


# Ask* action name -> (how the step is answered, how CANCEL is pressed at it)
STEPS: dict[str, tuple[Callable[[Shop], Awaitable[None]], Callable[[Shop, str], Awaitable[None]]]] = {
    "AskAuthorisation": (nothing, nothing),
    "AskCard": (give_card, cancel_at_card),
    "AskPin": (give_pin, cancel_at_pin),
}


def test_every_operator_input_request_has_a_cancel_step():
    assert set(STEPS) == ASKS, "a new kind of operator input: say how it is answered and cancelled"


async def ecr(shop: Shop, **request: Any) -> dict[str, Any]:
    reply = await shop.ecr_request(**request)
    assert reply["ok"], reply
    return reply


async def originals(shop: Shop, kind: str) -> list[dict[str, Any]]:
    """Two of what `kind` names as its original (one spent on learning the steps), as requests."""
    def last() -> Any:
        return shop.journal.records()[-1]

    async def paid(op: str, amount: int) -> Any:
        await ecr(shop, op=op, amount=amount, card=CARD, pin=PIN)
        return last()

    requests: list[dict[str, Any]] = []
    for _ in range(2):
        if kind in ("sale", "balance", "preauth"):
            requests.append({"amount": 1200} if kind != "balance" else {})
        elif kind == "void":
            requests.append({"voucher": (await paid("sale", 1200)).invoice, "password": PASSWORD})
        elif kind == "refund":
            sale = await paid("sale", 5000)
            requests.append({"amount": 1000, "orig_rrn": sale.rrn, "orig_date": sale.local_date,
                             "password": PASSWORD})
        elif kind in ("preauth_void", "completion"):
            auth = await paid("preauth", 3000)
            extra = {"password": PASSWORD} if kind == "preauth_void" else {"amount": 2000}
            requests.append({"voucher": auth.invoice, **extra})
        elif kind == "completion_void":
            auth = await paid("preauth", 3000)
            await ecr(shop, op="completion", voucher=auth.invoice, amount=2000)
            requests.append({"voucher": last().invoice, "password": PASSWORD})
        else:
            raise AssertionError(f"no original known for {kind}: add it here")
    return requests


async def drive(shop: Shop, kind: str, request: dict[str, Any], cancel_at: str | None,
                source: str) -> tuple[list[str], dict[str, Any]]:
    """One ECR request of `kind`, every input step answered until `cancel_at`, CANCEL there
    (from `source`). Returns the steps seen and the till's reply."""
    t = shop.terminal
    assert t is not None
    seen: list[str] = []

    def hook(action: object) -> None:
        name = type(action).__name__
        if name in ASKS:
            seen.append(name)
            if name == cancel_at == "AskAuthorisation":
                t.cancel(source)  # CANCEL while the password is checked
    t.fault_hook = hook
    reply_task = shop.ecr_request(op=kind, **request)
    handled = 0
    try:
        while True:
            await shop.until(lambda n=handled: len(seen) > n or reply_task.done(), f"{kind}'s next step")
            if len(seen) == handled:
                break
            step = seen[handled]
            handled += 1
            answer, cancel = STEPS[step]
            if step == cancel_at:
                await cancel(shop, source)
                break
            await answer(shop)
        return seen, await reply_task
    finally:
        t.fault_hook = None


async def back_to_idle(shop: Shop) -> None:
    assert shop.terminal is not None
    terminal = shop.terminal
    await shop.until(lambda: not terminal.busy, "the operation to end")
    await shop.press("ENTER")
    await shop.idle()


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("kind", sorted(FINANCIAL))
def test_cancel_at_every_input_step(kind: str, source: str, tmp_path: Path, sim):
    async def go() -> None:
        async with Shop(tmp_path, sim.port, rows=8, cols=21, ecr=True) as shop:
            learn, request = await originals(shop, kind)
            steps, reply = await drive(shop, kind, learn, None, source)
            assert reply["ok"] and reply["result"] == "approved", reply
            await back_to_idle(shop)
            for step in steps:
                booked = sim.ledger.rows(TID)
                records = shop.journal.records()
                _, reply = await drive(shop, kind, request, step, source)
                assert (reply["result"], reply["message"]) == ("cancelled", "Cancelled"), (step, reply)
                await shop.shows("Cancelled")
                assert sim.ledger.rows(TID) == booked, f"{kind}: something reached the host at {step}"
                assert shop.journal.records() == records
                await back_to_idle(shop)

    run(go())  # a completion asks for nothing: its card and amount come from the pre-auth


# ---------------------------------------------------------------------------- the keypad's steps
# What the keypad asks before an operation starts (firmware/ui/txn.py STEPS): CANCEL at each
# step of each operation starts nothing, so nothing can reach the host. Sans-I/O, every op.

ORIGINAL_KIND = {"void": "sale", "preauth_void": "preauth", "completion_void": "completion",
                 "completion": "preauth"}


def answer_step(term: Term, op: str, step: str) -> None:
    """The operator answers one keypad step of op (the app's answers fed where it gives them)."""
    if step == "password":
        term.keys("1 2 3 4 5 6 ENTER")
        term.feed(core.PasswordChecked(True))
    elif step == "amount":
        term.keys("5 0 0 ENTER")
    elif step == "voucher":
        term.keys("1 ENTER")
    elif step == "original":
        term.feed(found("000001", ORIGINAL_KIND[op]))
    elif step == "rrn":
        term.keys("1 2 3 4 5 6 7 8 9 0 1 2 ENTER")
    elif step == "date":
        term.keys("0 1 0 1 ENTER")
    else:
        raise AssertionError(f"a keypad step this test does not know: {step!r} (in {op})")


KEYPAD_STEPS = [(op, i, step) for op, steps in KEYPAD_FLOWS.items() for i, step in enumerate(steps)]


@pytest.mark.parametrize(("op", "index", "step"), KEYPAD_STEPS,
                         ids=[f"{op}-{step}" for op, _, step in KEYPAD_STEPS])
def test_cancel_at_every_keypad_step_starts_nothing(op: str, index: int, step: str) -> None:
    term = Term()
    idle = term.screen
    term.ui.screen = open_flow(op, idle, term.ctx()).screen
    for before in KEYPAD_FLOWS[op][:index]:
        answer_step(term, op, before)
    if step == "confirm" and op == "settle":  # the settlement's confirm is its review
        term.feed(REVIEW_TICK)
        term.feed(REVIEWED)
    term.keys("CANCEL")
    started = [c for c in term.commands if isinstance(c, core.StartOp) and c.op not in READ_ONLY_OPS]
    assert started == [], (op, step)  # only readings (the settlement's review) ran
    assert not isinstance(term.screen, WorkingScreen), term.text()
