"""Paired tills over the serial ECR link (a real pseudo-terminal) and across a SIGKILL: the same
pairing and envelope as on TCP; a till's last sequence number survives the terminal being
killed; on a board that takes no card data over the link "open" is refused and card data stays
refused for a paired till.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import time
import tty

from ecrkit import paired_offline, set_comms
from helpers import TID, TerminalProcess, run

from firmware.app.core.terminal import AppConfig
from firmware.app.frontends.ecr_server import EcrServer
from firmware.app.services import tills
from firmware.app.terminal import Terminal
from firmware.ecr import auth


class SerialTill:
    """The till's end of the pty: raw lines out, one reply line at a time in."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def ask_raw(self, obj: dict) -> dict:
        os.write(self.fd, json.dumps(obj).encode() + b"\n")
        deadline = time.monotonic() + 20
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no reply line, got {self.buf!r}"
            if select.select([self.fd], [], [], left)[0]:
                self.buf += os.read(self.fd, 65536)
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)


def test_a_till_pairs_and_sells_over_the_serial_link_and_a_replay_is_refused(data_dir, sim):
    set_comms(data_dir, ecr_auth="paired")
    master, slave = pty.openpty()
    tty.setraw(master)

    async def go():
        t = Terminal(AppConfig(data_dir=data_dir, printer_path="", reader_path=""))
        await t.start()
        server = EcrServer(t, "127.0.0.1", 0, os.ttyname(slave), test_cards=_sim_card())
        await server.start()
        till = SerialTill(master)
        try:
            window = tills.open_window(t, "T09")  # the code the LCD would show
            pairing = auth.TillPairing("T09", window.code)
            offer = await asyncio.to_thread(till.ask_raw, pairing.request())
            key = pairing.finish(await asyncio.to_thread(till.ask_raw, pairing.answer(offer)))
            sale = auth.sign({"op": "sale", "amount": 2500, "card": "visa", "id": "S"}, "T09", 1, key)
            approved = await asyncio.to_thread(till.ask_raw, sale)
            again = await asyncio.to_thread(till.ask_raw, sale)
            unsigned = await asyncio.to_thread(till.ask_raw, {"op": "status"})
            audits = "\n".join(" | ".join(map(str, r)) for r in t.journal.audit_lines())
        finally:
            await server.close()
            await t.close()
        return key, approved, again, unsigned, audits

    try:
        key, approved, again, unsigned, audits = run(go())
    finally:
        os.close(master)
        os.close(slave)
    checked = auth.check_reply(approved, "T09", 1, key)
    assert checked["result"] == "approved", checked
    assert again["result"] == "refused" and "mac" not in again
    assert "the last seq seen from till T09 is 1" in again["message"]
    assert unsigned["result"] == "refused" and unsigned["authenticated"] is False
    assert [(r.kind, r.amount) for r in sim.ledger.rows(TID)] == [("sale", 2500)]  # once
    assert "ecr serial /dev/pts/" in audits and "till T09" in audits


def _sim_card():
    from board.sim.firmware import sim_card

    return sim_card


def signed_request(term: TerminalProcess, till: str, key: bytes, seq: int, **request) -> dict:
    term.send_only(**auth.sign(request, till, seq, key))
    return term.reply()


def wait_ready(term: TerminalProcess, till: str, key: bytes, first_seq: int) -> int:
    """Signed status until not busy (start-up sign-on); returns the next free seq."""
    seq = first_seq
    deadline = time.monotonic() + 60
    while True:
        reply = auth.check_reply(signed_request(term, till, key, seq, op="status"), till, seq, key)
        seq += 1
        if not reply["busy"]:
            return seq
        assert time.monotonic() < deadline, "terminal stayed busy"
        time.sleep(0.05)


def test_the_last_seq_survives_a_sigkill(data_dir, sim):
    set_comms(data_dir, ecr_auth="paired")
    key = paired_offline(data_dir, "T02")
    term = TerminalProcess(data_dir)
    term.start(wait_idle=False)
    try:
        seq = wait_ready(term, "T02", key, 1)
        sale = auth.sign({"op": "sale", "amount": 1500, "card": "visa", "id": "K"}, "T02", seq, key)
        term.send_only(**sale)
        first = auth.check_reply(term.reply(), "T02", seq, key)
        assert first["result"] == "approved", first
        term.kill()  # SIGKILL: no shutdown code runs
        term.start(wait_idle=False)
        term.send_only(**sale)  # the very same bytes again
        replayed = term.reply()
        older = signed_request(term, "T02", key, seq - 1, op="status")
        newer = auth.check_reply(signed_request(term, "T02", key, seq + 1, op="status"),
                                 "T02", seq + 1, key)
    finally:
        term.stop()
    assert replayed["result"] == "refused" and "mac" not in replayed, replayed
    assert f"the last seq seen from till T02 is {seq}" in replayed["message"]
    assert older["result"] == "refused"
    assert newer["ok"] is True
    assert [(r.kind, r.amount) for r in sim.ledger.rows(TID)] == [("sale", 1500)]  # never twice


def test_open_is_refused_on_a_real_board_and_card_data_stays_refused_for_a_paired_till(
        tmp_path, sim):
    from helpers import provision

    data = provision(tmp_path / "rpi", sim.port)  # comms.ecr_auth "open", which rpi refuses
    key = paired_offline(data, "T01")
    term = TerminalProcess(data, ["--board", "rpi", "--printer", "", "--reader", ""])
    term.start(wait_idle=False)
    try:
        unsigned = term.request(op="status")
        seq = wait_ready(term, "T01", key, 1)
        with_card = signed_request(term, "T01", key, seq, op="sale", amount=100, card="visa")
    finally:
        term.stop()
    assert unsigned["result"] == "refused" and "not taken on this board" in unsigned["message"]
    checked = auth.check_reply(with_card, "T01", seq, key)  # authenticated, and still refused
    assert checked["ok"] is False and "cannot come over the ECR link on this board" in checked["message"]
    assert sim.ledger.rows(TID) == []
    assert "unauthenticated ECR requests are refused" in (data / "stderr.log").read_text()
