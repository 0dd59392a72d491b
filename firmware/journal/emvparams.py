"""The chip parameter tables in the journal database: CA public keys (emv_capk), AID
parameters (emv_aid) and their versions (emv_param_version, migration 14 in schema.py).

Owns storing a downloaded table (the whole table swapped in ONE SQL transaction: a power cut
at any instant leaves either the old table and version or the new ones, never a mix) and
loading what the kernel gets (`load_emv_params`). Nothing downloaded yet: the built-in CUP
AIDs with their terminal action codes and no CA key at all, as on a terminal never loaded
(offline data authentication then fails and the TVR says so).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, fields
from typing import Final, Protocol

from firmware.emv.params import BUILT_IN_EMV_PARAMS, AidParams, Capk, EmvParams

__all__ = ["BUILTIN_AIDS", "TableStatus", "load_emv_params", "store_aids", "store_capks",
           "table_status", "version_of"]

# The built-in AIDs (docs/dialect.md, "Chip parameters"): CUP debit and credit, partial
# selection, floor limit 0 (every transaction online), the terminal action codes of CUP
# terminals (default D84000A800, online D84004F800, denial 0010000000).
BUILTIN_AIDS: Final = BUILT_IN_EMV_PARAMS.aids  # until the host sends its own (params.py)


class _Companion(Protocol):
    """What firmware.journal.store.Journal offers its companions."""

    def transaction(self) -> AbstractContextManager[sqlite3.Cursor]: ...

    def read(self, sql: str, args: tuple = ()) -> list[tuple]: ...


Db = sqlite3.Connection | _Companion


@dataclass(frozen=True)
class TableStatus:
    """What diagnostics show of one table: its version ("" = built-in), rows, when."""

    table: str
    version: str
    count: int
    downloaded_at: float | None


@contextmanager
def _tx(db: Db) -> Iterator[sqlite3.Cursor]:
    if isinstance(db, sqlite3.Connection):
        cur = db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")
    else:
        with db.transaction() as cur:
            yield cur


def _read(db: Db, sql: str, args: tuple = ()) -> list[tuple]:
    if isinstance(db, sqlite3.Connection):
        return db.execute(sql, args).fetchall()
    return db.read(sql, args)


def _aid_json(params: AidParams) -> str:
    out: dict[str, object] = {}
    for f in fields(params):
        value = getattr(params, f.name)
        out[f.name] = value.hex() if isinstance(value, bytes) else value
    return json.dumps(out, sort_keys=True)


def _aid_from_json(text: str) -> AidParams:
    data = json.loads(text)
    kinds = {f.name: f.type for f in fields(AidParams)}
    kw = {k: bytes.fromhex(v) if kinds.get(k) in (bytes, "bytes") else v
          for k, v in data.items() if k in kinds}
    return AidParams(**kw)


def version_of(items: list[Capk] | list[AidParams]) -> str:
    """A table's version: a digest of its content, so the same download gives the same
    version and diagnostics can compare it with the host's."""
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, Capk):
            h.update(item.rid + bytes([item.index]) + item.modulus + item.exponent
                     + item.expiry.encode())
        else:
            h.update(_aid_json(item).encode())
    return h.hexdigest()[:12].upper()


def _set_version(cur: sqlite3.Cursor, table: str, version: str, count: int) -> None:
    cur.execute("INSERT INTO emv_param_version (tbl, version, count, seq, downloaded_at) "
                "VALUES (?, ?, ?, 1, ?) ON CONFLICT (tbl) DO UPDATE SET version = excluded.version, "
                "count = excluded.count, seq = emv_param_version.seq + 1, "
                "downloaded_at = excluded.downloaded_at", (table, version, count, time.time()))


def store_capks(db: Db, capks: list[Capk]) -> str:
    """Replace the CA key table by `capks` in one transaction; returns the new version."""
    version = version_of(capks)
    with _tx(db) as cur:
        cur.execute("DELETE FROM emv_capk")
        cur.executemany(
            "INSERT INTO emv_capk (rid, idx, modulus, exponent, check_value, expiry) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(k.rid.hex().upper(), k.index, k.modulus, k.exponent, k.check_value, k.expiry)
             for k in capks])
        _set_version(cur, "capk", version, len(capks))
    return version


def store_aids(db: Db, aids: list[AidParams]) -> str:
    """Replace the AID table by `aids` in one transaction; returns the new version."""
    version = version_of(aids)
    with _tx(db) as cur:
        cur.execute("DELETE FROM emv_aid")
        cur.executemany("INSERT INTO emv_aid (aid, params) VALUES (?, ?)",
                        [(a.aid.hex().upper(), _aid_json(a)) for a in aids])
        _set_version(cur, "aid", version, len(aids))
    return version


def table_status(db: Db) -> dict[str, TableStatus]:
    """Version, count and download time of each table ("" and the built-in count when the
    host never sent one)."""
    rows = {r[0]: r for r in _read(
        db, "SELECT tbl, version, count, downloaded_at FROM emv_param_version")}
    out = {}
    for table, builtin in (("capk", 0), ("aid", len(BUILTIN_AIDS))):
        row = rows.get(table)
        out[table] = (TableStatus(table, row[1], row[2], row[3]) if row is not None
                      else TableStatus(table, "", builtin, None))
    return out


def load_emv_params(db: Db) -> EmvParams:
    """What the kernel gets: the downloaded tables, or the built-in AIDs and no CA key."""
    status = table_status(db)
    capks = tuple(
        Capk(rid=bytes.fromhex(rid), index=idx, modulus=bytes(mod), exponent=bytes(exp),
             check_value=bytes(check), expiry=expiry)
        for rid, idx, mod, exp, check, expiry in _read(
            db, "SELECT rid, idx, modulus, exponent, check_value, expiry FROM emv_capk "
                "ORDER BY rid, idx"))
    if status["aid"].version:
        aids = tuple(_aid_from_json(p) for (p,) in _read(
            db, "SELECT params FROM emv_aid ORDER BY aid"))
    else:
        aids = BUILTIN_AIDS
    return EmvParams(aids=aids, capks=capks, aid_version=status["aid"].version,
                     capk_version=status["capk"].version)
