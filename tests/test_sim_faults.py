"""Each wire fault of the acquirer simulator, observed on the wire by a raw test terminal."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from board.sim.acquirer import SimulatorThread
from board.sim.cards import TEST_CARDS
from board.sim.faults import Fault, FaultBook, FaultKind
from board.sim.testkit import TEST_MID, TEST_TID, TEST_TMK, SimTerminal
from firmware.host.codec import decode
from firmware.host.errors import RemoteProtocolError
from firmware.host.framing import MAX_FRAME
from firmware.host.messages import TxnKind, financial_request

CARD = TEST_CARDS["cup_credit"]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorThread]:
    with SimulatorThread(tmp_path / "acquirer.db",
                         terminals=[(TEST_TID, TEST_MID, TEST_TMK)]) as s:
        yield s


@pytest.fixture
def term(sim: SimulatorThread) -> Iterator[SimTerminal]:
    with SimTerminal(sim.port, timeout=2.0) as t:
        assert t.sign_on().fields["39"] == "00"
        yield t


def send_sale(t: SimTerminal, amount: int = 1000):
    p = t.params(TxnKind.SALE, amount, CARD)
    t.send(financial_request(p))
    return p


def test_delay_measured(term: SimTerminal, sim: SimulatorThread) -> None:
    sim.add_fault("delay", mti="0200", seconds=0.3)
    start = time.monotonic()
    send_sale(term)
    reply = term.recv(2)
    elapsed = time.monotonic() - start
    assert reply.fields["39"] == "00"
    assert 0.25 <= elapsed < 1.5
    start = time.monotonic()
    send_sale(term)
    assert term.recv(2).fields["39"] == "00"
    assert time.monotonic() - start < 0.25  # count=1: used up


def test_delay_before_processing_lets_the_reversal_overtake(
        term: SimTerminal, sim: SimulatorThread) -> None:
    sim.add_fault("delay", mti="0200", seconds=0.4, process=False)
    p = send_sale(term, 3000)
    with SimTerminal(sim.port, keys=term.keys) as other:
        rev = other.reverse(p, "98")
        assert rev.fields["39"] == "25"
    late = term.recv(2)
    # The original arrived after its own reversal: never an approval.
    assert late.fields["39"] == "94"
    assert sim.ledger.approved(TEST_TID) == []


def test_drop_after_processing_moves_the_money(term: SimTerminal,
                                               sim: SimulatorThread) -> None:
    sim.add_fault("drop", mti="0200")
    p = send_sale(term)
    assert term.recv(0.4) is None
    assert sim.ledger.find(TEST_TID, 1, p.stan).state == "approved"
    # The reversal the terminal sends then undoes it.
    assert term.reverse(p, "98").fields["39"] == "00"
    assert sim.ledger.approved(TEST_TID) == []


def test_drop_before_processing_books_nothing(term: SimTerminal,
                                              sim: SimulatorThread) -> None:
    sim.add_fault("drop", process=False)
    send_sale(term)
    assert term.recv(0.4) is None
    assert sim.ledger.rows(TEST_TID) == []


def test_close_gives_eof(term: SimTerminal, sim: SimulatorThread) -> None:
    sim.add_fault("close", mti="0200")
    send_sale(term)
    with pytest.raises(EOFError):
        term.recv(2)
    with SimTerminal(sim.port) as again:
        assert again.sign_on().fields["39"] == "00"


def test_bad_mac_fails_verification(term: SimTerminal, sim: SimulatorThread) -> None:
    sim.add_fault("bad_mac", mti="0200", count=2)
    send_sale(term)
    approved = term.recv(2)
    assert approved.fields["39"] == "00" and not term.mac_ok(approved)
    send_sale(term, 1051)
    declined = term.recv(2)
    assert declined.fields["39"] == "51" and "64" in declined.fields
    assert not term.mac_ok(declined)
    send_sale(term)
    assert term.mac_ok(term.recv(2))


def test_wrong_stan(term: SimTerminal, sim: SimulatorThread) -> None:
    sim.add_fault("wrong_stan")
    p = send_sale(term)
    reply = term.recv(2)
    assert reply.fields["11"] == f"{int(p.stan) + 1:06d}"
    assert term.mac_ok(reply)  # the MAC covers the wrong STAN: only the STAN check catches it


@pytest.mark.parametrize("framed", [True, False])
def test_garbage(term: SimTerminal, sim: SimulatorThread, framed: bool) -> None:
    sim.add_fault("garbage", mti="0200", framed=framed)
    send_sale(term)
    assert term.sock is not None
    term.sock.settimeout(2)
    data = term.sock.recv(4096)
    length = int.from_bytes(data[:2], "big")
    if framed:
        while len(data) < 2 + length:
            data += term.sock.recv(4096)
        assert len(data) == 2 + length
        with pytest.raises(RemoteProtocolError):
            decode(data[2:])
    else:
        assert length > MAX_FRAME


def test_twice_sends_two_replies(term: SimTerminal, sim: SimulatorThread) -> None:
    sim.add_fault("twice", kind_filter="sale")
    send_sale(term)
    first, second = term.recv(2), term.recv(2)
    assert first.raw == second.raw and first.fields["39"] == "00"
    assert len(sim.ledger.rows(TEST_TID)) == 1


def test_refuse_until_cleared(sim: SimulatorThread) -> None:
    with SimTerminal(sim.port) as t:
        t.sign_on()
        sim.add_fault("refuse", count=-1)
        with pytest.raises(EOFError):  # open connections are closed too
            t.recv(2)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sim.port), timeout=2)
    sim.clear_faults()
    with SimTerminal(sim.port) as t:
        assert t.sign_on().fields["39"] == "00"


def test_refuse_for_some_seconds(sim: SimulatorThread) -> None:
    sim.add_fault("refuse", seconds=0.3)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", sim.port), timeout=2)
    time.sleep(0.5)
    with SimTerminal(sim.port) as t:
        assert t.sign_on().fields["39"] == "00"


def test_filters_and_counts(term: SimTerminal, sim: SimulatorThread) -> None:
    sim.add_fault("drop", kind_filter="void", count=-1)
    sim.add_fault("drop", mti="0100", count=2)
    send_sale(term)
    assert term.recv(1).fields["39"] == "00"  # neither filter matches a sale
    for _ in range(2):
        term.send(financial_request(term.params(TxnKind.PREAUTH, 100, CARD)))
        assert term.recv(0.3) is None
    term.send(financial_request(term.params(TxnKind.PREAUTH, 100, CARD)))
    assert term.recv(1).fields["39"] == "00"
    assert [f.kind for f in sim.sim.faults.active()] == [FaultKind.DROP]


def test_fault_applies_to_one_terminal(term: SimTerminal, sim: SimulatorThread) -> None:
    sim.add_fault("drop", tid="99999999", count=-1)
    send_sale(term)
    assert term.recv(1).fields["39"] == "00"


def test_fault_book_takes_one_replacing_fault_per_message() -> None:
    book = FaultBook()
    book.add(Fault(FaultKind.DROP))
    book.add(Fault(FaultKind.CLOSE))
    book.add(Fault(FaultKind.TWICE))
    taken = book.take("0200", "sale", TEST_TID)
    assert [f.kind for f in taken] == [FaultKind.DROP, FaultKind.TWICE]
    assert [f.kind for f in book.active()] == [FaultKind.CLOSE]


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault(FaultKind("explode"))
    with pytest.raises(ValueError):
        Fault(FaultKind.DROP, count=0)
    with pytest.raises(ValueError, match="unknown transaction kind"):
        Fault(FaultKind.DROP, kind_filter="sales")
    with pytest.raises(ValueError):
        Fault.from_json({"kind": "drop", "colour": "red"})
    assert Fault.from_json({"kind": "delay", "seconds": 1.5}).to_json()["seconds"] == 1.5
