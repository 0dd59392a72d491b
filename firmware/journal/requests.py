"""The ECR link's request keys, kept in the journal so that a till's retry is answered, not run.

One row per (source, key) for the repeat window: the request's fingerprint (what was asked,
secrets left out), RUNNING until its reply is kept (DONE), and the journal record it wrote,
which Journal.begin sets in that record's own commit (link_in).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from firmware.engine.model import RequestKey

RUNNING = "RUNNING"  # claimed; still running, or cut by a restart before its reply was kept
DONE = "DONE"  # its reply is kept: a repeat gets it back


@dataclass(frozen=True)
class KeptRequest:
    """A request seen under a key within the window."""

    op: str
    fingerprint: str
    state: str
    txn_id: int | None  # the journal record it wrote, if it got that far
    reply: str | None  # the reply as the ECR link encoded it (DONE only)
    created_at: float


def link_in(cur: sqlite3.Cursor, key: RequestKey, txn_id: int) -> None:
    """Inside Journal.begin's commit: the request names the record it wrote, so a restart can
    never leave a record whose request does not know it (or the other way round)."""
    cur.execute("UPDATE ecr_request SET txn_id = ? WHERE source = ? AND key = ?",
                (txn_id, key.source, key.key))


class _Transactions(Protocol):
    """What the book needs of the journal (store.Journal is one; the store imports this module
    for link_in, so naming Journal here would close a circle)."""

    def transaction(self) -> AbstractContextManager[sqlite3.Cursor]: ...


class RequestBook:
    """Claim, finish or forget a request key; each in one commit of the journal."""

    def __init__(self, journal: _Transactions, clock: Callable[[], float] = time.time) -> None:
        self._journal = journal
        self._clock = clock

    def claim(self, key: RequestKey, op: str, fingerprint: str, window_s: float) -> KeptRequest | None:
        """The request already seen under `key` within the window; else None, this one now
        recorded as RUNNING. Keys older than the window are dropped in the same commit."""
        now = self._clock()
        with self._journal.transaction() as cur:
            cur.execute("DELETE FROM ecr_request WHERE created_at < ?", (now - window_s,))
            row = cur.execute(
                "SELECT op, fingerprint, state, txn_id, reply, created_at FROM ecr_request "
                "WHERE source = ? AND key = ?", (key.source, key.key)).fetchone()
            if row is not None:
                return KeptRequest(*row)
            cur.execute(
                "INSERT INTO ecr_request (source, key, op, fingerprint, state, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)", (key.source, key.key, op, fingerprint, RUNNING, now))
        return None

    def finish(self, key: RequestKey, reply: str) -> None:
        """The request answered: a repeat within the window gets this reply back."""
        with self._journal.transaction() as cur:
            cur.execute("UPDATE ecr_request SET state = ?, reply = ? WHERE source = ? AND key = ?",
                        (DONE, reply, key.source, key.key))

    def forget(self, key: RequestKey) -> None:
        """The request was refused before anything happened: a retry may run it afresh."""
        with self._journal.transaction() as cur:
            cur.execute("DELETE FROM ecr_request WHERE source = ? AND key = ?",
                        (key.source, key.key))
