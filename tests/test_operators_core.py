"""Operators in the running terminal (issue 17): the real Terminal against the acquirer simulator,
its journal and settings file. Without operators the terminal is the one of before (one implicit
operator); with them, sign-in counts and locks wrong PINs per cashier and across cashiers apart
from the supervisor password, the supervisor's management is saved as settings and audited,
every operation's audit rows name operator and source, and the sign-on's field 63 carries the
operator signed in.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import PASSWORD, pin_for, run, swipe, terminal
from wiretap import WireTap

from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.engine.model import TxnRequest
from firmware.host.codec import decode
from firmware.host.messages import TxnKind
from firmware.settings.model import verify_password


def _who(t: Terminal, action: str) -> list[tuple[str, str, str]]:
    """(who, detail, outcome) of the audit rows of one action, oldest first."""
    return [(who, detail, outcome) for _, who, act, detail, outcome
            in reversed(t.journal.audit_lines(500)) if act == action]


def _sign_on_operators(tap: WireTap) -> list[str]:
    """Field 63 of every sign-on the terminal sent, in order (the chip parameter downloads are
    0800s too, with no operator)."""
    sent = [decode(f.payload).message for f in tap.frames() if f.to_host]
    return [m.fields["63"] for m in sent if m.mti == "0800" and "63" in m.fields]


async def sale(t: Terminal, amount: int, source: str = "keypad", card: str = "cup_credit"):
    """A sale as the keypad (or `source`) starts it, with the operator code it would carry."""
    request = TxnRequest(TxnKind.SALE, amount, operator=t.operators.code_for(source))
    return await t.financial(request, OperatorInput(card=swipe(card), pin=pin_for(card), source=source))


def test_without_operators_the_terminal_is_the_one_of_before(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            state = (t.operators.configured, t.operators.needs_sign_in, t.operators.keypad_code(),
                     t.actor("keypad"), t.status()["operator"])
            sold = await sale(t, 1200)
            till = await sale(t, 700, "ecr tcp 127.0.0.1", "visa")
            refused = await t.operators.sign_in("01", "2580")
            return state, sold, till, refused, _who(t, "operation")
        finally:
            await t.close()

    state, sold, till, refused, operations = run(go())
    assert state == (False, False, "01", "01 keypad", None)
    assert sold.status == "approved" and sold.record.operator == "01"
    assert till.status == "approved" and till.record.operator == "01"
    assert (refused.ok, refused.key) == (False, "operators_none")  # no sign-in to do
    # each operation's first row names who asked and from where
    assert operations == [("01 keypad", "sale", "requested"),
                          ("ecr tcp 127.0.0.1", "sale", "requested")]


def test_the_supervisor_adds_a_cashier_who_signs_in_sells_and_signs_out_all_audited(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            added = await t.operators.add("07", "2580")
            before = (t.operators.configured, t.operators.needs_sign_in, t.status()["operators"])
            wrong = await t.operators.sign_in("07", "1357")
            right = await t.operators.sign_in("07", "2580")
            sold = await sale(t, 1500)
            t.cancel("keypad")  # at idle: nothing audited
            out = t.operators.sign_out()
            return (added, before, wrong, right, sold, out, t.operators.needs_sign_in,
                    t.journal.audit_lines(100))
        finally:
            await t.close()

    added, before, wrong, right, sold, out, needs_again, audit = run(go())
    assert added.ok and before == (True, True, True)
    assert (wrong.ok, wrong.key) == (False, "operator_pin_wrong") and right.ok and out.ok
    assert needs_again
    assert sold.record.operator == "07"  # the receipt's OPERATOR NO.
    rows = [(who, action, detail, outcome) for _, who, action, detail, outcome in reversed(audit)]
    assert ("00 keypad", "operator add", "operator 07", "done") in rows
    assert [r for r in rows if r[1] == "password for sign-in"] == [
        ("07 keypad", "password for sign-in", "", "wrong"),
        ("07 keypad", "password for sign-in", "", "ok")]
    assert ("07 keypad", "sign-in", "operator 07", "done") in rows
    assert ("07 keypad", "operation", "sale", "requested") in rows
    assert ("07 keypad", "sign-out", "operator 07", "done") in rows
    stored = json.loads((data_dir / "settings.json").read_text())["security"]["operators"]
    assert list(stored) == ["07"] and verify_password("2580", stored["07"])
    assert "2580" not in (data_dir / "settings.json").read_text()
    assert not any("2580" in " ".join(row) for row in rows)  # no PIN in the audit


def test_five_wrong_pins_lock_that_cashier_only_and_a_new_pin_lets_them_in(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            for code, pin in (("07", "2580"), ("08", "1357")):
                assert (await t.operators.add(code, pin)).ok
            tries = [await t.operators.sign_in("07", "9999") for _ in range(5)]
            right_but_locked = await t.operators.sign_in("07", "2580")
            other = await t.operators.sign_in("08", "1357")
            t.operators.sign_out()
            supervisor = await t.operators.sign_in("00", PASSWORD)  # 00: its own guard
            changed = await t.operators.change_pin("07", "2468")
            after = await t.operators.sign_in("07", "2468")
            return tries, right_but_locked, other, supervisor, changed, after, _who(t, "password lock")
        finally:
            await t.close()

    tries, right_but_locked, other, supervisor, changed, after, locks = run(go())
    assert [a.key for a in tries[:4]] == ["operator_pin_wrong"] * 4
    assert tries[4].key == "operator_locked_5m" and tries[4].locked_s > 290
    assert not right_but_locked.ok and right_but_locked.key == "operator_locked_5m"
    assert other.ok and supervisor.ok  # another cashier and the supervisor are not locked
    assert changed.ok and after.ok  # the new PIN cleared the lock
    assert locks == [("07 keypad", "operator 07: 5 wrong in a row", "locked 5 min")]


def test_fifteen_wrong_pins_across_cashiers_lock_every_cashier_not_the_supervisor(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            codes = ("11", "12", "13", "14")
            for code in codes:
                assert (await t.operators.add(code, "2580")).ok
            for code in codes[:3]:
                for _ in range(5):
                    await t.operators.sign_in(code, "9999")
            fresh = await t.operators.sign_in("14", "2580")  # never tried: locked by the ceiling
            supervisor = await t.operators.sign_in("00", PASSWORD)
            supervisor_guard = t.password_guard.seconds_left("keypad")
            return fresh, supervisor, supervisor_guard
        finally:
            await t.close()

    fresh, supervisor, supervisor_guard = run(go())
    assert not fresh.ok and fresh.key.startswith("operator_locked_")
    assert supervisor.ok and supervisor_guard == 0.0


def test_a_lock_outlives_a_restart_and_the_sign_in_does_not(data_dir, sim):
    async def first():
        t = await terminal(data_dir)
        try:
            assert (await t.operators.add("07", "2580")).ok
            assert (await t.operators.add("08", "1357")).ok
            assert (await t.operators.sign_in("08", "1357")).ok
            for _ in range(5):
                await t.operators.sign_in("07", "9999")
        finally:
            await t.close()

    async def second():
        t = await terminal(data_dir)
        try:
            return t.operators.signed_in, t.operators.locked_s("07"), await t.operators.sign_in("07", "2580")
        finally:
            await t.close()

    run(first())
    signed_in, left, tried = run(second())
    assert signed_in is None  # the keypad asks again after a restart
    assert left > 250 and not tried.ok


def test_removing_the_cashier_signed_in_signs_them_out_and_the_last_ends_operators(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            assert (await t.operators.add("07", "2580")).ok
            assert (await t.operators.add("08", "1357")).ok
            assert (await t.operators.sign_in("07", "2580")).ok
            unknown = await t.operators.remove("09")
            removed = await t.operators.remove("07")
            after = (t.operators.signed_in, t.operators.needs_sign_in, t.actor("keypad"))
            assert (await t.operators.add("07", "2468")).ok  # the number again: a new cashier
            again = t.operators.signed_in  # ... who has not signed in
            assert (await t.operators.remove("07")).ok
            last = await t.operators.remove("08")
            return unknown, removed, after, again, last, t.operators.configured, t.actor("keypad")
        finally:
            await t.close()

    unknown, removed, after, again, last, configured, who = run(go())
    assert again is None
    assert unknown.key == "operator_unknown" and removed.ok and last.ok
    assert after == (None, True, "-- keypad")  # 07 signed out with it; the keypad asks again
    assert not configured and who == "01 keypad"  # the last one gone: the implicit operator


def test_management_refuses_in_words_and_audits_a_refused_pin(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            answers = [await t.operators.add("00", "2580"), await t.operators.add("100", "2580"),
                       await t.operators.add("07", "1234"), await t.operators.change_pin("07", "2580")]
            assert (await t.operators.add("07", "2580")).ok
            answers.append(await t.operators.add("07", "1357"))
            return [a.key for a in answers], _who(t, "operator add")
        finally:
            await t.close()

    keys, rows = run(go())
    assert keys == ["operator_code_bad", "operator_code_bad", "operator_pin_rule_run",
                    "operator_unknown", "operator_exists"]
    assert rows == [("00 keypad", "operator 07: operator_pin_rule_run", "refused"),
                    ("00 keypad", "operator 07", "done")]


def test_the_supervisor_takes_no_payments_and_nobody_signed_in_takes_nothing(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            assert (await t.operators.add("07", "2580")).ok
            nobody = (t.operators.keypad_refusal("sale"), t.operators.keypad_refusal("settle"))
            await t.operators.sign_in("00", PASSWORD)
            supervisor = [t.operators.keypad_refusal(op) for op in ("sale", "void", "held_resume",
                                                                   "settle", "report_list")]
            return nobody, supervisor
        finally:
            await t.close()

    nobody, supervisor = run(go())
    assert nobody == ("operator_sign_in_first", "operator_sign_in_first")
    assert supervisor == ["operator_cashier_only"] * 3 + [None, None]


def test_an_ecr_requests_operator_is_its_till(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            assert (await t.operators.add("07", "2580")).ok
            await t.operators.sign_in("07", "2580")  # the keypad's operator is not the till's
            return {source: (t.operators.code_for(source), t.actor(source)) for source in (
                "ecr tcp 127.0.0.1 till T01", "ecr serial /dev/ttyS1 till 2",
                "ecr tcp 127.0.0.1 till FRONTDESK", "ecr tcp 127.0.0.1", "ecr", "keypad")}
        finally:
            await t.close()

    assert run(go()) == {
        "ecr tcp 127.0.0.1 till T01": ("T01", "ecr tcp 127.0.0.1 till T01"),
        "ecr serial /dev/ttyS1 till 2": ("2", "ecr serial /dev/ttyS1 till 2"),
        # a till id longer than field 63's 3 characters: the implicit operator (the audit names it)
        "ecr tcp 127.0.0.1 till FRONTDESK": ("01", "ecr tcp 127.0.0.1 till FRONTDESK"),
        "ecr tcp 127.0.0.1": ("01", "ecr tcp 127.0.0.1"),
        "ecr": ("01", "ecr"),
        "keypad": ("07", "07 keypad"),
    }


def test_the_sign_on_names_the_operator_signed_in_in_field_63(tmp_path: Path, sim):
    from helpers import provision

    tap = WireTap(sim.port)
    data_dir = provision(tmp_path / "terminal", tap.port)

    async def go():
        t = Terminal(AppConfig(data_dir=data_dir))
        await t.start()  # no operators: the implicit operator signs on
        try:
            assert (await t.operators.add("07", "2580")).ok
            assert await t.sign_on("keypad")  # operators, nobody signed in: the supervisor
            assert (await t.operators.sign_in("07", "2580")).ok
            assert await t.sign_on("keypad")
            return _who(t, "sign-on")
        finally:
            await t.close()

    try:
        rows = run(go())
        assert _sign_on_operators(tap) == ["01 ", "00 ", "07 "]
        # the start-up sign-on is the terminal's own; Manage > Sign on names who and where
        assert [who for who, *_ in rows] == ["system", "-- keypad", "07 keypad"]
    finally:
        tap.close()


def test_the_supervisors_sign_in_tries_are_00s_and_a_key_while_nobody_is_signed_in_nobodys(
        data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            assert (await t.operators.add("07", "2580")).ok
            nobody = t.actor("keypad")  # a CANCEL pressed at the sign-in screen, say
            wrong = await t.operators.sign_in("00", "999999")
            right = await t.operators.sign_in("00", PASSWORD)
            return nobody, wrong, right, _who(t, "password for sign-in"), t.password_guard
        finally:
            await t.close()

    nobody, wrong, right, rows, guard = run(go())
    assert nobody == "-- keypad"
    assert (wrong.ok, wrong.key, right.ok) == (False, "operator_pin_wrong", True)
    # counted where the supervisor password always is (the keypad), audited as 00's
    assert rows == [("00 keypad", "", "wrong"), ("00 keypad", "", "ok")]
    assert guard.seconds_left("keypad") == 0.0
