"""Bad input gets a clear error in words and loses nothing: ECR garbage, a full disk
during a journal write, a corrupted journal or settings file at start-up.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import socket
from pathlib import Path

import pytest
from diskkit import fill
from helpers import TID, TerminalProcess, WireSpy, assert_agree, run, sale, terminal

from board.sim.firmware import sim_card
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.ecr.protocol import EcrError, parse_request
from firmware.ports import KeyStoreError

# -- ECR ---------------------------------------------------------------------------

BAD_LINES = [
    (b'{"op": "sale", "amount": "12.34"}', "whole number of fen"),
    (b'{"op": "sale", "amount": 12.5}', "whole number of fen"),
    (b'{"op": "sale", "amount": -5}', "greater than zero"),
    (b'{"op": "sale", "amount": true}', "whole number of fen"),
    (b'{"op": "sale", "amount": "abc"}', "whole number of fen"),
    (b'{"op": "sale"}', "sale needs amount"),
    (b'{"op": "sale", "amount": 100, "track2": "x"}', "does not take track2"),
    (b'{"op": "explode"}', "unknown op"),
    (b"[1, 2, 3]", "must be a JSON object"),
    (b"not json at all", "not valid JSON"),
    (b"\xff\xfe\x00garbage", "not valid JSON"),
    (b'{"op": "void", "voucher": "12a", "password": "1"}', "up to 6 digits"),
    (b'{"op": "refund", "amount": 1, "orig_rrn": "1", "orig_date": "13", "password": "1"}',
     "MMDD"),
]


@pytest.mark.parametrize("line,words", BAD_LINES)
def test_ecr_parser_refuses_with_words(line, words):
    with pytest.raises(EcrError, match=words):
        parse_request(line)


def test_ecr_garbage_over_tcp_then_a_sale_still_works(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        sock = socket.create_connection(("127.0.0.1", term.port), timeout=20)
        stream = sock.makefile("rwb")
        for line, words in BAD_LINES:
            stream.write(line + b"\n")
            stream.flush()
            reply = json.loads(stream.readline())
            assert reply["ok"] is False and reply["result"] == "error"
            assert words.split()[0].lower() in reply["message"].lower(), (line, reply)
        stream.write(b'{"op": "sale", "amount": ' + b"9" * 5000 + b"}\n")
        stream.flush()
        reply = json.loads(stream.readline())
        assert reply["ok"] is False and "longer than" in reply["message"]
        sock.close()
        ok = term.request(op="sale", amount=1500, card="visa")
        assert ok["result"] == "approved", ok
        assert len(sim.ledger.approved(TID)) == 1
    finally:
        term.stop()


@pytest.mark.parametrize("given", [{"card": "visa"}, {"pin": "123456"},
                                   {"card": "visa", "pin": "123456"}])
def test_card_data_over_ecr_is_refused_on_real_boards(data_dir, sim, given):
    """On a real board a request carrying card data is refused before anything runs, naming
    what it carried: a card's name, or a PIN, each alone too (a PIN without a card is still
    card data: it must be typed on the terminal's keypad, never sent by the till)."""
    from firmware.app.frontends.ecr_server import EcrServer

    async def go():
        t = Terminal(AppConfig(data_dir=data_dir, board="rpi"))
        await t.start()
        try:
            server = EcrServer(t, "127.0.0.1", 0, None, test_cards=sim_card)
            request = parse_request(json.dumps({"op": "sale", "amount": 1, **given}).encode())
            with pytest.raises(EcrError, match="cannot come over the ECR link") as caught:
                # refused at once; a sale let through would wait for a card instead
                await asyncio.wait_for(server.dispatch(request), timeout=10)
            return str(caught.value)
        finally:
            await t.close()

    assert run(go()).startswith(f"card data ({', '.join(given)})")
    assert sim.ledger.rows(TID) == []


# -- full disk -----------------------------------------------------------------------

