"""The simulator's SQLite ledger: durability settings, the totals rule, the query API."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from board.sim.ledger import Ledger
from firmware.host.messages import SideTotals

TID = "10000001"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    lg = Ledger(tmp_path / "ledger.db")
    lg.register_terminal(TID, "898100012340001", "00" * 16)
    yield lg
    lg.close()


def book(lg: Ledger, stan: int, kind: str, amount: int, *, foreign: bool = False,
         code: str = "00", batch: int = 1, mti: str = "0200") -> int:
    return lg.insert_txn(tid=TID, batch=batch, stan=stan, mti=mti, kind=kind, amount=amount,
                         currency="156", pan_masked="622588******0001", foreign=foreign,
                         rrn=lg.next_rrn() if code == "00" else None,
                         auth="123456" if code == "00" else None, response_code=code)


def test_wal_and_full_sync(ledger: Ledger, tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "ledger.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_totals_follow_the_gross_rule(ledger: Ledger) -> None:
    sale = book(ledger, 1, "sale", 1000)
    void = book(ledger, 2, "void", 1000)
    ledger.set_voided_by(sale, void)
    book(ledger, 3, "sale", 500)
    book(ledger, 4, "sale", 700, code="51")           # declined: not money
    reversed_sale = book(ledger, 5, "sale", 900)
    ledger.mark_reversed(reversed_sale)                # reversed: not money
    book(ledger, 6, "preauth", 5000, mti="0100")       # pre-auths are not money
    book(ledger, 7, "preauth_void", 5000, mti="0100")
    book(ledger, 8, "balance", 0)
    book(ledger, 9, "completion", 3000)
    book(ledger, 10, "completion_void", 3000)
    book(ledger, 11, "refund", 200, mti="0220")
    book(ledger, 12, "sale", 4000, foreign=True)
    book(ledger, 13, "sale", 1, batch=2)               # another batch
    dom, foreign = ledger.totals(TID, 1)
    assert dom == SideTotals(1000 + 500 + 3000, 3, 1000 + 3000 + 200, 3)
    assert foreign == SideTotals(4000, 1, 0, 0)
    approved = ledger.approved(TID, 1)
    assert {r.stan for r in approved} == {1, 2, 3, 6, 7, 8, 9, 10, 11, 12}
    assert ledger.find(TID, 1, 1).voided and ledger.find(TID, 1, "000005").state == "reversed"
    assert ledger.find(TID, 1, 99) is None
    assert len(ledger.approved(TID)) == 11


def test_rrns_are_unique_and_12_digits(ledger: Ledger) -> None:
    rrns = {ledger.next_rrn() for _ in range(200)}
    assert len(rrns) == 200 and all(len(r) == 12 and r.isdigit() for r in rrns)


def test_terminal_lifecycle_and_batch_close(ledger: Ledger, tmp_path: Path) -> None:
    status = ledger.terminal_status(TID)
    assert status is not None and status.status == "bound" and status.batch == 1
    assert ledger.working_keys(TID) is None
    ledger.sign_on(TID, b"\x01" * 16, b"\x02" * 16, None)
    assert ledger.working_keys(TID) == (b"\x01" * 16, b"\x02" * 16, None)
    assert "01010101" not in repr(ledger.terminal_status(TID))
    empty = SideTotals(0, 0, 0, 0)
    ledger.record_settlement(TID, 1, "1", "2", (empty, empty), (empty, empty))
    assert ledger.close_batch(TID, 1, 0) == 2
    assert ledger.close_batch(TID, 1, 0) == 2  # idempotent
    ledger.close()
    again = Ledger(tmp_path / "ledger.db")  # durable across a restart
    try:
        assert again.terminal_status(TID).batch == 2
        assert again.settlements(TID)[0]["closed"] is True
        assert again.unbind(TID) and again.terminal_status(TID).status == "unbound"
        assert again.working_keys(TID) is None
        assert not again.unbind("nobody")
        assert again.terminal_status("nobody") is None
    finally:
        again.close()
    # The fixture's close() on an already-closed connection is harmless.


def test_atomic_rolls_back(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError), ledger.atomic():
        book(ledger, 1, "sale", 1000)
        raise RuntimeError("crash mid-message")
    assert ledger.rows(TID) == []


def test_stored_replies(ledger: Ledger) -> None:
    assert ledger.stored_reply(TID, 1, 1, "0200") is None
    ledger.store_reply(TID, 1, 1, "0200", "abc", {"39": "00"})
    assert ledger.stored_reply(TID, 1, 1, "0200") == ("abc", {"39": "00"})
    assert ledger.stored_reply(TID, 1, 1, "0400") is None
