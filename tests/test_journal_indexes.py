"""Every lookup the journal does is an index lookup, not a scan of every record (issue 19): the
SQL each Journal method really runs is captured and EXPLAINed on a journal of a few thousand
records. A scan costs nothing on a fresh journal and seconds on a full one, so only the query
plan shows it. Also migration 17 (the partial indexes rewritten so SQLite can use them): its
rows, and that schema 16 firmware still opens and writes a journal after it."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from test_journal import draft

from firmware.engine.model import HostResult
from firmware.engine.states import UNRESOLVED, TxnEvent, TxnState
from firmware.host.messages import TxnKind
from firmware.journal import schema, store
from firmware.journal.schema import PRINT_JOB_OPEN_WHERE, TXN_UNRESOLVED_WHERE
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.printing.queue import CopyKind, JobKind

VAULT = CardVault(b"k" * 32)
RECORDS = 3000


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory):
    """A journal of RECORDS approved sales (100 a batch) with their receipts printed, one record
    of each owed state, a refund of an original from elsewhere, and one receipt still queued."""
    j = Journal.open(tmp_path_factory.mktemp("indexes") / "j.db", VAULT)
    with j.transaction() as cur:  # many records fast; the states as the journal writes them
        for n in range(1, RECORDS + 1):
            cur.execute(
                "INSERT INTO txn (kind, state, stan, batch, invoice, amount, currency, pan_masked, "
                "foreign_card, entry_mode, pin_entered, operator, local_date, local_time, "
                "created_at, updated_at, rrn) VALUES ('sale', 'APPROVED', ?, ?, ?, 100, "
                "'156', '622588******1234', 0, 'swipe', 0, '01', '0101', '101010', 0, 0, ?)",
                (f"{n:06d}", f"{n // 100 + 1:06d}", f"{n:06d}", f"{n:012d}"))  # 100 a batch
            cur.execute("INSERT INTO print_job (kind, state, txn_id, copies, created_at, updated_at)"
                        " VALUES ('receipt', 'DONE', ?, 'merchant', 0, 0)", (n,))
        cur.execute("UPDATE counters SET value = ? WHERE name IN ('stan', 'invoice')", (RECORDS,))
        cur.execute("UPDATE counters SET value = ? WHERE name = 'batch'", (RECORDS // 100 + 1,))
    for quarantine in (False, True):
        r = j.begin(draft())
        j.apply(r.id, TxnEvent.LOSE_REPLY, reversal_reason="98")
        if quarantine:
            j.apply(r.id, TxnEvent.QUARANTINE, problem="test")
    j.begin(draft(kind=TxnKind.REFUND, advice=True, orig_rrn="999999999999", orig_date="0101"))
    j.begin(draft())  # PENDING
    r = j.begin(draft())
    j.apply(r.id, TxnEvent.APPROVE, HostResult("00", "000000777777", "123456"),
            receipt_copies=(CopyKind.MERCHANT,))
    j._db.execute("ANALYZE")  # as a journal that has lived a while may be; plans must hold either way
    yield j
    j.close()


def plans(j: Journal, lookup: Callable[[], object]) -> list[tuple[str, str]]:
    """(statement, its query plan) of every statement `lookup` runs."""
    seen: list[str] = []
    j._db.set_trace_callback(seen.append)
    try:
        lookup()
    finally:
        j._db.set_trace_callback(None)
    return [(sql, " / ".join(row[-1] for row in j._db.execute(f"EXPLAIN QUERY PLAN {sql}")))
            for sql in seen if sql.lstrip().upper().startswith("SELECT")]


def full_scans(plan: str) -> list[str]:
    """The steps of a plan that read a whole table (not through an index)."""
    return [step for step in plan.split(" / ")
            if step.startswith("SCAN ") and " INDEX " not in step]


LOOKUPS: dict[str, Callable[[Journal], object]] = {
    "recover's PENDING": lambda j: j.records(TxnState.PENDING),
    "reversals_due": lambda j: j.reversals_due(),
    "advices_due": lambda j: j.advices_due(),
    "quarantined": lambda j: j.quarantined(),
    "script_advices_due": lambda j: j.script_advices_due(),
    "unresolved_counts": lambda j: j.unresolved_counts(),
    "find_by_invoice": lambda j: j.find_by_invoice("000017"),
    "find_by_invoice of a kind": lambda j: j.find_by_invoice("000017", kind=TxnKind.PREAUTH),
    "find_by_rrn": lambda j: j.find_by_rrn("000000000017"),
    "follow_ups by id and RRN": lambda j: j.follow_ups(j.get(17)),
    "records of a batch": lambda j: j.records(batch="000001"),
    "totals": lambda j: j.totals("000001"),
    "declined_after_stored": lambda j: j.declined_after_stored("000001"),
    "next_print_job": lambda j: j.next_print_job(),
    "open_print_jobs": lambda j: j.open_print_jobs(),
    "print_jobs": lambda j: j.print_jobs(),
    "open_settlement": lambda j: j.open_settlement(),
}


@pytest.mark.parametrize("name", list(LOOKUPS))
def test_the_lookup_reads_through_an_index(journal: Journal, name: str) -> None:
    found = plans(journal, lambda: LOOKUPS[name](journal))
    assert found, f"{name} ran no SELECT"
    for sql, plan in found:
        # The settlement table holds one row per batch ever settled: read whole on purpose.
        scans = [s for s in full_scans(plan) if s != "SCAN settlement"]
        assert not scans, f"{name}: {sql}\n  -> {plan}"


def test_the_owed_work_the_app_asks_for_before_each_operation_is_still_right(journal: Journal) -> None:
    """The rewritten index serves the same answers: the owed records of each state."""
    assert [r.state for r in journal.reversals_due()] == [TxnState.REVERSAL_DUE]
    assert [r.state for r in journal.quarantined()] == [TxnState.QUARANTINED]
    assert [r.kind for r in journal.advices_due()] == [TxnKind.REFUND]
    assert len(journal.records(TxnState.PENDING)) == 1
    assert journal.unresolved_counts() == {"PENDING": 1, "REVERSAL_DUE": 1, "ADVICE_DUE": 1,
                                           "QUARANTINED": 1}
    assert journal.next_print_job().kind is JobKind.RECEIPT


def test_txn_unresolved_holds_exactly_the_unresolved_states() -> None:
    """The index's WHERE names every state the terminal still owes work for, and only those: a
    new unresolved state needs a migration of its own (this test says so)."""
    named = set(re.findall(r"state = '([A-Z_]+)'", TXN_UNRESOLVED_WHERE))
    assert named == {s.value for s in UNRESOLVED}
    assert " IN " not in TXN_UNRESOLVED_WHERE.upper()  # the form equality lookups can use
    assert set(re.findall(r"'([A-Z_]+)'", PRINT_JOB_OPEN_WHERE)) == {"QUEUED", "PRINTING", "PAUSED"}


def test_schema_16_firmware_opens_and_writes_a_journal_after_migration_17(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Migration 17 is additive (schema.py): firmware of schema 16 (a board fallen back to its
    previous slot) opens the journal, writes, recovers and reads it, the new indexes kept up."""
    path = tmp_path / "j.db"
    # A journal migrated up to 17 (18, the archive, is breaking: tests/test_updates_compat.py).
    monkeypatch.setattr(store, "SCHEMA_VERSION", 17)
    monkeypatch.setattr(store, "MIGRATIONS", schema.MIGRATIONS[:17])
    j = Journal.open(path, VAULT)
    pending = j.begin(draft()).id
    j.close()
    assert schema.SCHEMA_VERSION >= 17 and 17 in schema.ADDITIVE
    monkeypatch.setattr(store, "SCHEMA_VERSION", 16)
    monkeypatch.setattr(store, "MIGRATIONS", schema.MIGRATIONS[:16])
    old = Journal.open(path, VAULT)
    try:
        assert old.recover().to_reverse == 1
        refund = old.begin(draft(kind=TxnKind.REFUND, advice=True, orig_rrn="123456789012",
                                 orig_date="0101"))
        assert [r.id for r in old.reversals_due()] == [pending]
        assert [r.id for r in old.advices_due()] == [refund.id]
        assert old.integrity() == "ok"
    finally:
        old.close()
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT COUNT(*) FROM txn INDEXED BY txn_unresolved "
                          f"WHERE {TXN_UNRESOLVED_WHERE}").fetchone()[0] == 2
        assert db.execute("SELECT COUNT(*) FROM txn INDEXED BY txn_refund_orig_rrn WHERE "
                          "kind = 'refund' AND orig_rrn = '123456789012'").fetchone()[0] == 1
    finally:
        db.close()
