"""The acquirer simulator's own SQLite ledger (a host's books, not the terminal's journal).

Owns the schema (terminals, txns, reversals, uploads, settlements, stored replies),
the writes the simulator makes per message and the query API tests assert on.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from firmware.host.messages import SideTotals

__all__ = ["CREDIT_KINDS", "DEBIT_KINDS", "Ledger", "TerminalRecord", "TxnRow"]

SCHEMA_VERSION: Final = 1

# Settlement rule (domain doc section 4, our choice: gross figures). A voided sale
# stays in the debit total and its void counts in credit; pre-auths, their voids
# and balance inquiries move no money.
DEBIT_KINDS: Final = ("sale", "completion")
CREDIT_KINDS: Final = ("void", "completion_void", "refund")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS terminals (
    tid       TEXT PRIMARY KEY,
    mid       TEXT NOT NULL,
    tmk_hex   TEXT NOT NULL,
    status    TEXT NOT NULL CHECK (status IN ('bound', 'unbound')),
    signed_on INTEGER NOT NULL DEFAULT 0,
    batch     INTEGER NOT NULL DEFAULT 1,
    pik_hex   TEXT,
    mak_hex   TEXT,
    tdk_hex   TEXT,
    updated   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS txns (
    id            INTEGER PRIMARY KEY,
    tid           TEXT NOT NULL,
    batch         INTEGER NOT NULL,
    stan          INTEGER NOT NULL,
    mti           TEXT NOT NULL,
    kind          TEXT NOT NULL,
    amount        INTEGER NOT NULL,
    currency      TEXT NOT NULL,
    pan_masked    TEXT NOT NULL,
    is_foreign    INTEGER NOT NULL,
    rrn           TEXT,
    auth          TEXT,
    response_code TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('approved', 'declined', 'reversed')),
    voided_by     INTEGER REFERENCES txns(id),
    orig_id       INTEGER REFERENCES txns(id),
    orig_batch    INTEGER,
    orig_stan     INTEGER,
    orig_rrn      TEXT,
    orig_auth     TEXT,
    created       TEXT NOT NULL,
    UNIQUE (tid, batch, stan, mti)
);
CREATE UNIQUE INDEX IF NOT EXISTS txns_rrn ON txns (rrn) WHERE rrn IS NOT NULL;
CREATE TABLE IF NOT EXISTS reversals (
    id            INTEGER PRIMARY KEY,
    tid           TEXT NOT NULL,
    batch         INTEGER NOT NULL,
    stan          INTEGER NOT NULL,
    orig_id       INTEGER REFERENCES txns(id),
    reason        TEXT,
    response_code TEXT NOT NULL,
    created       TEXT NOT NULL,
    UNIQUE (tid, batch, stan)
);
CREATE TABLE IF NOT EXISTS uploads (
    tid        TEXT NOT NULL,
    batch      INTEGER NOT NULL,
    trace      INTEGER NOT NULL,
    pan_masked TEXT NOT NULL,
    amount     INTEGER NOT NULL,
    is_foreign INTEGER NOT NULL,
    created    TEXT NOT NULL,
    PRIMARY KEY (tid, batch, trace)
);
CREATE TABLE IF NOT EXISTS settlements (
    tid             TEXT NOT NULL,
    batch           INTEGER NOT NULL,
    result_dom      TEXT NOT NULL,
    result_for      TEXT NOT NULL,
    host_totals     TEXT NOT NULL,
    terminal_totals TEXT NOT NULL,
    upload_count    INTEGER,
    closed          INTEGER NOT NULL DEFAULT 0,
    at              TEXT NOT NULL,
    PRIMARY KEY (tid, batch)
);
CREATE TABLE IF NOT EXISTS chip_log (
    id         INTEGER PRIMARY KEY,
    tid        TEXT NOT NULL,
    batch      INTEGER NOT NULL,
    stan       INTEGER NOT NULL,
    mti        TEXT NOT NULL,
    event      TEXT NOT NULL CHECK (event IN ('auth', 'reversal', 'script_result', 'upload')),
    card_key   TEXT,
    atc        INTEGER,
    cryptogram TEXT,
    tvr        TEXT,
    detail     TEXT,
    result     TEXT NOT NULL,
    why        TEXT NOT NULL,
    created    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chip_log_atc ON chip_log (card_key, atc) WHERE event = 'auth';
CREATE TABLE IF NOT EXISTS param_downloads (
    tid     TEXT NOT NULL,
    tbl     TEXT NOT NULL CHECK (tbl IN ('capk', 'aid')),
    version TEXT NOT NULL,
    at      TEXT NOT NULL,
    PRIMARY KEY (tid, tbl)
);
CREATE TABLE IF NOT EXISTS replies (
    tid         TEXT NOT NULL,
    batch       INTEGER NOT NULL,
    stan        INTEGER NOT NULL,
    mti         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    fields      TEXT NOT NULL,
    created     TEXT NOT NULL,
    PRIMARY KEY (tid, batch, stan, mti)
);
"""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class TxnRow:
    """One financial message the host booked (approved or declined)."""

    id: int
    tid: str
    batch: int
    stan: int
    mti: str
    kind: str
    amount: int
    currency: str
    pan_masked: str
    foreign: bool
    rrn: str | None
    auth: str | None
    response_code: str
    state: str
    voided_by: int | None
    orig_id: int | None
    orig_batch: int | None
    orig_stan: int | None
    orig_rrn: str | None
    orig_auth: str | None
    created: str

    @property
    def voided(self) -> bool:
        return self.voided_by is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TerminalRecord:
    """A terminal as the host knows it. Keys stay out of repr and to_json."""

    tid: str
    mid: str
    status: str
    signed_on: bool
    batch: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _totals_json(t: SideTotals) -> dict[str, int]:
    return {"debit_amount": t.debit_amount, "debit_count": t.debit_count,
            "credit_amount": t.credit_amount, "credit_count": t.credit_count}


