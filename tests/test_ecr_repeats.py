"""A till's retry never charges twice (issue 12, item 10): the same request key within the
window is answered with the first outcome, marked "repeat", and nothing goes to the host.
"""

from __future__ import annotations

import asyncio
import json
import time

from ecrkit import Link, ecr_terminal
from helpers import PASSWORD, TID, TerminalProcess, provision, run

from board.sim.firmware import sim_card
from firmware.app.core.terminal import AppConfig
from firmware.app.frontends.ecr_repeats import UNPROTECTED_OPS
from firmware.app.frontends.ecr_server import EcrServer
from firmware.app.terminal import Terminal
from firmware.engine.model import PendingDraft, RequestKey
from firmware.host.messages import TxnKind
from firmware.journal.requests import RequestBook
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault

SALE = {"op": "sale", "amount": 4321, "card": "visa", "id": "T-100"}
SAME_FIELDS = ("voucher", "rrn", "auth", "amount", "batch", "result", "state")


def sales_at_host(sim) -> list:
    return [r for r in sim.ledger.rows(TID) if r.kind == "sale"]


def test_a_retried_sale_gets_the_first_outcome_and_reaches_the_host_once(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        first = term.request(**SALE)
        again = term.request(**SALE)
        other_port = Link(term.port)  # the till reconnected: a new port, the same address
        third = other_port.ask(**SALE)
        other_port.close()
    finally:
        term.stop()
    assert first["result"] == "approved" and "repeat" not in first
    for repeat in (again, third):
        assert repeat["repeat"] is True and repeat["id"] == "T-100"
        assert {k: repeat[k] for k in SAME_FIELDS} == {k: first[k] for k in SAME_FIELDS}
    assert len(sales_at_host(sim)) == 1


def test_a_ref_names_a_request_without_an_id_per_op(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        sale = term.request(op="sale", amount=500, card="visa", ref="R-55")
        retry = term.request(op="sale", amount=500, card="visa", ref="R-55")
        void = term.request(op="void", voucher=sale["voucher"], password=PASSWORD, ref="R-55")
        park = term.request(op="held_park", amount=800, ref="R-56")
        park_again = term.request(op="held_park", amount=800, ref="R-56")
        orders = term.request(op="held_list")["orders"]
    finally:
        term.stop()
    assert retry["repeat"] is True and retry["voucher"] == sale["voucher"]
    assert void["result"] == "approved" and "repeat" not in void  # another op, the same ref
    assert park_again["repeat"] is True and park_again["order"] == park["order"]
    assert [o["reference"] for o in orders] == ["R-56"]
    assert len(sales_at_host(sim)) == 1


def test_the_same_id_for_a_different_request_is_refused_and_not_run(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        first = term.request(op="sale", amount=100, card="visa", id=7)
        other = term.request(op="sale", amount=200, card="visa", id=7)
        other_op = term.request(op="preauth", amount=100, card="visa", id=7)
    finally:
        term.stop()
    assert first["result"] == "approved"
    for refused in (other, other_op):
        assert refused["ok"] is False and refused["result"] == "refused", refused
        assert "already used for a different request" in refused["message"]
        assert "voucher" not in refused and "repeat" not in refused
    assert [(r.kind, r.amount) for r in sim.ledger.rows(TID)] == [("sale", 100)]


def test_a_refused_request_is_forgotten_so_that_its_retry_runs(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        sale = term.request(op="sale", amount=900, card="visa")
        wrong = term.request(op="void", voucher=sale["voucher"], password="999999", id="V-1")
        right = term.request(op="void", voucher=sale["voucher"], password=PASSWORD, id="V-1")
    finally:
        term.stop()
    assert wrong["result"] == "refused"
    assert right["result"] == "approved" and "repeat" not in right


def test_a_repeat_while_the_first_still_runs_waits_for_its_outcome(data_dir, sim):
    request = json.dumps({"op": "sale", "amount": 777, "id": "W-1"}).encode()  # waits for a card

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            first_link, retry_link = Link(server.port), Link(server.port)
            first_link.send(request)
            first = asyncio.ensure_future(asyncio.to_thread(first_link.reply))
            deadline = time.monotonic() + 20
            while not t.busy:  # the sale waits for its card
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            retry_link.send(request)  # the till timed out and retried, on a new connection
            retry = asyncio.ensure_future(asyncio.to_thread(retry_link.reply))
            card_link = Link(server.port)
            card_link.send(b'{"op": "present_card", "card": "visa"}')
            presented = await asyncio.to_thread(card_link.reply)
            replies = await asyncio.gather(first, retry)
            for link in (first_link, retry_link, card_link):
                link.close()
            return presented, replies

    presented, (first, retry) = run(go())
    assert presented["ok"] is True
    assert first["result"] == "approved" and "repeat" not in first
    assert retry["repeat"] is True and retry["voucher"] == first["voucher"] and retry["id"] == "W-1"
    assert len(sales_at_host(sim)) == 1


def test_a_repeat_after_a_kill_between_record_and_reply_gets_the_record_as_it_is_now(tmp_path, sim):
    data_dir = provision(tmp_path / "slow", sim.port, reply_timeout=20.0)
    term = TerminalProcess(data_dir)
    term.start()
    try:
        sim.add_fault("delay", mti="0200", seconds=30.0, count=1)  # booked, answer held back
        term.send_only(**SALE)
        deadline = time.monotonic() + 20
        while not sales_at_host(sim):
            assert time.monotonic() < deadline, "the sale never reached the host"
            time.sleep(0.02)
        term.kill()  # the record is written (PENDING), the till has no answer
        sim.clear_faults()
        cut = sales_at_host(sim)[0]
        term.start()  # start-up: the unknown outcome is reversed
        repeat = term.request(**SALE)
        while repeat["result"] == "reversal_pending":
            assert time.monotonic() < deadline + 20, repeat
            time.sleep(0.1)
            repeat = term.request(**SALE)
    finally:
        term.stop()
    assert repeat["repeat"] is True and repeat["result"] == "reversed", repeat
    assert repeat["state"] == "REVERSED" and repeat["amount"] == cut.amount
    assert "restarted before answering" in repeat["detail"]
    assert len(sales_at_host(sim)) == 1  # nothing new was sent for the repeat
    assert sim.ledger.reversal_seen(TID, cut.batch, cut.stan)


def test_a_repeat_of_a_request_cut_before_its_record_says_interrupted_and_runs_nothing(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        term.send_only(op="sale", amount=250, id="I-1")  # no card yet: nothing written, nothing sent
        watcher = Link(term.port)
        deadline = time.monotonic() + 20
        while not watcher.ask(op="status")["busy"]:
            assert time.monotonic() < deadline
        watcher.close()
        term.kill()
        term.start()
        repeat = term.request(op="sale", amount=250, id="I-1")
        busy = term.request(op="status")["busy"]
    finally:
        term.stop()
    assert repeat["repeat"] is True and repeat["result"] == "interrupted" and repeat["ok"] is False
    assert "no transaction was written" in repeat["message"]
    assert busy is False  # the repeat did not start a sale waiting for a card
    assert sim.ledger.rows(TID) == []


def test_a_request_cut_by_a_shutdown_is_answered_from_what_it_wrote(data_dir, sim):
    request = b'{"op": "sale", "amount": 90, "id": "C-1"}'  # waits for a card

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            link = Link(server.port)
            link.send(request)
            deadline = time.monotonic() + 20
            while not t.busy:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            await server.close()  # the terminal stops while the sale waits for its card
            link.close()
            again = EcrServer(t, "127.0.0.1", 0, None, test_cards=sim_card)
            await again.start()
            retry = Link(again.port)
            retry.send(request)
            reply = await asyncio.to_thread(retry.reply)
            retry.close()
            await again.close()
            return reply, t.busy

    reply, busy = run(go())
    assert reply["repeat"] is True and reply["result"] == "interrupted", reply
    assert busy is False and sim.ledger.rows(TID) == []


def test_read_only_ops_are_not_remembered(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        replies = [term.request(op=op, id="R") for op in ("status", "status", "last", "held_list")]
    finally:
        term.stop()
    assert all("repeat" not in r for r in replies), replies
    assert {"status", "last", "lookup", "held_list", "review", "print_jobs"} <= UNPROTECTED_OPS
    assert not {"sale", "void", "refund", "settle", "held_park", "held_resume", "held_cancel",
                "set_password", "resolve_reversal", "deregister", "reprint", "print_test",
                "print_cancel", "print_confirm", "print_report"} & UNPROTECTED_OPS


def test_keys_are_kept_for_the_window_then_forgotten(tmp_path):
    now = [1000.0]
    journal = Journal.open(tmp_path / "j.db", CardVault(bytes(32)))
    book = RequestBook(journal, clock=lambda: now[0])
    key = RequestKey("ecr tcp 10.0.0.7", 'id "A"')
    assert book.claim(key, "sale", "f1", window_s=60) is None
    book.finish(key, '{"ok":true}')
    now[0] += 59
    kept = book.claim(key, "sale", "f1", window_s=60)
    assert kept is not None and kept.state == "DONE" and kept.reply == '{"ok":true}'
    assert book.claim(RequestKey("ecr tcp 10.0.0.8", 'id "A"'), "sale", "f1", 60) is None  # another till
    now[0] += 2
    assert book.claim(key, "sale", "f1", window_s=60) is None  # past the window: a new request
    journal.close()


def test_the_record_names_its_request_in_its_own_commit(tmp_path):
    journal = Journal.open(tmp_path / "j.db", CardVault(bytes(32)))
    key = RequestKey("ecr serial /dev/ttyS3", "id 5")
    RequestBook(journal).claim(key, "sale", "f", 60)
    draft = PendingDraft(kind=TxnKind.SALE, amount=100, currency="156", pan="6222021234567890128",
                         pan_masked="622202*********0128", foreign=False, entry_mode="swipe",
                         pin_entered=False, operator="01", local_date="0101", local_time="120000",
                         request_key=key)
    record = journal.begin(draft)
    kept = RequestBook(journal).claim(key, "sale", "f", 60)
    assert kept is not None and kept.txn_id == record.id and kept.state == "RUNNING"
    journal.close()


def test_a_terminal_without_a_journal_still_answers(tmp_path):
    """Service mode (journal damaged): no key can be kept; requests are answered, not queued."""
    data = provision(tmp_path / "t", 1)
    (data / "journal.db").write_bytes(b"not a database" * 100)

    async def go():
        t = Terminal(AppConfig(data_dir=data))
        await t.open()
        server = EcrServer(t, "127.0.0.1", 0, None, test_cards=sim_card)
        await server.start()
        link = Link(server.port)
        link.send(json.dumps(SALE).encode())
        reply = await asyncio.to_thread(link.reply)
        link.close()
        await server.close()
        await t.close()
        return reply

    reply = run(go())
    assert reply["ok"] is False and reply["result"] == "refused" and reply["id"] == "T-100"
