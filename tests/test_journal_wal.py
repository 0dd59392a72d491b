"""The journal's WAL (firmware/journal/wal.py, issue 19): a new journal's page size, the WAL's
bounds, and the checkpoint at idle that copies the WAL into the database file and starts it
again, so that the next sale neither checkpoints nor writes a new WAL header."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from test_journal import draft

from firmware.engine.model import HostResult
from firmware.engine.states import TxnEvent
from firmware.journal import wal
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault

VAULT = CardVault(b"k" * 32)
APPROVED = HostResult(response_code="00", rrn="000000000001", auth_code="123456")


def a_sale(j: Journal, amount: int = 1000) -> int:
    record = j.begin(draft(amount=amount))
    j.apply(record.id, TxnEvent.APPROVE, APPROVED)
    return record.id


def alone(db: Path, into: Path) -> sqlite3.Connection:
    """The database file by itself, as a power cut that lost the WAL would leave it."""
    shutil.copyfile(db, into)
    return sqlite3.connect(f"file:{into}?mode=ro", uri=True)


def test_a_new_journal_has_the_small_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    new = Journal.open(tmp_path / "new.db", VAULT)
    assert new._db.execute("PRAGMA page_size").fetchone()[0] == wal.NEW_PAGE_SIZE == 2048
    new.close()
    old = tmp_path / "old.db"
    sqlite3.connect(old).execute("CREATE TABLE t (x)").connection.close()  # 4096, SQLite's own
    j = Journal.open(old, VAULT)
    try:
        db = j._db
        assert db.execute("PRAGMA page_size").fetchone()[0] == 4096
        # The bounds are in bytes whatever the page size: 4 MiB of WAL, as much kept for reuse.
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (4 << 20) // 4096
        assert db.execute("PRAGMA journal_size_limit").fetchone()[0] == 4 << 20
    finally:
        j.close()
    j = Journal.open(tmp_path / "new.db", VAULT)  # reopened: still 2048, its bounds by it
    try:
        assert j._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == (4 << 20) // 2048
    finally:
        j.close()


def test_the_idle_checkpoint_puts_everything_in_the_database_and_starts_the_wal_again(
        tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    j = Journal.open(db, VAULT)
    try:
        rid = a_sale(j)
        frames, copied = wal.wal_index(db)
        assert frames > 1 and copied == 0  # the sale is in the WAL only
        done = j.checkpoint_at_idle()
        assert done is not None and done.complete and done.restarted and done.frames == frames
        # Started again at idle: one page in it (the restart's own), none of it owed to the
        # database; the sale's record is in the database file itself.
        assert wal.wal_index(db) == (1, 0)
        copy = alone(db, tmp_path / "alone.db")
        assert copy.execute("SELECT state FROM txn WHERE id = ?", (rid,)).fetchone() == ("APPROVED",)
        copy.close()
        # Nothing written since: nothing to do, nothing written.
        assert j.checkpoint_at_idle() is None
        assert wal.wal_index(db) == (1, 0)
        # The next sale appends after that page: no new start (no header to write and fsync).
        a_sale(j, 2000)
        frames, copied = wal.wal_index(db)
        assert frames > 1 and copied == 0
        assert j.checkpoint_at_idle().complete
    finally:
        j.close()


def test_a_reader_holding_the_wal_leaves_it_for_the_next_idle_moment(tmp_path: Path) -> None:
    """A backup reading the journal keeps the frames its snapshot needs: the checkpoint copies
    what it may, never waits, does not start the WAL again, and finishes at a later idle."""
    db = tmp_path / "j.db"
    j = Journal.open(db, VAULT)
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        a_sale(j)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM txn").fetchone()  # a snapshot of the WAL as it is
        a_sale(j, 2000)
        done = j.checkpoint_at_idle()
        assert done is not None and not done.complete and not done.restarted
        assert wal.wal_index(db)[0] == done.frames
        reader.execute("COMMIT")
        again = j.checkpoint_at_idle()  # a partial one does not count as done
        assert again is not None and again.complete and again.restarted
        assert wal.wal_index(db) == (1, 0)
    finally:
        reader.close()
        j.close()


def test_no_idle_checkpoint_inside_a_transaction(tmp_path: Path) -> None:
    j = Journal.open(tmp_path / "j.db", VAULT)
    try:
        a_sale(j)
        with j.transaction(), pytest.raises(sqlite3.OperationalError, match="inside a transaction"):
            wal.checkpoint_at_idle(j._db)
    finally:
        j.close()