class Ledger:
    """SQLite ledger in WAL mode with synchronous=FULL.

    One connection shared by every thread under an RLock, so tests may query it
    from outside the simulator's event loop. Writes made inside `atomic()` commit
    together (one message = one SQL transaction); writes outside it commit alone.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._create()

    def _create(self) -> None:
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)",
                             (str(SCHEMA_VERSION),))
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('rrn_seq', '0')")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """All writes in the block commit together or not at all (re-entrant)."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        with self._lock:
            return self._db.execute(sql, args).fetchone()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._db.execute(sql, args)

    # ---- terminals -------------------------------------------------------

    def register_terminal(self, tid: str, mid: str, tmk_hex: str) -> None:
        """Bind (or re-bind) a terminal; the batch number survives re-registration."""
        bytes.fromhex(tmk_hex)  # reject a non-hex key before it reaches the table
        self._exec(
            "INSERT INTO terminals(tid, mid, tmk_hex, status, updated) "
            "VALUES (?, ?, ?, 'bound', ?) "
            "ON CONFLICT(tid) DO UPDATE SET mid = excluded.mid, tmk_hex = excluded.tmk_hex, "
            "status = 'bound', signed_on = 0, pik_hex = NULL, mak_hex = NULL, "
            "tdk_hex = NULL, updated = excluded.updated",
            (tid, mid, tmk_hex.upper(), _now()))

    def unbind(self, tid: str) -> bool:
        """Mark the terminal unbound and forget its working keys; False if unknown."""
        cur = self._exec(
            "UPDATE terminals SET status = 'unbound', signed_on = 0, pik_hex = NULL, "
            "mak_hex = NULL, tdk_hex = NULL, updated = ? WHERE tid = ?", (_now(), tid))
        return cur.rowcount == 1

    def terminal_status(self, tid: str) -> TerminalRecord | None:
        row = self._one("SELECT tid, mid, status, signed_on, batch FROM terminals WHERE tid = ?",
                        (tid,))
        if row is None:
            return None
        return TerminalRecord(row["tid"], row["mid"], row["status"], bool(row["signed_on"]),
                              row["batch"])

    def tmk(self, tid: str) -> bytes | None:
        row = self._one("SELECT tmk_hex FROM terminals WHERE tid = ?", (tid,))
        return bytes.fromhex(row["tmk_hex"]) if row else None

    def working_keys(self, tid: str) -> tuple[bytes, bytes, bytes | None] | None:
        """(PIK, MAK, TDK) of the current sign-on, or None when not signed on."""
        row = self._one("SELECT signed_on, pik_hex, mak_hex, tdk_hex FROM terminals "
                        "WHERE tid = ?", (tid,))
        if row is None or not row["signed_on"] or row["mak_hex"] is None:
            return None
        tdk = bytes.fromhex(row["tdk_hex"]) if row["tdk_hex"] else None
        return bytes.fromhex(row["pik_hex"]), bytes.fromhex(row["mak_hex"]), tdk

    def sign_on(self, tid: str, pik: bytes, mak: bytes, tdk: bytes | None) -> None:
        self._exec("UPDATE terminals SET signed_on = 1, pik_hex = ?, mak_hex = ?, tdk_hex = ?, "
                   "updated = ? WHERE tid = ?",
                   (pik.hex().upper(), mak.hex().upper(), tdk.hex().upper() if tdk else None,
                    _now(), tid))

    def sign_off(self, tid: str) -> None:
        self._exec("UPDATE terminals SET signed_on = 0, pik_hex = NULL, mak_hex = NULL, "
                   "tdk_hex = NULL, updated = ? WHERE tid = ?", (_now(), tid))

    # ---- financial messages ----------------------------------------------

    def next_rrn(self) -> str:
        """A 12-digit retrieval reference unique in this ledger: YY + day of year + sequence."""
        with self.atomic():
            self._exec("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'rrn_seq'")
            row = self._one("SELECT value FROM meta WHERE key = 'rrn_seq'")
            assert row is not None
            seq = int(row["value"])
        today = datetime.now(UTC)
        return f"{today:%y}{today.timetuple().tm_yday:03d}{seq % 10_000_000:07d}"

    def insert_txn(self, *, tid: str, batch: int, stan: int, mti: str, kind: str,
                   amount: int, currency: str, pan_masked: str, foreign: bool,
                   rrn: str | None, auth: str | None, response_code: str,
                   orig: TxnRow | None = None, orig_batch: int | None = None,
                   orig_stan: int | None = None, orig_rrn: str | None = None,
                   orig_auth: str | None = None) -> int:
        state = "approved" if response_code == "00" else "declined"
        cur = self._exec(
            "INSERT INTO txns(tid, batch, stan, mti, kind, amount, currency, pan_masked, "
            "is_foreign, rrn, auth, response_code, state, orig_id, orig_batch, orig_stan, "
            "orig_rrn, orig_auth, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (tid, batch, stan, mti, kind, amount, currency, pan_masked, int(foreign), rrn,
             auth, response_code, state, orig.id if orig else None, orig_batch, orig_stan,
             orig_rrn, orig_auth, _now()))
        assert cur.lastrowid is not None
        return cur.lastrowid

    def get(self, txn_id: int) -> TxnRow | None:
        row = self._one("SELECT * FROM txns WHERE id = ?", (txn_id,))
        return _txn(row) if row else None

    def set_voided_by(self, txn_id: int, void_id: int | None) -> None:
        self._exec("UPDATE txns SET voided_by = ? WHERE id = ?", (void_id, txn_id))

    def mark_reversed(self, txn_id: int) -> None:
        self._exec("UPDATE txns SET state = 'reversed' WHERE id = ?", (txn_id,))

    def record_reversal(self, *, tid: str, batch: int, stan: int, orig_id: int | None,
                        reason: str | None, response_code: str) -> None:
        """One row per 0400; orig_id None is a tombstone: a late original is refused."""
        self._exec("INSERT OR IGNORE INTO reversals(tid, batch, stan, orig_id, reason, "
                   "response_code, created) VALUES (?,?,?,?,?,?,?)",
                   (tid, batch, stan, orig_id, reason, response_code, _now()))

    def reversal_seen(self, tid: str, batch: int, stan: int) -> bool:
        return self._one("SELECT 1 FROM reversals WHERE tid = ? AND batch = ? AND stan = ?",
                         (tid, batch, stan)) is not None

    def reversals(self, tid: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self._all("SELECT * FROM reversals WHERE tid = ? ORDER BY id",
                                           (tid,))]

    def original(self, tid: str, batch: int, stan: int, mtis: tuple[str, ...]) -> TxnRow | None:
        """The financial request with this terminal, batch and STAN among `mtis`."""
        marks = ",".join("?" * len(mtis))
        row = self._one(f"SELECT * FROM txns WHERE tid = ? AND batch = ? AND stan = ? "
                        f"AND mti IN ({marks}) ORDER BY id LIMIT 1", (tid, batch, stan, *mtis))
        return _txn(row) if row else None

    def by_rrn(self, tid: str, rrn: str) -> TxnRow | None:
        row = self._one("SELECT * FROM txns WHERE tid = ? AND rrn = ?", (tid, rrn))
        return _txn(row) if row else None

    def live_children(self, orig_id: int, kind: str) -> list[TxnRow]:
        """Approved, unreversed, unvoided transactions of `kind` referring to orig_id."""
        rows = self._all("SELECT * FROM txns WHERE orig_id = ? AND kind = ? "
                         "AND state = 'approved' AND voided_by IS NULL ORDER BY id",
                         (orig_id, kind))
        return [_txn(r) for r in rows]

    # ---- deduplication -----------------------------------------------------

    # ---- chip ------------------------------------------------------------

    def record_chip(self, *, tid: str, batch: int, stan: int, mti: str, event: str,
                    card_key: str | None, atc: int | None, cryptogram: bytes | None,
                    tvr: bytes | None, result: str, why: str, detail: str | None = None) -> None:
        """Book what the issuer side saw of one chip message (never a PAN: card_key is a
        hash). result: 'ok' (ARQC verified, or the event booked), 'refused' (why says it)."""
        self._exec(
            "INSERT INTO chip_log (tid, batch, stan, mti, event, card_key, atc, cryptogram, tvr, "
            "detail, result, why, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tid, batch, stan, mti, event, card_key, atc,
             cryptogram.hex().upper() if cryptogram is not None else None,
             tvr.hex().upper() if tvr is not None else None, detail, result, why, _now()))

    def atc_seen(self, card_key: str, atc: int) -> bool:
        """Whether this card's ATC already went with a verified ARQC (a replay)."""
        return self._one("SELECT 1 FROM chip_log WHERE event = 'auth' AND result = 'ok' "
                         "AND card_key = ? AND atc = ?", (card_key, atc)) is not None

    def params_done(self, tid: str, table: str, version: str) -> None:
        """The terminal ended a download (371/381) of this version of a table."""
        self._exec("INSERT OR REPLACE INTO param_downloads (tid, tbl, version, at) "
                   "VALUES (?, ?, ?, ?)", (tid, table, version, _now()))

    def params_version(self, tid: str, table: str) -> str | None:
        row = self._one("SELECT version FROM param_downloads WHERE tid = ? AND tbl = ?",
                        (tid, table))
        return None if row is None else str(row["version"])

    def chip_log(self, tid: str) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM chip_log WHERE tid = ? ORDER BY id", (tid,))
        return [dict(r) for r in rows]

    def stored_reply(self, tid: str, batch: int, stan: int, mti: str
                     ) -> tuple[str, dict[str, str]] | None:
        """(request fingerprint, reply fields) of a message already answered."""
        row = self._one("SELECT fingerprint, fields FROM replies WHERE tid = ? AND batch = ? "
                        "AND stan = ? AND mti = ?", (tid, batch, stan, mti))
        if row is None:
            return None
        return row["fingerprint"], json.loads(row["fields"])

    def store_reply(self, tid: str, batch: int, stan: int, mti: str, fingerprint: str,
                    fields: dict[str, str]) -> None:
        self._exec("INSERT OR REPLACE INTO replies(tid, batch, stan, mti, fingerprint, fields, "
                   "created) VALUES (?,?,?,?,?,?,?)",
                   (tid, batch, stan, mti, fingerprint, json.dumps(fields), _now()))

    # ---- settlement --------------------------------------------------------

    def add_upload(self, tid: str, batch: int, trace: int, pan_masked: str, amount: int,
                   foreign: bool) -> None:
        # A re-sent upload message repeats items: the (tid, batch, trace) key keeps one.
        self._exec("INSERT OR IGNORE INTO uploads(tid, batch, trace, pan_masked, amount, "
                   "is_foreign, created) VALUES (?,?,?,?,?,?,?)",
                   (tid, batch, trace, pan_masked, amount, int(foreign), _now()))

    def uploads(self, tid: str, batch: int) -> list[dict[str, Any]]:
        rows = self._all("SELECT trace, pan_masked, amount, is_foreign FROM uploads "
                         "WHERE tid = ? AND batch = ? ORDER BY trace", (tid, batch))
        return [{"trace": r["trace"], "pan_masked": r["pan_masked"], "amount": r["amount"],
                 "foreign": bool(r["is_foreign"])} for r in rows]

    def record_settlement(self, tid: str, batch: int, result_dom: str, result_for: str,
                          host: tuple[SideTotals, SideTotals],
                          terminal: tuple[SideTotals, SideTotals]) -> None:
        host_json = json.dumps({"domestic": _totals_json(host[0]),
                                "foreign": _totals_json(host[1])})
        term_json = json.dumps({"domestic": _totals_json(terminal[0]),
                                "foreign": _totals_json(terminal[1])})
        self._exec(
            "INSERT INTO settlements(tid, batch, result_dom, result_for, host_totals, "
            "terminal_totals, at) VALUES (?,?,?,?,?,?,?) ON CONFLICT(tid, batch) DO UPDATE SET "
            "result_dom = excluded.result_dom, result_for = excluded.result_for, "
            "host_totals = excluded.host_totals, terminal_totals = excluded.terminal_totals, "
            "at = excluded.at",
            (tid, batch, result_dom, result_for, host_json, term_json, _now()))

    def close_batch(self, tid: str, batch: int, upload_count: int | None) -> int:
        """End of upload: the settlement row is closed and the terminal moves to batch + 1.

        Returns the terminal's new current batch. Idempotent for an already-closed batch.
        """
        with self.atomic():
            row = self._one("SELECT closed FROM settlements WHERE tid = ? AND batch = ?",
                            (tid, batch))
            if row is None:
                # Upload end without a 0500 first: close anyway, results unknown ("0").
                empty = SideTotals(0, 0, 0, 0)
                self.record_settlement(tid, batch, "0", "0", self.totals(tid, batch),
                                       (empty, empty))
            self._exec("UPDATE settlements SET closed = 1, upload_count = ?, at = ? "
                       "WHERE tid = ? AND batch = ?", (upload_count, _now(), tid, batch))
            self._exec("UPDATE terminals SET batch = MAX(batch, ? + 1), updated = ? "
                       "WHERE tid = ?", (batch, _now(), tid))
            status = self.terminal_status(tid)
        return status.batch if status else batch + 1

    def settlements(self, tid: str) -> list[dict[str, Any]]:
        rows = self._all("SELECT * FROM settlements WHERE tid = ? ORDER BY batch", (tid,))
        out = []
        for r in rows:
            item = dict(r)
            item["host_totals"] = json.loads(item["host_totals"])
            item["terminal_totals"] = json.loads(item["terminal_totals"])
            item["closed"] = bool(item["closed"])
            out.append(item)
        return out

    # ---- queries for tests -------------------------------------------------

    def rows(self, tid: str, batch: int | None = None) -> list[TxnRow]:
        """Every financial message booked for the terminal (any state)."""
        if batch is None:
            found = self._all("SELECT * FROM txns WHERE tid = ? ORDER BY id", (tid,))
        else:
            found = self._all("SELECT * FROM txns WHERE tid = ? AND batch = ? ORDER BY id",
                              (tid, batch))
        return [_txn(r) for r in found]

    def approved(self, tid: str, batch: int | None = None) -> list[TxnRow]:
        """Approved and not reversed (a voided sale is still listed, with voided_by set)."""
        return [r for r in self.rows(tid, batch) if r.state == "approved"]

    def find(self, tid: str, batch: int, stan: int | str) -> TxnRow | None:
        row = self._one("SELECT * FROM txns WHERE tid = ? AND batch = ? AND stan = ? "
                        "ORDER BY id LIMIT 1", (tid, batch, int(stan)))
        return _txn(row) if row else None

    def totals(self, tid: str, batch: int) -> tuple[SideTotals, SideTotals]:
        """(domestic, foreign) settlement totals by the gross rule (see DEBIT_KINDS)."""
        sides: dict[bool, list[int]] = {False: [0, 0, 0, 0], True: [0, 0, 0, 0]}
        rows = self._all("SELECT kind, amount, is_foreign FROM txns WHERE tid = ? AND batch = ? "
                         "AND state = 'approved'", (tid, batch))
        for r in rows:
            acc = sides[bool(r["is_foreign"])]
            if r["kind"] in DEBIT_KINDS:
                acc[0] += r["amount"]
                acc[1] += 1
            elif r["kind"] in CREDIT_KINDS:
                acc[2] += r["amount"]
                acc[3] += 1
        return SideTotals(*sides[False]), SideTotals(*sides[True])


def _txn(row: sqlite3.Row) -> TxnRow:
    return TxnRow(
        id=row["id"], tid=row["tid"], batch=row["batch"], stan=row["stan"], mti=row["mti"],
        kind=row["kind"], amount=row["amount"], currency=row["currency"],
        pan_masked=row["pan_masked"], foreign=bool(row["is_foreign"]), rrn=row["rrn"],
        auth=row["auth"], response_code=row["response_code"], state=row["state"],
        voided_by=row["voided_by"], orig_id=row["orig_id"], orig_batch=row["orig_batch"],
        orig_stan=row["orig_stan"], orig_rrn=row["orig_rrn"], orig_auth=row["orig_auth"],
        created=row["created"])
