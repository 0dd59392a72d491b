"""Operators at the keypad, end to end (issue 17): the real terminal with its panel, the terminal
keypad driver on a pty, the emulated reader and printer, the acquirer simulator. With operators
set up the keypad starts at the sign-in screen; a cashier signs in and sells (the idle screen,
the record, the receipt and the audit name the cashier), signs out; the supervisor signs in as
00, is refused a sale in words, and adds a cashier through Manage > Operators.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import PASSWORD, run
from panelkit import Shop, squeezed

from firmware.settings.model import hash_password, verify_password
from firmware.ui import core as ui
from firmware.ui.idle import IdleScreen
from firmware.ui.operator_screens import SignInScreen


class OperatorShop(Shop):
    """A shop whose settings have cashiers: home is the sign-in screen until someone signs in."""

    def __init__(self, tmp: Path, sim_port: int, operators: dict[str, str]) -> None:
        super().__init__(tmp, sim_port)
        path = self.data_dir / "settings.json"
        settings = json.loads(path.read_text())
        settings["security"]["operators"] = {code: hash_password(pin) for code, pin in operators.items()}
        path.write_text(json.dumps(settings))

    async def idle(self) -> None:
        """Home: the idle screen, or the sign-in screen while nobody is signed in."""
        assert self.panel is not None
        panel = self.panel
        await self.until(lambda: isinstance(panel.ui.screen, IdleScreen | SignInScreen), "home")

    async def sign_in(self, code: str, pin: str) -> str:
        await self.press(code, "ENTER", pin, "ENTER")
        panel = self.panel
        assert panel is not None
        await self.until(lambda: isinstance(panel.ui.screen, IdleScreen), "the idle screen")
        return self.screen()


def test_cashiers_sign_in_and_out_and_the_supervisor_manages_them_by_keys(tmp_path: Path, sim):
    async def go():
        async with OperatorShop(tmp_path, sim.port, {"07": "2580"}) as shop:
            seen: dict[str, str] = {"start": await shop.shows("Operator sign-in")}
            assert isinstance(shop.current, SignInScreen)
            await shop.press("07", "ENTER", "1111", "ENTER")
            seen["wrong"] = await shop.shows("Wrong PIN")
            await shop.press("CANCEL")
            # the supervisor signs in as 00, may not sell, adds cashier 09, signs out
            seen["supervisor"] = await shop.sign_in("00", PASSWORD)
            await shop.press("F1")
            seen["no_payment"] = await shop.shows_words("The supervisor takes no payments")
            await shop.press("ENTER")
            await shop.idle()
            # the app refuses it too, should a screen ever let the supervisor's sale through
            assert shop.panel is not None
            shop.panel._execute(ui.StartOp("sale", amount=100))
            seen["app_refused"] = await shop.shows_words("The supervisor takes no")  # a result
            assert shop.current.outcome.message_key == "operator_cashier_only"  # (scrolls on)
            await shop.press("ENTER")
            await shop.idle()
            await shop.press("MENU", "0", "8")
            await shop.password()
            await shop.shows("Operators", "Add operator")
            await shop.press("1", "09", "ENTER", "1357", "ENTER", "1357", "ENTER")
            seen["saved"] = await shop.shows("Operators saved")
            await shop.press("ENTER", "DOWN", "DOWN", "DOWN", "DOWN")
            await shop.shows("5 Sign out 00")
            await shop.press("5")
            await shop.shows("Operator sign-in")
            # cashier 07 sells: the idle screen, the record, the receipt and the audit name 07
            seen["idle"] = await shop.sign_in("07", "2580")
            await shop.press("1500", "ENTER", "ENTER")
            await shop.swipe("cup_credit")
            await shop.shows("Approved")
            slips = await shop.slips(2)
            await shop.press("ENTER")
            await shop.idle()
            [record] = shop.journal.records()
            # the supervisor removes 07 while 07 is signed in: back at home, the sign-in screen
            await shop.press("MENU", "0", "8")
            await shop.password()
            await shop.press("3", "07", "ENTER", "ENTER")
            await shop.shows("Operators saved")
            await shop.press("ENTER", "CANCEL", "CANCEL", "CANCEL")
            seen["removed"] = await shop.shows("Operator sign-in")
            # cashier 09 signs in with the PIN the supervisor gave, and signs out
            seen["nine"] = await shop.sign_in("09", "1357")
            await shop.press("MENU", "0", "9")  # Op. sign-out
            seen["signed_out"] = await shop.shows("Operator sign-in")
            return seen, record, slips, shop.journal.audit_lines(300), shop.data_dir

    seen, record, slips, audit, data_dir = run(go())
    assert "Wrong PIN" in seen["wrong"]
    assert "Operator 00" in seen["supervisor"] and "Operator 07" in seen["idle"]
    assert "Operator 09" in seen["nine"]
    assert record.operator == "07" and record.amount == 1500  # the only record: 00 sold nothing
    assert all("OPERATORNO.:07" in squeezed(slip) for slip in slips), slips
    rows = [(who, action, detail, outcome) for _, who, action, detail, outcome in reversed(audit)]
    assert ("07 keypad", "password for sign-in", "", "wrong") in rows
    assert ("00 keypad", "password for operators", "", "ok") in rows  # the supervisor password
    assert ("00 keypad", "operator add", "operator 09", "done") in rows
    assert ("00 keypad", "sign-out", "operator 00 by the supervisor", "done") in rows
    assert ("07 keypad", "sign-in", "operator 07", "done") in rows
    assert ("07 keypad", "operation", "sale", "requested") in rows
    # the supervisor's password typed while 07 was signed in is 07's row; the removal is 00's
    assert ("07 keypad", "password for operators", "", "ok") in rows
    assert ("00 keypad", "operator remove", "operator 07", "done") in rows
    assert ("09 keypad", "sign-out", "operator 09", "done") in rows
    assert not any(who == "keypad" for who, *_ in rows)  # no keypad row without its operator
    stored = json.loads((data_dir / "settings.json").read_text())["security"]["operators"]
    assert list(stored) == ["09"] and verify_password("1357", stored["09"])
