"""The journal's write-ahead log: the page size of a new journal, the bounds of the WAL, and the
checkpoint the app runs at idle so that no sale ever pays for one.

Theory of operation. Every journal commit appends the b-tree pages it changed to the WAL and
fsyncs it (synchronous=FULL); a checkpoint copies those pages into the database file and fsyncs
that. SQLite's own automatic checkpoint runs inside the COMMIT that crosses its threshold, so
one sale in a few hundred paid for a whole checkpoint. And once a checkpoint has copied every
frame, the next commit starts the WAL again from its head, writing and fsyncing a new WAL
header first: one more fsync, in whatever operation commits next.

So the app checkpoints at idle (firmware/app/core/checkpoint.py) with checkpoint_at_idle():
PASSIVE, then, when every frame was copied, one tiny write that starts the WAL again there and
then, paying the header's fsync at idle too. The next sale appends to a WAL that holds one page
and commits with exactly its own fsyncs. PASSIVE, not TRUNCATE: PASSIVE never waits (a reader,
such as a backup in progress, only leaves the frames it still needs for the next idle), and the
WAL file keeps its blocks (up to WAL_KEEP_BYTES), so a sale's fsync rewrites blocks the file
already has instead of growing it; TRUNCATE would wait on readers through the busy handler
(up to 5 s, on the event loop) and make every later commit grow the file again.

SQLite's automatic checkpoint stays, raised to WAL_BACKSTOP_BYTES: it acts only for a terminal
that never idles that long (back-to-back operations), and bounds the WAL all the same.
"""

from __future__ import annotations

import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# A new journal's page size. A commit writes whole pages, one per b-tree it touches (a sale
# touches about ten: the record, four indexes, the audit row, the counters), so the page size
# is most of a sale's WAL bytes: 2048 halves them against SQLite's 4096. Not 1024: the start-up
# PRAGMA quick_check and batch totals then cost about 1.7x and 1.5x the CPU (2048: 1.2x and
# 1.15x, measured on a 100k-record journal), and a chip record (field 55 and the chip's tags in
# hex) would no longer fit one 1024-byte page. An existing journal keeps its size (changing it
# means VACUUM in rollback mode: the whole file rewritten).
NEW_PAGE_SIZE: Final = 2048
# The automatic checkpoint's threshold, as bytes of WAL: SQLite's default budget (1000 pages of
# 4 KiB), whatever the page size, reached only when the app finds no idle moment to checkpoint.
WAL_BACKSTOP_BYTES: Final = 4 << 20
# What the WAL file may keep of its size once it starts again (journal_size_limit): as much as
# the backstop lets it reach, so that a commit rewrites blocks the file already has instead of
# growing it (an fdatasync that also grows the file cost ~1.5x one that does not, on ext4 here);
# only what an unusually large transaction added beyond that is given back.
WAL_KEEP_BYTES: Final = WAL_BACKSTOP_BYTES


@dataclass(frozen=True)
class Checkpoint:
    """What an idle checkpoint did."""

    frames: int  # frames the WAL held
    copied: int  # of them, copied into the database file
    restarted: bool  # the WAL was started again (every frame copied; its header fsynced now)

    @property
    def complete(self) -> bool:
        return self.copied == self.frames


def is_new(path: Path) -> bool:
    """No database yet (no file, or an empty one): the page size can still be chosen."""
    try:
        return path.stat().st_size == 0
    except FileNotFoundError:
        return True


def choose_page_size(conn: sqlite3.Connection) -> None:
    """For a new journal only, before its first page is written (journal_mode=WAL writes it)."""
    conn.execute(f"PRAGMA page_size = {NEW_PAGE_SIZE}")


def bound(conn: sqlite3.Connection) -> None:
    """The backstop checkpoint and the WAL size kept, in bytes whatever the page size."""
    page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.execute(f"PRAGMA wal_autocheckpoint = {max(1, WAL_BACKSTOP_BYTES // page_size)}")
    conn.execute(f"PRAGMA journal_size_limit = {WAL_KEEP_BYTES}")


def checkpoint_at_idle(conn: sqlite3.Connection) -> Checkpoint:
    """Copy the WAL into the database (PASSIVE: never waits) and, if every frame went, start the
    WAL again now (module docstring). Not inside a transaction."""
    if conn.in_transaction:
        raise sqlite3.OperationalError("an idle checkpoint cannot run inside a transaction")
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy or frames < 0 or copied < frames:  # a reader holds frames, or not in WAL mode
        return Checkpoint(max(frames, 0), max(copied, 0), restarted=False)
    # The first write after a complete checkpoint starts the WAL again. Rewriting user_version
    # with its own value is the smallest write there is (page 1, unchanged): its commit writes
    # and fsyncs the new WAL header here, at idle, instead of in the next sale's first commit.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute(f"PRAGMA user_version = {version}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return Checkpoint(frames, copied, restarted=True)


def wal_index(db_path: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of them already in the database file) as the WAL-index (the
    -shm file) says, without a checkpoint or a lock: for tests, benchmarks and diagnostics.
    (0, 0) when there is no WAL-index. The header is in the machine's byte order."""
    try:
        with open(f"{db_path}-shm", "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return 0, 0
    if len(head) < 100:
        return 0, 0
    return int.from_bytes(head[16:20], sys.byteorder), int.from_bytes(head[96:100], sys.byteorder)