def test_full_disk_during_journal_write_sends_nothing_and_loses_nothing(small_disk, sim):
    from helpers import provision

    data_dir = provision(small_disk / "terminal", sim.port)

    async def go():
        t = await terminal(data_dir)
        spy = WireSpy(t)
        try:
            first = await sale(t, 1000)
            assert first.status == "approved"
            filler = fill(small_disk)
            before = len(spy.sent)
            full = await sale(t, 2000)
            sent_while_full = [m.mti for m in spy.sent[before:]]
            filler.unlink()
            again = await sale(t, 3000)
            return first, full, sent_while_full, again, t.journal
        finally:
            await t.link.channel.close()

    _first, full, sent_while_full, again, journal = run(go())
    assert full.status == "failed" and full.message_key == "journal_full", full
    assert "storage is full" in full.detail and "nothing was sent" in full.detail
    assert "0200" not in sent_while_full
    assert again.status == "approved"
    assert journal.integrity() == "ok"
    assert [r.amount for r in journal.records()] == [1000, 3000]
    assert_agree(journal, sim.ledger)


# -- corrupt files at start-up -----------------------------------------------------------

def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["header", "pages"])
def test_corrupt_journal_means_service_mode_with_the_file_kept(data_dir, sim, damage):
    async def make_history():
        t = await terminal(data_dir)
        for amount in range(1000, 1040):
            await sale(t, amount)
        await t.close()

    run(make_history())
    db = data_dir / "journal.db"
    raw = bytearray(db.read_bytes())
    if damage == "header":
        raw[0:16] = b"NOT A DATABASE!!"
    else:
        # Scribble over the b-tree page headers of every other page (what a torn
        # write on a broken flash part looks like); quick_check must notice.
        page = int.from_bytes(raw[16:18], "big")
        for offset in range(page, len(raw), page * 2):
            raw[offset: offset + 12] = b"\x0d\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
    db.write_bytes(bytes(raw))
    before = sha(db)

    async def go():
        t = Terminal(AppConfig(data_dir=data_dir))
        await t.start()
        r = await sale(t, 5000)
        return t.status(), r

    status, r = run(go())
    assert status["service_mode"] and "call support" in status["service_mode"]
    assert r.status == "refused" and r.message_key == "service_mode"
    assert sha(db) == before, "the damaged journal must be kept byte for byte"
    assert len(sim.ledger.approved(TID)) == 40  # nothing new reached the host


def test_corrupt_settings_file_uses_the_last_good_version_and_says_so(data_dir, sim):
    async def first_start():
        t = await terminal(data_dir)
        t.settings_store.save(t.settings, reason="test: make a history entry")
        await t.close()

    run(first_start())
    (data_dir / "settings.json").write_text("{ this is not json")

    async def go():
        t = await terminal(data_dir)
        try:
            t.settings["display"]["language"] = "zh_CN"
            return t.notice, t.settings_store.problem, t.status(), await sale(t, 1200)
        finally:
            await t.close()

    notice, problem, status, r = run(go())
    # The log and the store keep the file and the reason; the screens and the till get words in
    # the terminal's language (issue 13 A13: no English exception text on a Chinese screen).
    assert problem and "unusable" in problem and "using the version saved" in problem
    assert notice == "settings_restored"
    assert status["notice"] == "设置文件不可用 已启用上次有效版本"
    assert status["notice_key"] == "settings_restored"
    assert r.status == "approved"


def test_card_key_file_readable_by_others_is_refused(tmp_path):
    from drivers.keystore.memory import MemoryKeyStore

    MemoryKeyStore(tmp_path).seal(b"card", b"aad")  # makes keys/card.key, 0600
    os.chmod(tmp_path / "card.key", 0o644)
    with pytest.raises(KeyStoreError, match="chmod 600"):
        MemoryKeyStore(tmp_path).seal(b"card", b"aad")


def test_missing_master_key_puts_the_terminal_in_service_mode_saying_how_to_provision(tmp_path, sim):
    from helpers import provision

    d = provision(tmp_path / "t", sim.port)
    shutil.rmtree(d / "keys")

    async def go():
        t = Terminal(AppConfig(data_dir=d))
        await t.start()
        try:
            return t.status(), t.journal
        finally:
            await t.close()

    status, journal = run(go())
    assert journal is None  # no money work without keys
    assert "provision the terminal" in status["service_mode"], status
    assert "token PIN file" in status["service_mode"]  # the first thing a start needs of keys/
