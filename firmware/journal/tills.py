"""The paired ECR tills: each till's key (sealed, never in clear on disk) and the last request
sequence number it used, kept in the journal so that neither a restart nor a power cut lets a
request be played again (docs/ecr.md, "Paired tills").

A till's key is sealed by the key store's vault (VaultKeys.seal, with this table's own AAD that
names the till, so a sealed key moved to another till's row does not open). Pairing, re-pairing
(the key replaced, the sequence back to 0) and unpairing are each one commit with their audit
line; so is taking a sequence number (`advance`): it is durable before the request runs.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

AAD_PREFIX = b"posfw/ecr-till/v1/"


class Sealer(Protocol):
    """firmware.ports.VaultKeys's two calls (the key store's vault key seals till keys)."""

    def seal(self, plain: bytes, aad: bytes) -> bytes: ...

    def unseal(self, blob: bytes, aad: bytes) -> bytes: ...


class _Journal(Protocol):
    def transaction(self) -> AbstractContextManager[sqlite3.Cursor]: ...

    def read(self, sql: str, args: tuple = ()) -> list[tuple]: ...

    def audit_in(self, cur: sqlite3.Cursor, operator: str, action: str, detail: str,
                 outcome: str) -> None: ...


@dataclass(frozen=True)
class Till:
    till: str
    last_seq: int
    paired_at: float
    paired_by: str


@dataclass(frozen=True)
class SeqRefused:
    """A sequence number at or below the last one taken (a replay, or an old request)."""

    last_seq: int


def aad(till: str) -> bytes:
    return AAD_PREFIX + till.encode("ascii")


class TillBook:
    """Pair, unpair, look up and advance the paired tills; each write one commit."""

    def __init__(self, journal: _Journal, sealer: Sealer,
                 clock: Callable[[], float] = time.time) -> None:
        self._journal = journal
        self._sealer = sealer
        self._clock = clock

    def pair(self, till: str, key: bytes, by: str) -> bool:
        """Keep `till`'s new key (replacing an old one: its sequence starts again at 0).
        Returns True if it replaced a key. Audited under `by` in the same commit."""
        sealed = self._sealer.seal(key, aad(till))
        with self._journal.transaction() as cur:
            replaced = cur.execute("SELECT 1 FROM ecr_till WHERE till = ?", (till,)).fetchone()
            cur.execute(
                "INSERT INTO ecr_till (till, key_sealed, last_seq, paired_at, paired_by) "
                "VALUES (?, ?, 0, ?, ?) ON CONFLICT (till) DO UPDATE SET "
                "key_sealed = excluded.key_sealed, last_seq = 0, paired_at = excluded.paired_at, "
                "paired_by = excluded.paired_by", (till, sealed, self._clock(), by))
            self._journal.audit_in(cur, by, "ecr till paired",
                                   f"till {till}" + (": its old key replaced" if replaced else ""),
                                   "done")
        return replaced is not None

    def unpair(self, till: str, by: str) -> bool:
        """Forget `till`'s key; False if it was not paired. Audited in the same commit."""
        with self._journal.transaction() as cur:
            gone = cur.execute("DELETE FROM ecr_till WHERE till = ?", (till,)).rowcount
            if gone:
                self._journal.audit_in(cur, by, "ecr till unpaired", f"till {till}", "done")
        return bool(gone)

    def key(self, till: str) -> bytes | None:
        """`till`'s key, unsealed; None if it is not paired."""
        rows = self._journal.read("SELECT key_sealed FROM ecr_till WHERE till = ?", (till,))
        if not rows:
            return None
        return self._sealer.unseal(bytes(rows[0][0]), aad(till))

    def advance(self, till: str, seq: int) -> SeqRefused | None:
        """Take `seq` for `till` if it is above the last one (durably, before the request
        runs); else the last one, refused. A till unpaired meanwhile has last 0 and no row."""
        with self._journal.transaction() as cur:
            row = cur.execute("SELECT last_seq FROM ecr_till WHERE till = ?", (till,)).fetchone()
            last = int(row[0]) if row else 0
            if row is None or seq <= last:
                return SeqRefused(last)
            cur.execute("UPDATE ecr_till SET last_seq = ? WHERE till = ?", (seq, till))
        return None

    def tills(self) -> list[Till]:
        rows = self._journal.read(
            "SELECT till, last_seq, paired_at, paired_by FROM ecr_till ORDER BY till")
        return [Till(str(t), int(s), float(at), str(by)) for t, s, at, by in rows]
