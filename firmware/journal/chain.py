"""The audit log's hash chain: each row carries SHA-256 of the previous row's hash and its own
content, so a row changed, removed or slipped in (with the SQL triggers dropped, or the file
edited) shows as the first row whose hash no longer matches. Pure: no SQL beyond the cursor
the journal's migration hands in.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable

GENESIS = "0" * 64  # what the first row chains to
AuditRow = tuple[int, float, str, str, str, str]  # id, at, operator, action, detail, outcome


def row_hash(previous: str, row: AuditRow) -> str:
    """The chain value of one row: SHA-256 over the previous row's value and every column.

    `at` goes in as repr(float): SQLite keeps a REAL as the same IEEE double, so the text is
    the same when the row is read back.
    """
    rid, at, operator, action, detail, outcome = row
    content = [previous, int(rid), repr(float(at)), operator, action, detail, outcome]
    return hashlib.sha256(json.dumps(content, ensure_ascii=False, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


def first_break(rows: Iterable[tuple[int, float, str, str, str, str, str | None]],
                previous: str = GENESIS) -> int | None:
    """The id of the first row (in id order) whose chain value is wrong or missing; None if the
    whole chain holds. previous: what the first row chains from (the genesis, or the last row
    that moved into the archive)."""
    for *row, stored in rows:
        expected = row_hash(previous, (row[0], row[1], row[2], row[3], row[4], row[5]))
        if stored != expected:
            return int(row[0])
        previous = stored
    return None


def chain_existing(cur: sqlite3.Cursor) -> None:
    """Migration step: give every row written before the chain existed its value, once, in id
    order (the journal's migration runs it with the append-only UPDATE trigger lifted)."""
    previous = GENESIS
    rows = cur.execute("SELECT id, at, operator, action, detail, outcome FROM audit ORDER BY id"
                       ).fetchall()
    for row in rows:
        previous = row_hash(previous, row)
        cur.execute("UPDATE audit SET chain = ? WHERE id = ?", (previous, row[0]))
