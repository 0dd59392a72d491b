"""Paired tills on the ECR link (issue 17; docs/ecr.md, "Paired tills"), over real TCP on
127.0.0.1: pairing from the keypad with the code read off the LCD, a paired sale, and every
refusal (unpaired, wrong MAC, replayed or old seq, missing envelope fields, a wrong pairing code)
in words, without a MAC, audited, with nothing sent to the host; re-pairing and unpairing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import re
import stat
from pathlib import Path

import pytest
from ecrkit import Link, TillLink, ecr_terminal, pair_over, pair_recorded, set_comms
from helpers import TID, run
from panelkit import Shop

from firmware.app.services import tills
from firmware.app.services.tills import _CardVaultSealer
from firmware.ecr import auth, client
from firmware.journal.store import Journal
from firmware.journal.tills import TillBook
from firmware.journal.vault import CardVault
from firmware.ports import KeyStoreError
from firmware.ui.core import StartOp

KEY = bytes(range(32))


def paired_mode(data_dir: Path) -> Path:
    set_comms(data_dir, ecr_auth="paired")
    return data_dir


def audit_text(t) -> str:
    return "\n".join(" | ".join(str(c) for c in row) for row in t.journal.audit_lines())


# -- the envelope's bytes (what a till integrator reproduces) ----------------------------------

def test_the_canonical_form_and_the_mac_a_till_must_reproduce():
    request = {"op": "sale", "amount": 1234, "ref": "收银 1", "till": "T01", "seq": 7,
               "mac": "ignored"}
    assert auth.canonical(request) == (
        '{"amount":1234,"op":"sale","ref":"收银 1","seq":7,"till":"T01"}'.encode())
    signed = auth.sign({"op": "status"}, "T01", 1, KEY)
    # the worked example of docs/ecr.md: key 00 01 .. 1f, status as seq 1 of till T01
    assert auth.canonical(signed) == b'{"op":"status","seq":1,"till":"T01"}'
    assert signed["mac"] == "1498fbaccab989d035c793c8d1ee89ff6350f573c15adaa69f5c4af87495aa08"
    assert auth.mac_ok(KEY, signed)
    assert not auth.mac_ok(KEY, {**signed, "seq": 2})
    assert not auth.mac_ok(bytes(32), signed)


def test_a_sealed_reply_checks_over_its_own_bytes_and_parsed():
    line = auth.sealed_line({"ok": True, "op": "status", "till": "T01", "seq": 3, "rtt_ms": 1.5}, KEY)
    text = line.decode().rstrip("\n")
    head, _, tail = text.rpartition(',"mac":"')
    assert hmac.new(KEY, (head + "}").encode(), hashlib.sha256).hexdigest() == tail[:-2]
    assert auth.check_reply(json.loads(text), "T01", 3, KEY)["ok"] is True


# -- pairing from the keypad, the code read off the LCD ----------------------------------------

def test_a_till_pairs_with_the_code_on_the_lcd_then_its_sale_is_answered_sealed(tmp_path, sim):
    async def go():
        shop = Shop(tmp_path, sim.port, ecr=True)
        paired_mode(shop.data_dir)
        async with shop:
            await shop.press("MENU", "0", "0")
            await shop.shows("Supervisor")  # the password first
            await shop.password()
            await shop.shows("Pair a till")
            await shop.press("1", "1", "ENTER")
            screen = await shop.shows("Code")
            code = re.search(r"Code (\d{6})", screen).group(1)
            assert "T01" in screen and "left" in screen, screen
            link = Link(shop.ecr.port)
            key = await asyncio.to_thread(pair_over, link, "T01", code)
            link.close()
            await shop.shows_words("Till T01 paired")
            till = TillLink(shop.ecr.port, "T01", key)
            sale = await asyncio.to_thread(till.ask, op="sale", amount=1234, card="cup_credit",
                                           id="S-1")
            raw = await asyncio.to_thread(till.ask, op="status")
            till.close()
            stored = shop.terminal.journal.read("SELECT key_sealed, last_seq FROM ecr_till")
            operators = shop.terminal.journal.read("SELECT operator FROM txn")
            return code, key, sale, raw, stored, audit_text(shop.terminal), operators

    code, key, sale, status, stored, audits, operators = run(go())
    assert operators == [("T01",)]  # the till is the operator of its sale (docs/operating.md)
    assert sale["result"] == "approved" and sale["till"] == "T01" and sale["seq"] == 1, sale
    assert status["ok"] is True and status["seq"] == 2
    assert [(r.kind, r.amount) for r in sim.ledger.rows(TID)] == [("sale", 1234)]
    (sealed, last_seq), = stored
    assert last_seq == 2 and key not in bytes(sealed)  # sealed, never in clear
    assert "ecr till pairing opened" in audits and "ecr till paired" in audits
    assert "ecr tcp 127.0.0.1 till T01" in audits  # the sale's source names the till
    assert code not in audits  # the code is on the screen only


def test_cancel_on_the_code_screen_closes_the_window(tmp_path, sim):
    async def go():
        shop = Shop(tmp_path, sim.port, ecr=True)
        paired_mode(shop.data_dir)
        async with shop:
            await shop.press("MENU", "0", "0")
            await shop.password()
            await shop.press("1", "7", "ENTER")
            screen = await shop.shows("Code")
            code = re.search(r"Code (\d{6})", screen).group(1)
            await shop.press("CANCEL")
            await shop.shows_words("Pairing cancelled")
            link = Link(shop.ecr.port)
            late = await asyncio.to_thread(_pair_reply, link, "T07", code)
            link.close()
            return late

    late = run(go())
    assert late["result"] == "refused" and "No pairing open for till T07" in late["message"], late


def _pair_reply(link: Link, till: str, code: str) -> dict:
    link.send(json.dumps(auth.TillPairing(till, code).request()).encode())
    return link.reply()


# -- refusals -------------------------------------------------------------------------------------

def test_unpaired_wrong_mac_replayed_old_seq_and_missing_fields_are_refused_and_audited(
        data_dir, sim):
    paired_mode(data_dir)

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            tills.book(t).pair("T01", KEY, "test")
            till = TillLink(server.port, "T01", KEY)
            replies = {}
            replies["unauthenticated"] = await asyncio.to_thread(
                Link.ask, till, op="sale", amount=100, card="visa")
            replies["unpaired"] = await asyncio.to_thread(
                TillLink.ask_raw, till, auth.sign({"op": "status"}, "T02", 1, KEY))
            forged = till.signed(op="sale", amount=100, card="visa")
            forged["amount"] = 99900  # changed on the way
            replies["bad_mac"] = await asyncio.to_thread(TillLink.ask_raw, till, forged)
            good = till.signed(op="status", id=1)
            replies["first"] = await asyncio.to_thread(TillLink.ask_raw, till, good)
            replies["replayed"] = await asyncio.to_thread(TillLink.ask_raw, till, good)
            replies["old"] = await asyncio.to_thread(
                TillLink.ask_raw, till, auth.sign({"op": "status"}, "T01", 1, KEY))
            no_seq = dict(till.signed(op="status"))
            del no_seq["seq"]
            replies["no_seq"] = await asyncio.to_thread(TillLink.ask_raw, till, no_seq)
            replies["twice"] = await asyncio.to_thread(
                _raw, till, b'{"op":"status","till":"T01","till":"T01","seq":9,"mac":"' + b"0" * 64 + b'"}')
            till.close()
            await server.close()  # the refusal log writes what it counted
            return replies, audit_text(t)

    replies, audits = run(go())
    first = replies.pop("first")
    assert first["ok"] is True and "mac" in first
    for name, reply in replies.items():
        assert reply["ok"] is False and reply["result"] == "refused", (name, reply)
        assert reply["authenticated"] is False and "mac" not in reply, (name, reply)
        assert "nothing was done" in reply["message"], (name, reply)
    assert "paired tills only" in replies["unauthenticated"]["message"]
    assert "Till T02 is not paired" in replies["unpaired"]["message"]
    assert "Wrong MAC" in replies["bad_mac"]["message"]
    # the forged request had seq 1 and took nothing: the good one is seq 2, the last seen
    assert "seq 2 refused: the last seq seen from till T01 is 2" in replies["replayed"]["message"]
    assert "seq 1 refused" in replies["old"]["message"]
    assert "no seq" in replies["no_seq"]["message"]
    assert "twice" in replies["twice"]["message"]
    assert sim.ledger.rows(TID) == []  # nothing reached the host
    assert "ecr sale refused" in audits and "paired tills only" in audits


def _raw(link: Link, line: bytes) -> dict:
    link.send(line)
    return link.reply()


def test_a_wrong_pairing_code_closes_the_window_and_is_audited(data_dir, sim):
    """SPAKE2 does not show a wrong code in message 1: the terminal answers it, the till finds
    the terminal's confirmation wrong and aborts (message 3 carries no MAC), the terminal
    closes the window as a wrong code and keeps nothing; the right code after it is too late."""
    paired_mode(data_dir)

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            window = tills.open_window(t, "T03")
            right = window.code
            wrong = f"{(int(right) + 1) % 10**6:06d}"
            link = Link(server.port)
            outcome, lines = await asyncio.to_thread(pair_recorded, link, "T03", wrong)
            right_too_late = await asyncio.to_thread(_pair_reply, link, "T03", right)
            link.close()
            return outcome, lines, right_too_late, window.state, audit_text(t), tills.book(t).tills()

    outcome, lines, late, state, audits, paired = run(go())
    assert isinstance(outcome, auth.AuthError) and "confirmation is wrong" in str(outcome)
    assert lines[1]["result"] == "confirm"  # message 1 cannot tell a wrong code
    assert lines[2] == {"op": "pair_confirm", "till": "T03", "id": "pair-2", "abort": True}
    refused = lines[3]
    assert refused["result"] == "refused" and "Wrong pairing code" in refused["message"], refused
    assert "mac" not in refused and refused["authenticated"] is False
    assert state == "wrong_code"
    assert late["result"] == "refused" and "No pairing open" in late["message"], late
    assert "wrong pairing code; pairing closed (the till found the terminal's confirmation " \
           "wrong)" in audits
    assert paired == []


def test_pairing_again_replaces_the_key_and_unpairing_removes_it(data_dir, sim):
    paired_mode(data_dir)

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            link = Link(server.port)
            first = await asyncio.to_thread(pair_over, link, "T04", tills.open_window(t, "T04").code)
            old = TillLink(server.port, "T04", first)
            before = await asyncio.to_thread(old.ask, op="status")
            second = await asyncio.to_thread(pair_over, link, "T04", tills.open_window(t, "T04").code)
            with_old_key = await asyncio.to_thread(old.ask_raw, old.signed(op="status"))
            new = TillLink(server.port, "T04", second)  # its seq starts again at 1
            after = await asyncio.to_thread(new.ask, op="status")
            done = await tills.run_op(t, StartOp("till_unpair", reference="T04", authorised=True),
                                      "en", 16)
            gone = await asyncio.to_thread(new.ask_raw, new.signed(op="status"))
            for c in (link, old, new):
                c.close()
            return first != second, before, with_old_key, after, done, gone, audit_text(t)

    differ, before, with_old_key, after, done, gone, audits = run(go())
    assert differ
    assert before["ok"] and after["ok"] and after["seq"] == 1
    assert "Wrong MAC" in with_old_key["message"]
    assert done.status == "done" and done.message_key == "till_unpaired"
    assert "Till T04 is not paired" in gone["message"]
    assert "its old key replaced" in audits and "ecr till unpaired" in audits


def test_the_client_pairs_and_signs_through_its_till_file(data_dir, sim, tmp_path):
    """`python -m firmware.ecr.client pair T05 CODE`, then any command: signed, reply checked,
    the till file 0600 with the seq written before each request leaves."""
    paired_mode(data_dir)
    till_file = tmp_path / "till" / "ecr-till.json"

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            code = tills.open_window(t, "T05").code
            args = ["--port", str(server.port), "--till-file", str(till_file)]
            paired = await asyncio.to_thread(client.main, [*args, "pair", "T05", code])
            status = await asyncio.to_thread(client.main, [*args, "status"])
            kept = json.loads(till_file.read_text())
            mode = stat.S_IMODE(os.stat(till_file).st_mode)
            refused = await asyncio.to_thread(client.main, ["--port", str(server.port),
                                                            "--till-file", str(tmp_path / "none"),
                                                            "status"])
            return paired, status, kept, mode, refused, tills.book(t).tills()

    paired, status, kept, mode, refused, book = run(go())
    assert (paired, status, refused) == (0, 0, 1)
    assert kept["till"] == "T05" and kept["seq"] == 1 and mode == 0o600
    assert [(b.till, b.last_seq) for b in book] == [("T05", 1)]


def test_a_sealed_till_key_opens_only_in_its_own_row(tmp_path):
    vault = CardVault(bytes(32))
    journal = Journal.open(tmp_path / "j.db", vault)
    book = TillBook(journal, _CardVaultSealer(vault))
    book.pair("T01", KEY, "test")
    book.pair("T02", bytes(32), "test")
    assert book.key("T01") == KEY and book.key("T03") is None
    with journal.transaction() as cur:  # T01's sealed key copied into T02's row
        cur.execute("UPDATE ecr_till SET key_sealed = (SELECT key_sealed FROM ecr_till WHERE "
                    "till = 'T01') WHERE till = 'T02'")
    with pytest.raises(KeyStoreError):  # the key store's words (VaultKeys.unseal)
        book.key("T02")
    journal.close()


def test_the_keypad_lists_and_unpairs_a_till(tmp_path, sim):
    async def go():
        shop = Shop(tmp_path, sim.port, ecr=True)
        paired_mode(shop.data_dir)
        async with shop:
            tills.book(shop.terminal).pair("T04", KEY, "test")
            await shop.press("MENU", "0", "0")
            await shop.password()
            await shop.press("3")
            await shop.shows("Paired tills", "T04 seq 0")
            await shop.press("ENTER", "2", "4", "ENTER")
            await shop.shows("Unpair T04?")
            await shop.press("ENTER")
            await shop.shows_words("Till T04 unpaired")
            return tills.book(shop.terminal).tills(), audit_text(shop.terminal)

    left, audits = run(go())
    assert left == []
    assert "ecr till unpaired | till T04" in audits
