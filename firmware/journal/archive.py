"""The journal's archive: settled batches moved out of the hot journal into one SQLite file per
month, so the hot file (checked at every start, written at every sale) stays the same size for
the life of the terminal (docs/journal.md, "The archive").

A batch moves in four steps, each durable on its own, so a power cut at any instant loses
nothing and leaves nothing counted twice:

1. the hot journal records the intent (archive_log row COPYING: which settlement, which file,
   which audit rows);
2. the archive file receives a copy of the batch's records, its settlement rows and the audit
   rows in one transaction of its own (any copy left by an interrupted attempt is replaced);
3. the copy is verified against the hot rows (a SHA-256 over every column of every row);
4. the hot journal, in one transaction, marks the row MOVED with that digest and deletes the
   rows it copied (and the finished print jobs that named them).

Until step 4 commits, the hot journal is the only truth: readers of an archive skip every
settlement whose log row is not MOVED. The audit chain runs on across files: the log keeps the
chain value of the last row moved, which is where the hot journal's first row chains from.

This module owns the archive files and the move; Journal (store.py) calls it and keeps the
lookups transparent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, closing
from dataclasses import dataclass, field
from pathlib import Path

from firmware.journal import chain
from firmware.journal.durable import fsync_dir

log = logging.getLogger("posfw.journal.archive")

ARCHIVE_DIR = "archive"
FINAL_STATES = ("APPROVED", "DECLINED", "REVERSED", "VOIDED", "FAILED", "RESOLVED_MANUALLY")
OPEN_JOBS = ("QUEUED", "PRINTING", "PAUSED")
AUDIT_COLUMNS = "id, at, operator, action, detail, outcome, chain"

# A test's way to cut the power between two steps (tests/test_archive_kill.py): the named step
# calls this before it runs. None in the firmware.
step_hook: Callable[[str], None] | None = None


def _step(name: str) -> None:
    if step_hook is not None:
        step_hook(name)


def directory_for(journal_path: Path) -> Path:
    """Where a journal's archive files live: beside it, in archive/."""
    return Path(journal_path).parent / ARCHIVE_DIR


def file_for(finished_at: float) -> str:
    """The archive file of a settlement finished at this time: one per local month."""
    return time.strftime("journal-%Y-%m.sqlite", time.localtime(finished_at))


def month_end(name: str) -> float:
    """The first instant after the month an archive file holds (its retention counts from it)."""
    year, month = int(name[8:12]), int(name[13:15])
    year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return time.mktime((year, month, 1, 0, 0, 0, 0, 0, -1))


@dataclass(frozen=True)
class LogRow:
    """One archive_log row of the hot journal: what moved where."""

    settlement_id: int
    batch: str
    file: str
    state: str  # COPYING | MOVED | PURGED | WIPED
    txn_count: int
    digest: str
    audit_from: int
    audit_to: int  # audit rows audit_from..audit_to moved; none when audit_to < audit_from
    audit_hash: str  # chain value of row audit_to (the previous anchor's when none moved)
    txn_min_id: int
    txn_max_id: int


LOG_COLUMNS = ("settlement_id, batch, file, state, txn_count, digest, audit_from, audit_to, "
               "audit_hash, txn_min_id, txn_max_id")


def log_rows(conn: sqlite3.Connection, where: str = "1", args: tuple = ()) -> list[LogRow]:
    return [LogRow(*r) for r in conn.execute(
        f"SELECT {LOG_COLUMNS} FROM archive_log WHERE {where} ORDER BY settlement_id", args)]


def anchor(conn: sqlite3.Connection) -> tuple[int, str]:
    """(id, chain value) of the last audit row that left the hot journal; (0, GENESIS) if none.
    Rows of a COPYING move are still hot, so only MOVED (and later) rows count."""
    row = conn.execute("SELECT audit_to, audit_hash FROM archive_log WHERE state != 'COPYING' "
                       "AND audit_to >= audit_from ORDER BY audit_to DESC LIMIT 1").fetchone()
    return (int(row[0]), str(row[1])) if row else (0, chain.GENESIS)


def archived_max_id(conn: sqlite3.Connection) -> int:
    """The highest record id that ever left the hot journal: new records are numbered above it,
    so an id names one record for the life of the terminal."""
    row = conn.execute("SELECT MAX(txn_max_id) FROM archive_log").fetchone()
    return int(row[0] or 0)


# -- digests --------------------------------------------------------------------------------

def _columns(conn: sqlite3.Connection, schema: str, table: str) -> list[str]:
    return [r[1] for r in conn.execute(f"PRAGMA {schema}.table_info({table})")]


def _digest_rows(rows: Iterable[tuple], names: list[str]) -> tuple[int, str]:
    """(rows, SHA-256) over every non-NULL value with its column's name: a column the archive
    gains later (NULL in the rows already there) leaves the digest of those rows as it was."""
    h = hashlib.sha256()
    n = 0
    for row in rows:
        n += 1
        h.update(json.dumps([[name, v.hex() if isinstance(v, bytes) else v]
                             for name, v in zip(names, row, strict=True) if v is not None],
                            separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        h.update(b"\n")
    return n, h.hexdigest()


def batch_digest(conn: sqlite3.Connection, schema: str, settlement_id: int, columns: list[str],
                 settlement_columns: list[str], batch: str, audit_from: int,
                 audit_to: int) -> tuple[int, str]:
    """(record count, SHA-256) over one moved batch as `schema` (main or arc) holds it: its
    records, its settlement rows and its audit rows, every column, in id order."""
    cols = ", ".join(columns)
    n, txn = _digest_rows(conn.execute(
        f"SELECT {cols} FROM {schema}.txn WHERE settlement_id = ? ORDER BY id", (settlement_id,)),
        columns)
    _, stl = _digest_rows(conn.execute(
        f"SELECT {', '.join(settlement_columns)} FROM {schema}.settlement WHERE id = ? "
        "OR (batch = ? AND state = 'ABANDONED' AND id < ?) ORDER BY id",
        (settlement_id, batch, settlement_id)), settlement_columns)
    _, aud = _digest_rows(conn.execute(
        f"SELECT {AUDIT_COLUMNS} FROM {schema}.audit WHERE id BETWEEN ? AND ? ORDER BY id",
        (audit_from, audit_to)), AUDIT_COLUMNS.split(", "))
    return n, hashlib.sha256(f"{txn}{stl}{aud}".encode()).hexdigest()


# -- the move -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Move:
    """One batch moved (or refused, with the reason in words)."""

    settlement_id: int
    batch: str
    file: str
    records: int
    moved: bool
    reason: str = ""


def candidates(conn: sqlite3.Connection, keep_batches: int) -> list[tuple[int, str, float]]:
    """(settlement id, batch, finished_at) of the settled batches past the newest `keep_batches`,
    oldest first, not moved yet."""
    return [(int(a), str(b), float(c)) for a, b, c in conn.execute(
        "SELECT id, batch, finished_at FROM settlement WHERE state = 'DONE' "
        "AND id NOT IN (SELECT settlement_id FROM archive_log WHERE state != 'COPYING') "
        "AND id NOT IN (SELECT id FROM settlement WHERE state = 'DONE' ORDER BY id DESC LIMIT ?) "
        "ORDER BY id", (max(1, keep_batches),))]


def blocker(conn: sqlite3.Connection, settlement_id: int) -> str | None:
    """Why this settled batch cannot leave the hot journal yet, in words; None when it can."""
    marks = ",".join("?" * len(FINAL_STATES))
    owed = conn.execute(
        f"SELECT COUNT(*) FROM txn WHERE settlement_id = ? AND (state NOT IN ({marks}) "
        "OR script_advice = 'due')", (settlement_id, *FINAL_STATES)).fetchone()[0]
    if owed:
        return f"{owed} record(s) still owe the host a message"
    # An X report or transaction list renders from the batch's rows in the hot journal when it
    # prints (by batch number): one still queued keeps the batch here. A receipt and the Z report
    # render from the record and the settlement, which the journal finds in the archive too, so
    # those still queued (a board without a printer) do not.
    jobs = conn.execute(
        "SELECT COUNT(*) FROM print_job WHERE state IN ('QUEUED','PRINTING','PAUSED') AND "
        "batch = ? AND settlement_id IS NULL AND txn_id IS NULL",
        (batch_of(conn, settlement_id),)).fetchone()[0]
    if jobs:
        return f"{jobs} report(s) of it are not printed yet"
    return None


def batch_of(conn: sqlite3.Connection, settlement_id: int) -> str:
    return str(conn.execute("SELECT batch FROM settlement WHERE id = ?",
                            (settlement_id,)).fetchone()[0])


def _create_archive(conn: sqlite3.Connection) -> None:
    """The archive's tables, as the hot journal declares them now (its columns may grow later:
    _sync_columns), with the indexes the lookups use. No triggers: the archive is written only
    by the move, and its audit rows carry their chain."""
    for table in ("txn", "settlement", "audit"):
        sql = conn.execute("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?",
                           (table,)).fetchone()[0]
        conn.execute(sql.replace(f"CREATE TABLE {table}", f"CREATE TABLE IF NOT EXISTS arc.{table}", 1))
    for ddl in ("CREATE INDEX IF NOT EXISTS arc.txn_settlement ON txn (settlement_id)",
                "CREATE INDEX IF NOT EXISTS arc.txn_rrn ON txn (rrn) WHERE rrn IS NOT NULL",
                "CREATE INDEX IF NOT EXISTS arc.txn_invoice ON txn (invoice, batch)",
                "CREATE INDEX IF NOT EXISTS arc.txn_orig_id ON txn (orig_id) WHERE orig_id IS NOT NULL",
                "CREATE INDEX IF NOT EXISTS arc.txn_orig_rrn ON txn (orig_rrn) WHERE orig_rrn IS NOT NULL"):
        conn.execute(ddl)


def _sync_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """Columns the hot table gained since the archive file was made are added to it (NULL for
    the rows already there); returns the hot table's columns, all of which the archive has."""
    hot = list(conn.execute(f"PRAGMA main.table_info({table})"))
    have = set(_columns(conn, "arc", table))
    for _, name, kind, _notnull, default, _pk in hot:
        if name not in have:
            extra = f" DEFAULT {default}" if default is not None else ""
            conn.execute(f"ALTER TABLE arc.{table} ADD COLUMN {name} {kind}{extra}")
    return [r[1] for r in hot]


def move_one(conn: sqlite3.Connection, directory: Path, settlement_id: int, batch: str,
             finished_at: float, audit_writer: Callable[[sqlite3.Cursor, str], None],
             begin: Callable[[], AbstractContextManager[sqlite3.Cursor]]) -> Move:
    """Move one settled batch (module docstring, steps 1-4). `begin()` is the journal's durable
    transaction; `audit_writer(cur, detail)` writes the hot journal's audit line of the move.

    Foreign keys are off for the move: hot records (a later refund, a held order, an ECR request
    key) keep naming a record that now lives in the archive, where the journal's lookups find
    it; SQLite checks a reference only when its own column changes, which these never do."""
    conn.execute("PRAGMA foreign_keys = OFF")
    try:
        return _move(conn, directory, settlement_id, batch, finished_at, audit_writer, begin)
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def _move(conn: sqlite3.Connection, directory: Path, settlement_id: int, batch: str,
          finished_at: float, audit_writer: Callable[[sqlite3.Cursor, str], None],
          begin: Callable[[], AbstractContextManager[sqlite3.Cursor]]) -> Move:
    name = file_for(finished_at)
    existing = conn.execute(f"SELECT {LOG_COLUMNS} FROM archive_log WHERE settlement_id = ?",
                            (settlement_id,)).fetchone()
    if existing is None:
        reason = blocker(conn, settlement_id)
        if reason is not None:
            return Move(settlement_id, batch, name, 0, False, reason)
        _step("intent")
        with begin() as cur:
            last_id, last_hash = anchor(cur.connection)
            # The audit rows written up to the batch's settlement move with it (by id: the chain
            # is a sequence, so a prefix of it moves, whatever the clock did).
            cutoff = cur.execute("SELECT MAX(id) FROM audit WHERE at <= ?",
                                 (finished_at,)).fetchone()[0] or 0
            audit_to = max(last_id, int(cutoff))
            hash_row = cur.execute("SELECT chain FROM audit WHERE id = ?", (audit_to,)).fetchone()
            audit_hash = str(hash_row[0]) if hash_row and audit_to > last_id else last_hash
            ids = cur.execute("SELECT MIN(id), MAX(id), COUNT(*) FROM txn WHERE settlement_id = ?",
                              (settlement_id,)).fetchone()
            cur.execute(
                f"INSERT INTO archive_log ({LOG_COLUMNS}, started_at) "
                "VALUES (?,?,?,'COPYING',?,'',?,?,?,?,?,?)",
                (settlement_id, batch, name, int(ids[2]), last_id + 1, audit_to, audit_hash,
                 int(ids[0] or 0), int(ids[1] or 0), time.time()))
            _step("intent_commit")
        row = log_rows(conn, "settlement_id = ?", (settlement_id,))[0]
    else:
        row = LogRow(*existing)
        if row.state != "COPYING":
            return Move(settlement_id, batch, row.file, row.txn_count, row.state == "MOVED")
        name = row.file
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    new_file = not path.exists()
    _step("copy")
    conn.execute("ATTACH DATABASE ? AS arc", (str(path),))
    try:
        conn.execute("PRAGMA arc.journal_mode = DELETE")
        conn.execute("PRAGMA arc.synchronous = FULL")
        _create_archive(conn)
        txn_cols = _sync_columns(conn, "txn")
        stl_cols = _sync_columns(conn, "settlement")
        cols = ", ".join(txn_cols)
        scols = ", ".join(stl_cols)
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Whatever an interrupted attempt left of this batch goes first: copied once.
            conn.execute("DELETE FROM arc.txn WHERE settlement_id = ?", (settlement_id,))
            conn.execute("DELETE FROM arc.settlement WHERE id = ? OR (batch = ? AND "
                         "state = 'ABANDONED' AND id < ?)", (settlement_id, batch, settlement_id))
            conn.execute("DELETE FROM arc.audit WHERE id >= ?", (row.audit_from,))
            conn.execute(f"INSERT INTO arc.txn ({cols}) SELECT {cols} FROM main.txn "
                         "WHERE settlement_id = ?", (settlement_id,))
            conn.execute(f"INSERT INTO arc.settlement ({scols}) SELECT {scols} FROM main.settlement "
                         "WHERE id = ? OR (batch = ? AND state = 'ABANDONED' AND id < ?)",
                         (settlement_id, batch, settlement_id))
            conn.execute(f"INSERT INTO arc.audit ({AUDIT_COLUMNS}) SELECT {AUDIT_COLUMNS} "
                         "FROM main.audit WHERE id BETWEEN ? AND ?", (row.audit_from, row.audit_to))
            _step("copy_commit")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if new_file:
            fsync_dir(directory)
        _step("verify")
        hot = batch_digest(conn, "main", settlement_id, txn_cols, stl_cols, batch,
                           row.audit_from, row.audit_to)
        copy = batch_digest(conn, "arc", settlement_id, txn_cols, stl_cols, batch,
                            row.audit_from, row.audit_to)
    finally:
        conn.execute("DETACH DATABASE arc")
    if hot != copy or hot[0] != row.txn_count:
        log.error("archive copy of settlement %d does not match the journal: %s vs %s",
                  settlement_id, hot, copy)
        return Move(settlement_id, batch, name, 0, False,
                    "the archive copy does not match the journal; the batch stays in the journal")
    _step("delete")
    with begin() as cur:
        cur.execute("UPDATE archive_log SET state = 'MOVED', digest = ?, moved_at = ? "
                    "WHERE settlement_id = ? AND state = 'COPYING'",
                    (hot[1], time.time(), settlement_id))
        # The batch's finished print jobs go with it (what they printed is re-rendered from the
        # records); a receipt or Z report still queued stays and prints from the archive, and so
        # does a finished job that a void slip names.
        cur.execute(
            "DELETE FROM print_job WHERE state NOT IN ('QUEUED','PRINTING','PAUSED') AND "
            "(txn_id IN (SELECT id FROM txn WHERE settlement_id = ?) OR settlement_id = ? OR "
            "(batch = ? AND settlement_id IS NULL AND txn_id IS NULL)) AND "
            "id NOT IN (SELECT voids_job FROM print_job WHERE voids_job IS NOT NULL)",
            (settlement_id, settlement_id, batch))
        cur.execute("DELETE FROM txn WHERE settlement_id = ?", (settlement_id,))
        cur.execute("DELETE FROM settlement WHERE id = ? OR (batch = ? AND state = 'ABANDONED' "
                    "AND id < ?)", (settlement_id, batch, settlement_id))
        if row.audit_to >= row.audit_from:
            # The append-only trigger is lifted for this one statement of this one commit.
            cur.execute("DROP TRIGGER audit_no_delete")
            cur.execute("DELETE FROM audit WHERE id BETWEEN ? AND ?", (row.audit_from, row.audit_to))
            cur.execute("CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN "
                        "SELECT RAISE(ABORT, 'the audit log is append-only'); END")
        audit_writer(cur, f"batch {batch}: {row.txn_count} records to {name}")
        _step("delete_commit")
    _step("done")
    return Move(settlement_id, batch, name, row.txn_count, True)


def purge(conn: sqlite3.Connection, directory: Path, retention_days: int, now: float,
          audit_writer: Callable[[sqlite3.Cursor, str], None],
          begin: Callable[[], AbstractContextManager[sqlite3.Cursor]]) -> list[str]:
    """Delete the archive files whose month ended more than `retention_days` ago: first the hot
    journal marks their batches PURGED and audits it (one commit), then the file goes. A power cut
    between the two leaves a file nobody reads, which the next purge deletes."""
    gone: list[str] = []
    rows = log_rows(conn)
    busy = {r.file for r in rows if r.state == "COPYING"}
    for name in sorted({r.file for r in rows if r.state == "MOVED"} - busy):
        if month_end(name) + retention_days * 86400 > now:
            continue
        batches = [r for r in rows if r.file == name and r.state == "MOVED"]
        with begin() as cur:
            cur.execute("UPDATE archive_log SET state = 'PURGED' WHERE file = ? AND state = 'MOVED'",
                        (name,))
            audit_writer(cur, f"{name}: {len(batches)} batch(es), "
                              f"{sum(r.txn_count for r in batches)} records past retention deleted")
        gone.append(name)
    for name in sorted({r.file for r in log_rows(conn) if r.state == "PURGED"} - busy):
        if remove_file(directory / name):
            fsync_dir(directory)
    return gone


def remove_file(path: Path) -> bool:
    """Delete an archive file and its rollback journal, if there."""
    found = False
    for p in (path, path.with_name(path.name + "-journal")):
        try:
            p.unlink()
            found = True
        except FileNotFoundError:
            pass
    return found


def files_in(directory: Path) -> list[Path]:
    """Every archive file in the directory (what a backup copies and a wipe shreds)."""
    return sorted(directory.glob("journal-*.sqlite")) if directory.is_dir() else []


# -- reading --------------------------------------------------------------------------------

class ArchiveReader:
    """Read-only connections to the archive files, opened when first needed (never at start-up)
    and kept. Only settlements whose move is committed (MOVED) are seen."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._conns: dict[str, sqlite3.Connection] = {}
        self._columns: dict[str, set[str]] = {}

    def connection(self, name: str) -> sqlite3.Connection | None:
        conn = self._conns.get(name)
        if conn is None:
            path = self.directory / name
            if not path.is_file():
                log.warning("archive file %s is missing", path)
                return None
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            self._conns[name] = conn
            self._columns[name] = set(_columns(conn, "main", "txn"))
        return conn

    def select_list(self, name: str, wanted: Iterable[str]) -> str:
        """`wanted` as a SELECT list for this file: NULL for a column it was made without."""
        have = self._columns.get(name, set())
        return ", ".join(c if c in have else "NULL" for c in wanted)

    def forget(self, name: str | None = None) -> None:
        for key in [name] if name else list(self._conns):
            conn = self._conns.pop(key, None)
            if conn is not None:
                conn.close()
            self._columns.pop(key, None)

    def close(self) -> None:
        self.forget()


# -- checking -------------------------------------------------------------------------------

@dataclass
class ArchiveCheck:
    """What the idle-time check of the archive found (shown in Diagnostics)."""

    files: int = 0
    batches: int = 0
    records: int = 0
    problems: list[str] = field(default_factory=list)
    checked_at: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def check(directory: Path, rows: list[LogRow]) -> ArchiveCheck:
    """Every archive file's integrity, every moved batch against the digest the hot journal
    recorded when it moved, and the audit chain through the files (the hot journal's own rows
    are checked from the last moved one by Journal.audit_chain_break). Reads only; runs off the
    event loop, with the log rows read on it."""
    result = ArchiveCheck(checked_at=time.time())
    moved = [r for r in rows if r.state == "MOVED"]
    by_file: dict[str, list[LogRow]] = {}
    for r in moved:
        by_file.setdefault(r.file, []).append(r)
    previous: str | None = None  # chain value the next moved audit row must follow from
    purged = [r for r in rows if r.state in ("PURGED", "WIPED") and r.audit_to >= r.audit_from]
    if purged:
        previous = max(purged, key=lambda r: r.audit_to).audit_hash
    for name in sorted(by_file):
        path = directory / name
        if not path.is_file():
            result.problems.append(f"{name} is missing")
            continue
        result.files += 1
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            try:
                verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    result.problems.append(f"{name}: {verdict}")
                    continue
                cols = _columns(conn, "main", "txn")
                scols = _columns(conn, "main", "settlement")
                for r in by_file[name]:
                    n, digest = batch_digest(conn, "main", r.settlement_id, cols, scols, r.batch,
                                             r.audit_from, r.audit_to)
                    result.batches += 1
                    result.records += n
                    if digest != r.digest or n != r.txn_count:
                        result.problems.append(f"{name}: batch {r.batch} does not match what "
                                               "the journal recorded when it moved")
                    if r.audit_to >= r.audit_from:
                        audit = list(conn.execute(
                            f"SELECT {AUDIT_COLUMNS} FROM audit WHERE id BETWEEN ? AND ? "
                            "ORDER BY id", (r.audit_from, r.audit_to)))
                        start = previous if previous is not None else (
                            chain.GENESIS if r.audit_from == 1 else None)
                        broken = _chain_break(audit, start, r.audit_from, r.audit_to)
                        if broken is not None:
                            result.problems.append(f"{name}: audit row {broken} breaks the chain")
                        previous = r.audit_hash
            except sqlite3.Error as exc:
                result.problems.append(f"{name}: unreadable ({exc})")
    return result


def _chain_break(rows: list[tuple], previous: str | None, first: int, last: int) -> int | None:
    """The first row id in first..last that is missing or whose chain value is wrong; previous
    None: the range's first row is trusted as its own start (a purged file came before it)."""
    expected_id = first
    for rid, at, operator, action, detail, outcome, stored in rows:
        if rid != expected_id:
            return expected_id
        if previous is not None and stored != chain.row_hash(
                previous, (rid, at, operator, action, detail, outcome)):
            return int(rid)
        previous = stored
        expected_id += 1
    return expected_id if expected_id <= last else None
