"""The journal: every financial record, the counters it consumed, settlements, audit.

One SQL transaction per state change, committed with synchronous=FULL in WAL
mode before the caller may act on it. The state table in engine/states.py is
enforced here, so no code path can turn a given-up record into an approval;
held orders follow their records here too (journal/follow.py), in the same
commit, whoever changed the record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from firmware.digits import is_digits
from firmware.emv.params import EmvParams
from firmware.emv.record import decode_kept
from firmware.engine.model import HostResult, PendingDraft, SettlementRow, TxnRecord
from firmware.engine.states import LIVE_FOLLOW_UP, TxnEvent, TxnState, next_state
from firmware.host.messages import SideTotals, TxnKind
from firmware.journal import archive, chain, emvparams, follow, wal
from firmware.journal.errors import JournalCorrupt, JournalError, JournalFull, JournalTooNew
from firmware.journal.requests import link_in
from firmware.journal.schema import (
    ARCHIVE_SINCE,
    COMPAT_SINCE,
    MIGRATIONS,
    PRINT_JOB_OPEN_WHERE,
    SCHEMA_VERSION,
    TXN_UNRESOLVED_WHERE,
    min_reader,
)
from firmware.journal.vault import CardVault
from firmware.printing.queue import (
    REPORT_KINDS,
    CancelAction,
    CopyKind,
    JobKind,
    PrintJob,
    PrintState,
    RecoveryAction,
    cancel_action,
    check_transition,
    recovery_action,
)

log = logging.getLogger("posfw.journal")

COUNTER_WRAP = 999_999
DEBIT_KINDS = (TxnKind.SALE.value, TxnKind.COMPLETION.value)
CREDIT_KINDS = (TxnKind.VOID.value, TxnKind.COMPLETION_VOID.value, TxnKind.REFUND.value)
# Gross totals: a voided sale stays in the debit total and its void in credit.
DEBIT_STATES = (TxnState.APPROVED.value, TxnState.VOIDED.value)
CREDIT_STATES = (TxnState.APPROVED.value, TxnState.VOIDED.value)
OPEN_SETTLEMENT_STATES = ("REQUESTED", "UPLOADING", "ENDING")
_LIVE = tuple(sorted(s.value for s in LIVE_FOLLOW_UP))

_TXN_COLUMNS = (
    "id, kind, state, stan, batch, invoice, amount, currency, pan_masked, foreign_card, "
    "entry_mode, pin_entered, operator, local_date, local_time, created_at, reference, orig_id, "
    "orig_batch, orig_stan, orig_rrn, orig_auth, orig_date, response_code, rrn, auth_code, "
    "card_org, reversal_reason, reversal_attempts, advice_attempts, uploaded, settlement_id, problem, "
    "orig_card_org, pos_entry, read_cap, reversal_auth, orig_invoice, issuer_id, acquirer_id, "
    "expiry_shown, card_seq, icc_data, chip_tags"
)
_TXN_COLUMN_NAMES = tuple(c.strip() for c in _TXN_COLUMNS.split(","))


@dataclass(frozen=True)
class RecoveryReport:
    to_reverse: int  # PENDING records found at start-up that became REVERSAL_DUE
    enquiries_failed: int
    settlements_abandoned: int
    settlement_to_resume: SettlementRow | None


def _row_to_record(row: tuple) -> TxnRecord:
    (rid, kind, state, stan, batch, invoice, amount, currency, pan_masked, foreign, entry_mode,
     pin_entered, operator, local_date, local_time, created_at, reference, orig_id, orig_batch,
     orig_stan, orig_rrn, orig_auth, orig_date, rc, rrn, auth, org, rev_reason, rev_attempts,
     adv_attempts, uploaded, settlement_id, problem, orig_org, pos_entry, read_cap,
     reversal_auth, orig_invoice, issuer_id, acquirer_id, expiry_shown, card_seq, icc_data,
     chip_tags) = row
    return TxnRecord(
        id=rid, kind=TxnKind(kind), state=TxnState(state), stan=stan, batch=batch,
        invoice=invoice, amount=amount, currency=currency, pan_masked=pan_masked,
        foreign=bool(foreign), entry_mode=entry_mode, pin_entered=bool(pin_entered),
        operator=operator, local_date=local_date, local_time=local_time, created_at=created_at,
        reference=reference, orig_id=orig_id, orig_batch=orig_batch, orig_stan=orig_stan,
        orig_rrn=orig_rrn, orig_auth=orig_auth, orig_date=orig_date, response_code=rc, rrn=rrn,
        auth_code=auth, card_org=org, reversal_reason=rev_reason,
        reversal_attempts=rev_attempts, advice_attempts=adv_attempts, uploaded=bool(uploaded),
        settlement_id=settlement_id, problem=problem, orig_card_org=orig_org,
        pos_entry=pos_entry, read_cap=read_cap, reversal_auth=reversal_auth,
        orig_invoice=orig_invoice, issuer_id=issuer_id, acquirer_id=acquirer_id,
        expiry_shown=expiry_shown, card_seq=card_seq, icc_data=icc_data, chip_tags=chip_tags,
    )


def _row_to_settlement(row: tuple) -> SettlementRow:
    (sid, batch, state, stan, totals, rdom, rfor, uploaded, started, finished, end_stan) = row
    t = json.loads(totals)
    return SettlementRow(
        id=sid, batch=batch, state=state, stan=stan, domestic=tuple(t["domestic"]),
        foreign=tuple(t["foreign"]), result_domestic=rdom, result_foreign=rfor,
        uploaded_count=uploaded, started_at=started, finished_at=finished, end_stan=end_stan,
    )


_JOB_COLUMNS = (
    "id, kind, state, txn_id, copies, copies_done, reprint, copy_restarted, printed_any, "
    "cancel_requested, needs_confirm, voids_job, reason, title, created_at, settlement_id, batch, "
    "held_order_id"
)


def _row_to_job(row: tuple) -> PrintJob:
    (jid, kind, state, txn_id, copies, done, reprint, restarted, printed_any, cancel, confirm,
     voids, reason, title, created, settlement_id, batch, held_order_id) = row
    return PrintJob(
        id=jid, kind=JobKind(kind), state=PrintState(state), txn_id=txn_id,
        copies=tuple(CopyKind(c) for c in copies.split(",") if c), copies_done=done,
        reprint=bool(reprint), copy_restarted=bool(restarted), printed_any=bool(printed_any),
        cancel_requested=bool(cancel), needs_confirm=bool(confirm), voids_job=voids,
        reason=reason, title=title, created_at=created, settlement_id=settlement_id, batch=batch,
        held_order_id=held_order_id,
    )


@dataclass(frozen=True)
class PrintRecovery:
    requeued_for_confirm: int  # copies cut by the power loss, waiting for the operator
    cancelled_with_void_slip: int
    still_queued: int


_SETTLEMENT_COLUMNS = (
    "id, batch, state, stan, totals, result_domestic, result_foreign, uploaded_count, "
    "started_at, finished_at, end_stan"
)


def _read_ahead(path: Path) -> None:
    """Read the hot journal and its WAL once, front to back, before quick_check walks them in
    b-tree order: from a cold cache, one sequential pass costs a fraction of the scattered page
    reads it replaces (start-up to a sale, bench_journal). The file is small by design (the
    archive keeps it so); a missing file is a new journal."""
    buffer = bytearray(1 << 20)
    for part in (path, Path(f"{path}-wal")):
        try:
            fd = os.open(part, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            while os.readv(fd, [buffer]) == len(buffer):
                pass
        finally:
            os.close(fd)


class Journal:
    """The open journal file. Not thread-safe: the app's event loop is its only user."""

    def __init__(self, conn: sqlite3.Connection, path: Path, vault: CardVault,
                 clock: Callable[[], float]) -> None:
        self._db = conn
        self.path = path
        self._vault = vault
        self._clock = clock
        self.archive_dir = archive.directory_for(path)
        self._archives = archive.ArchiveReader(self.archive_dir)
        self._archived_max_id = 0  # new records are numbered above every archived one
        self.archive_check: archive.ArchiveCheck | None = None  # the last idle-time check
        self._idle_mark = -1  # total_changes at the last complete idle checkpoint

    # -- opening ----------------------------------------------------------------

    @classmethod
    def open(cls, path: str | Path, vault: CardVault,
             clock: Callable[[], float] = time.time) -> Journal:
        """Open (creating if absent), check and migrate. A damaged file is never recreated."""
        p = Path(path)
        _read_ahead(p)
        new = wal.is_new(p)
        try:
            # timeout: a writer that holds the file for a moment (a backup) is waited for, up
            # to 5 s, instead of failing the sale with "database is locked".
            conn = sqlite3.connect(p, timeout=5.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open the journal {p}: {exc}") from exc
        try:
            if new:
                wal.choose_page_size(conn)  # before WAL mode writes the first page
            verdict = conn.execute("PRAGMA quick_check").fetchone()[0]  # "ok" for a new file
            if verdict != "ok":
                raise JournalCorrupt(p, verdict)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise JournalError(f"the journal {p} cannot use WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            wal.bound(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            journal = cls(conn, p, vault, clock)
            journal._migrate()
            if conn.execute("PRAGMA user_version").fetchone()[0] >= ARCHIVE_SINCE:
                journal._archived_max_id = archive.archived_max_id(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if "full" in str(exc).lower():
                raise JournalFull(str(exc)) from exc
            raise JournalCorrupt(p, str(exc)) from exc
        except JournalError:
            conn.close()
            raise
        return journal

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            # Written by newer firmware (a fall back after an update): opened as it is when every
            # migration past ours was additive (schema.py), else refused before anything is written.
            needed = self._compat(version)
            if needed > SCHEMA_VERSION:
                raise JournalTooNew(self.path, version, SCHEMA_VERSION, needed)
            log.warning("journal at schema %d, written by newer firmware: opened by schema %d "
                        "(its migrations since are additive)", version, SCHEMA_VERSION)
            return
        for number in range(version, SCHEMA_VERSION):
            with self._tx() as cur:
                for step in MIGRATIONS[number]:
                    if callable(step):
                        step(cur)
                    else:
                        cur.execute(step)
                if number + 1 >= COMPAT_SINCE:
                    cur.executemany("INSERT INTO journal_compat (name, value) VALUES (?, ?) "
                                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                                    (("min_reader", min_reader(number + 1)), ("schema", number + 1)))
                cur.execute(f"PRAGMA user_version = {number + 1}")
            log.info("journal migrated to schema %d", number + 1)

    def _compat(self, version: int) -> int:
        """The min_reader a newer journal records; its own version (nobody older may open it)
        when it records none, or records it for another schema than the one it is at (a
        firmware that migrated without keeping the rule)."""
        try:
            found = dict(self._db.execute("SELECT name, value FROM journal_compat"))
        except sqlite3.OperationalError:  # no such table: written before the rule existed
            return version
        if found.get("schema") != version or "min_reader" not in found:
            return version
        return int(found["min_reader"])

    def close(self) -> None:
        self._archives.close()
        self._db.close()

    def checkpoint_at_idle(self) -> wal.Checkpoint | None:
        """The WAL copied into the database and started again (journal/wal.py), for the app to
        call when it is idle; None when nothing was written since the last complete one."""
        if self._db.total_changes == self._idle_mark:
            return None
        try:
            done = wal.checkpoint_at_idle(self._db)
        except sqlite3.Error as exc:  # a full disk, a lock held past the timeout: try again later
            raise (JournalFull if "full" in str(exc).lower() else JournalError)(
                f"the idle checkpoint of {self.path} failed: {exc}") from exc
        if done.complete:
            self._idle_mark = self._db.total_changes
        return done

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Cursor]:
        """One durable SQL transaction for the journal's companions (held orders, the terminal's
        life cycle): BEGIN IMMEDIATE ... COMMIT, a full disk as JournalFull, nothing half-written."""
        return self._tx()

    def read(self, sql: str, args: tuple = ()) -> list[tuple]:
        """Read-only SQL for the journal's companions and diagnostics (no transaction)."""
        if not sql.lstrip().upper().startswith("SELECT"):
            raise ValueError("Journal.read() runs SELECT statements only")
        return self._db.execute(sql, args).fetchall()

    def audit_in(self, cur: sqlite3.Cursor, operator: str, action: str, detail: str,
                 outcome: str) -> None:
        """An audit line inside a companion's transaction (it commits or rolls back with it)."""
        self._audit(cur, operator, action, detail, outcome)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Cursor]:
        """One durable SQL transaction; a full disk becomes JournalFull, nothing half-written."""
        cur = self._db.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            yield cur
            cur.execute("COMMIT")
        except BaseException as exc:
            if self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("rollback failed")
            if isinstance(exc, sqlite3.OperationalError) and (
                "full" in str(exc).lower() or "disk i/o" in str(exc).lower()
            ):
                raise JournalFull(str(exc)) from exc
            if isinstance(exc, sqlite3.DatabaseError) and "malformed" in str(exc).lower():
                raise JournalCorrupt(self.path, str(exc)) from exc
            raise
        finally:
            cur.close()

    # -- counters ---------------------------------------------------------------

    @staticmethod
    def _next(cur: sqlite3.Cursor, name: str) -> int:
        value = cur.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]
        value = value % COUNTER_WRAP + 1
        cur.execute("UPDATE counters SET value = ? WHERE name = ?", (value, name))
        return value

    def allocate_stan(self) -> str:
        """The next STAN for a management message, durably consumed."""
        with self._tx() as cur:
            return f"{self._next(cur, 'stan'):06d}"

    def current_batch(self) -> str:
        value = self._db.execute("SELECT value FROM counters WHERE name = 'batch'").fetchone()[0]
        return f"{value:06d}"

    def counters(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT name, value FROM counters").fetchall())

    def adopt_batch(self, batch: str) -> bool:
        """Take the host's batch number (sign-on 60.2) unless this batch already has records."""
        if not (len(batch) == 6 and is_digits(batch)):
            return False
        current = self.current_batch()
        if batch == current:
            return False
        with self._tx() as cur:
            used = cur.execute("SELECT COUNT(*) FROM txn WHERE batch = ?", (current,)).fetchone()[0]
            if used:
                log.warning("host batch %s ignored: batch %s has %d records", batch, current, used)
                return False
            cur.execute("UPDATE counters SET value = ? WHERE name = 'batch'", (int(batch),))
            self._audit(cur, "system", "adopt batch", f"{current} -> {batch}", "done")
        return True

    # -- records ----------------------------------------------------------------

    def begin(self, draft: PendingDraft) -> TxnRecord:
        """Write ahead: the record, the counters it consumes and the ECR request key that asked
        for it (if any), in one commit."""
        # A refund or completion of a record whose batch moved to the archive names an id that
        # is no longer in this file: the reference is written with foreign keys off for this
        # one commit (archive.move_one says why that is sound), after checking it is archived.
        archived_original = (draft.orig_id is not None and not self._db.execute(
            "SELECT 1 FROM txn WHERE id = ?", (draft.orig_id,)).fetchone())
        if archived_original:
            assert draft.orig_id is not None
            self.get(draft.orig_id)  # JournalError when it is nowhere
            self._db.execute("PRAGMA foreign_keys = OFF")
        try:
            return self._begin(draft)
        finally:
            if archived_original:
                self._db.execute("PRAGMA foreign_keys = ON")

    def _begin(self, draft: PendingDraft) -> TxnRecord:
        now = self._clock()
        state = TxnState.ADVICE_DUE if draft.advice else TxnState.PENDING
        pan_enc = self._vault.encrypt(draft.pan)
        with self._tx() as cur:
            stan = f"{self._next(cur, 'stan'):06d}"
            invoice = f"{self._next(cur, 'invoice'):06d}"
            batch_no = cur.execute("SELECT value FROM counters WHERE name = 'batch'").fetchone()[0]
            batch = f"{batch_no:06d}"
            # Above every archived id too: an id names one record for the terminal's life.
            new_id = None
            if self._archived_max_id:
                top = cur.execute("SELECT MAX(id) FROM txn").fetchone()[0] or 0
                new_id = max(top, self._archived_max_id) + 1
            cur.execute(
                "INSERT INTO txn (id, kind, state, stan, batch, invoice, amount, currency, pan_enc, "
                "pan_masked, foreign_card, entry_mode, pin_entered, operator, local_date, "
                "local_time, created_at, updated_at, reference, orig_id, orig_batch, orig_stan, "
                "orig_rrn, orig_auth, orig_date, orig_card_org, pos_entry, read_cap, orig_invoice, "
                "expiry_shown, card_seq, icc_data, chip_tags) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (new_id, draft.kind.value, state.value, stan, batch, invoice, draft.amount, draft.currency,
                 pan_enc, draft.pan_masked, int(draft.foreign), draft.entry_mode,
                 int(draft.pin_entered), draft.operator, draft.local_date, draft.local_time, now,
                 now, draft.reference, draft.orig_id, draft.orig_batch, draft.orig_stan,
                 draft.orig_rrn, draft.orig_auth, draft.orig_date, draft.orig_card_org,
                 draft.pos_entry, draft.read_cap, draft.orig_invoice, draft.expiry_shown,
                 draft.card_seq, draft.icc_data, draft.chip_tags),
            )
            rid = cur.lastrowid
            assert rid is not None
            if draft.request_key is not None:  # an ECR retry must find this record after a restart
                link_in(cur, draft.request_key, rid)
            self._audit(cur, draft.operator, draft.kind.value,
                        f"trace {stan} amount {draft.amount} card {draft.pan_masked}", state.value)
            row = cur.execute(f"SELECT {_TXN_COLUMNS} FROM txn WHERE id = ?", (rid,)).fetchone()
            record = _row_to_record(row)
            if draft.held_order_id is not None:
                try:
                    follow.link(cur, record, draft.held_order_id, self._audit, now)
                except ValueError as exc:  # the order moved meanwhile: nothing is written
                    raise JournalError(str(exc)) from None
        return record

    def apply(self, record_id: int, event: TxnEvent, result: HostResult | None = None,
              reversal_reason: str | None = None, void_of: int | None = None,
              receipt_copies: tuple[CopyKind, ...] = (), problem: str | None = None,
              declined_after_stored: bool = False, chip_tags: str | None = None) -> TxnRecord:
        """One state change (and, for an approved void, its original's) in one commit.

        receipt_copies queues the receipt in that same commit, so an outcome the
        operator is told about never lacks its receipt after a power loss (once: a
        record that already has its receipt job gets no second one).
        declined_after_stored: a refund the till was told "stored" was declined; the
        slip saying it was not made is queued and the decline audited, same commit.
        chip_tags: the chip's record of the outcome (the second GENERATE AC's), replacing the
        first one's, in the same commit as the state it explains.
        Held orders tied to the record (or to the voided original) follow it.
        """
        now = self._clock()
        with self._tx() as cur:
            row = cur.execute(f"SELECT {_TXN_COLUMNS} FROM txn WHERE id = ?", (record_id,)).fetchone()
            if row is None:
                raise JournalError(f"no journal record {record_id}")
            record = _row_to_record(row)
            new_state = next_state(record.state, event)
            sets = ["state = ?", "updated_at = ?"]
            args: list[object] = [new_state.value, now]
            if result is not None and event in (
                TxnEvent.APPROVE, TxnEvent.DECLINE, TxnEvent.ADVICE_ACKED
            ):
                sets += ["response_code = ?", "rrn = ?", "auth_code = ?", "card_org = ?",
                         "issuer_id = ?", "acquirer_id = ?"]
                args += [result.response_code, result.rrn, result.auth_code, result.card_org,
                         result.issuer_id, result.acquirer_id]
            if reversal_reason is not None:
                sets.append("reversal_reason = ?")
                args.append(reversal_reason)
                if result is not None and result.auth_code:  # an untrusted reply's, for the 0400
                    sets.append("reversal_auth = ?")
                    args.append(result.auth_code)
            if chip_tags is not None:
                sets.append("chip_tags = ?")
                args.append(chip_tags)
                if "DF31" in decode_kept(chip_tags):  # the card ran the issuer's scripts
                    sets.append("script_advice = 'due'")
            if problem is not None:
                sets.append("problem = ?")
                args.append(problem[:500])
            if event in (TxnEvent.REVERSAL_ACKED, TxnEvent.REVERSAL_FAILED):
                sets.append("reversal_attempts = reversal_attempts + 1")
            if event in (TxnEvent.ADVICE_ACKED, TxnEvent.ADVICE_FAILED):
                sets.append("advice_attempts = advice_attempts + 1")
            cur.execute(f"UPDATE txn SET {', '.join(sets)} WHERE id = ?", (*args, record_id))
            if void_of is not None and new_state is TxnState.APPROVED:
                orig = cur.execute("SELECT state, stan FROM txn WHERE id = ?", (void_of,)).fetchone()
                if orig is None:
                    raise JournalError(f"the voided original {void_of} is not in the journal")
                voided = next_state(TxnState(orig[0]), TxnEvent.VOID)
                cur.execute("UPDATE txn SET state = ?, updated_at = ? WHERE id = ?",
                            (voided.value, now, void_of))
                self._audit(cur, record.operator, "voided",
                            f"trace {orig[1]} by void trace {record.stan}", voided.value)
                follow.follow(cur, self._record_in(cur, void_of), self._audit, now)
            # Every state change has its audit line, in the same commit (approvals and declines
            # with the host's answer: the begin line alone says only that it was sent).
            answer = f" rc {result.response_code}" if result is not None and result.response_code else ""
            self._audit(cur, record.operator, f"{record.kind.value} {event.value}",
                        f"trace {record.stan} amount {record.amount}{answer}"
                        + (f": {problem}" if problem else ""), new_state.value)
            if declined_after_stored:
                self._audit(cur, record.operator, "stored refund declined",
                            f"trace {record.stan} amount {record.amount}{answer}: the refund was "
                            "not made", new_state.value)
                self._insert_job(cur, JobKind.ADVICE_DECLINED, (CopyKind.MERCHANT,),
                                 txn_id=record_id, title=f"refund {record.stan} declined")
            if receipt_copies and cur.execute(
                    "SELECT 1 FROM print_job WHERE kind = 'receipt' AND txn_id = ? AND reprint = 0",
                    (record_id,)).fetchone() is None:
                self._insert_job(cur, JobKind.RECEIPT, receipt_copies, txn_id=record_id,
                                 title=f"{record.kind.value} {record.stan}")
            changed = self._record_in(cur, record_id)
            follow.follow(cur, changed, self._audit, now)
        return changed

    @staticmethod
    def _record_in(cur: sqlite3.Cursor, record_id: int) -> TxnRecord:
        row = cur.execute(f"SELECT {_TXN_COLUMNS} FROM txn WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            raise JournalError(f"no journal record {record_id}")
        return _row_to_record(row)

    def resolve_manually(self, record_id: int, operator: str, reason: str) -> TxnRecord:
        """Supervisor closes a reversal the host never acknowledged, or a quarantined record
        (audited, with the reason); held orders tied to it follow."""
        now = self._clock()
        with self._tx() as cur:
            record = self._record_in(cur, record_id)
            new_state = next_state(record.state, TxnEvent.RESOLVE_MANUALLY)
            cur.execute("UPDATE txn SET state = ?, updated_at = ? WHERE id = ?",
                        (new_state.value, now, record_id))
            what = ("quarantined record" if record.state is TxnState.QUARANTINED
                    else "reversal")
            self._audit(cur, operator, f"manual {what} resolution",
                        f"{record.kind.value} trace {record.stan} amount {record.amount}: {reason}",
                        new_state.value)
            changed = self._record_in(cur, record_id)
            follow.follow(cur, changed, self._audit, now)
        return changed

    def get(self, record_id: int) -> TxnRecord:
        """A record by id, in the hot journal or, once its batch moved, in the archive."""
        row = self._db.execute(f"SELECT {_TXN_COLUMNS} FROM txn WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            found = self._archived("id = ?", (record_id,), "id", near=record_id)
            if not found:
                raise JournalError(f"no journal record {record_id}")
            return found[0]
        return _row_to_record(row)

    # -- the archive (firmware/journal/archive.py) ------------------------------------------

    def _archive_files(self, near: int | None = None) -> list[tuple[str, tuple[int, ...]]]:
        """Archive files holding moved batches, newest first, each with the settlements whose
        copy in it is not committed yet (a move cut short: not to be read). near: only the files
        whose moved ids span this record id."""
        if self._archived_max_id == 0:
            return []
        rows = archive.log_rows(self._db, "state IN ('MOVED', 'COPYING')")
        files: dict[str, list[int]] = {}
        for r in sorted(rows, key=lambda r: r.settlement_id, reverse=True):
            moved_here = r.state == "MOVED" and (near is None or r.txn_min_id <= near <= r.txn_max_id)
            if moved_here:
                files.setdefault(r.file, [])
        for r in rows:
            if r.state == "COPYING" and r.file in files:
                files[r.file].append(r.settlement_id)
        return [(name, tuple(skip)) for name, skip in files.items()]

    def _archived(self, where: str, args: tuple = (), order: str = "id DESC",
                  limit: int | None = None, near: int | None = None) -> list[TxnRecord]:
        """Archived records matching `where`, newest file first (and `limit` in all)."""
        return [_row_to_record(r) for r in
                self._archived_rows(_TXN_COLUMN_NAMES, where, args, order, limit, near)]

    def _archived_rows(self, columns: tuple[str, ...], where: str, args: tuple = (),
                       order: str = "id DESC", limit: int | None = None,
                       near: int | None = None) -> list[tuple]:
        """`columns` of the archived txn rows matching `where` (NULL for a column a file was
        made without), newest file first, committed batches only (and `limit` in all)."""
        found: list[tuple] = []
        for name, skip in self._archive_files(near):
            conn = self._archives.connection(name)
            if conn is None:
                continue
            cols = self._archives.select_list(name, columns)
            clause = f"({where})" + (f" AND settlement_id NOT IN ({','.join('?' * len(skip))})"
                                     if skip else "")
            sql = f"SELECT {cols} FROM txn WHERE {clause} ORDER BY {order}"
            if limit is not None:
                sql += f" LIMIT {int(limit) - len(found)}"
            found += conn.execute(sql, (*args, *skip)).fetchall()
            if limit is not None and len(found) >= limit:
                break
        return found

    def _settled_in_archive(self, sql: str, settlement_id: int) -> list[tuple]:
        """The rows `sql` (one parameter: the settlement id) gives in the archive file that
        holds this settlement's committed batch; [] when none does."""
        for name, skip in self._archive_files():
            conn = self._archives.connection(name)
            if conn is not None and settlement_id not in skip:
                rows = conn.execute(sql, (settlement_id,)).fetchall()
                if rows:
                    return rows
        return []

    def archive_settled(self, keep_batches: int) -> list[archive.Move]:
        """Move every settled batch past the newest `keep_batches` into the archive, oldest
        first; a move cut short before is finished first. Returns what moved or why not."""
        moves: list[archive.Move] = []
        pending = [(r.settlement_id, r.batch) for r in
                   archive.log_rows(self._db, "state = 'COPYING'")]
        finished = {sid: at for sid, at in self._db.execute(
            "SELECT id, finished_at FROM settlement WHERE state = 'DONE'")}
        todo = [(sid, batch, finished.get(sid, 0.0)) for sid, batch in pending]
        todo += [c for c in archive.candidates(self._db, keep_batches) if c[0] not in dict(pending)]
        for sid, batch, finished_at in todo:
            move = archive.move_one(self._db, self.archive_dir, sid, batch, finished_at,
                                    self._archive_audit("archive batch"), self._tx)
            moves.append(move)
            if move.moved:
                self._archived_max_id = archive.archived_max_id(self._db)
                self._archives.forget(move.file)  # its reader reopens and sees the new rows
            else:
                log.warning("batch %s stays in the journal: %s", batch, move.reason)
        return moves

    def purge_archives(self, retention_days: int) -> list[str]:
        """Archive files past retention are deleted (audited); returns their names."""
        gone = archive.purge(self._db, self.archive_dir, retention_days, self._clock(),
                             self._archive_audit("purge archive"), self._tx)
        for name in gone:
            self._archives.forget(name)
        return gone

    def _archive_audit(self, action: str) -> Callable[[sqlite3.Cursor, str], None]:
        def write(cur: sqlite3.Cursor, detail: str) -> None:
            self._audit(cur, "system", action, detail, "done")
        return write

    def archive_log(self) -> list[archive.LogRow]:
        """Every batch that moved, is moving, or was purged, oldest first."""
        if self._db.execute("PRAGMA user_version").fetchone()[0] < ARCHIVE_SINCE:
            return []
        return archive.log_rows(self._db)

    def check_archives(self) -> archive.ArchiveCheck:
        """Check every archive file now (integrity, digests, the audit chain) and keep the
        result for Diagnostics. The app runs archive.check off the event loop instead."""
        self.archive_check = archive.check(self.archive_dir, self.archive_log())
        return self.archive_check

    def _select(self, where: str, args: tuple = (), order: str = "id") -> list[TxnRecord]:
        rows = self._db.execute(
            f"SELECT {_TXN_COLUMNS} FROM txn WHERE {where} ORDER BY {order}", args
        ).fetchall()
        return [_row_to_record(r) for r in rows]

    def find_by_invoice(self, invoice: str, batch: str | None = None,
                        kind: TxnKind | None = None) -> TxnRecord | None:
        """The record a merchant means by a voucher number (凭证号, the receipt's number): the
        newest with that number in `batch` (the open batch when not named), or, for `kind`, the
        newest of that kind in any batch (a completion's pre-auth may be from an earlier batch).
        The counter wraps at 999999, so "newest" is what makes the answer one record."""
        if kind is not None:
            found = self._select("invoice = ? AND kind = ?", (invoice, kind.value),
                                 order="id DESC LIMIT 1")
            found = found or self._archived("invoice = ? AND kind = ?", (invoice, kind.value),
                                            limit=1)
        else:
            found = self._select("invoice = ? AND batch = ?", (invoice, batch or self.current_batch()),
                                 order="id DESC LIMIT 1")
            if not found and batch is not None:  # a reprint from a batch that moved
                found = self._archived("invoice = ? AND batch = ?", (invoice, batch), limit=1)
        return found[0] if found else None

    def find_by_rrn(self, rrn: str) -> TxnRecord | None:
        """The newest record the host answered with this RRN, whatever its state now."""
        found = self._select("rrn = ? AND kind != 'refund'", (rrn,), order="id DESC LIMIT 1")
        found = found or self._archived("rrn = ? AND kind != 'refund'", (rrn,), limit=1)
        return found[0] if found else None

    def follow_ups(self, record: TxnRecord) -> list[TxnRecord]:
        """Voids, refunds and completions that count against `record` (states.LIVE_FOLLOW_UP):
        tied by orig_id, or refunds naming its RRN from outside (written before orig_id was
        filled in for them)."""
        marks = ",".join("?" * len(_LIVE))
        by_rrn = "OR (kind = 'refund' AND orig_rrn = ?)" if record.rrn else ""
        args = (record.id, *((record.rrn,) if record.rrn else ()), *_LIVE)
        where = f"(orig_id = ? {by_rrn}) AND state IN ({marks})"
        # A follow-up of an archived original may be archived too (the money rules count both).
        archived = self._archived(where, args, order="id")
        return sorted([*archived, *self._select(where, args)], key=lambda r: r.id)

    def last_record(self) -> TxnRecord | None:
        found = self._select("1", order="id DESC LIMIT 1")
        return found[0] if found else None

    def records(self, state: TxnState | None = None, batch: str | None = None) -> list[TxnRecord]:
        clauses, args = ["1"], []
        if state is not None:
            clauses.append("state = ?")
            args.append(state.value)
        if batch is not None:
            clauses.append("batch = ?")
            args.append(batch)
        return self._select(" AND ".join(clauses), tuple(args))

    def every_record(self) -> list[TxnRecord]:
        """Every record the terminal keeps, archived ones included, oldest first: the books as a
        whole (the comparison with the host's, a property test). Reads every archive file."""
        archived = self._archived("1", order="id")
        return sorted([*archived, *self._select("1")], key=lambda r: r.id)

    def reversals_due(self) -> list[TxnRecord]:
        return self._select("state = 'REVERSAL_DUE'")

    def advices_due(self) -> list[TxnRecord]:
        return self._select("state = 'ADVICE_DUE'")

    def emv_params(self) -> EmvParams:
        """The chip tables the kernel reads: the host's last download, else the built-in AIDs
        and no CA key (firmware/journal/emvparams.py)."""
        return emvparams.load_emv_params(self)

    def script_advices_due(self) -> list[TxnRecord]:
        """Chip transactions whose issuer-script results the host has not acknowledged yet."""
        return self._select("script_advice = 'due'")

    def script_advice_done(self, record_id: int, sent: bool, why: str) -> None:
        """The script advice was acknowledged (sent), or is given up (why, audited)."""
        with self._tx() as cur:
            row = cur.execute("SELECT stan, operator FROM txn WHERE id = ? AND "
                              "script_advice = 'due'", (record_id,)).fetchone()
            if row is None:
                return
            cur.execute("UPDATE txn SET script_advice = ? WHERE id = ?",
                        ("sent" if sent else "dropped", record_id))
            self._audit(cur, row[1], "script advice", f"trace {row[0]}: {why}",
                        "sent" if sent else "dropped")

    def quarantined(self) -> list[TxnRecord]:
        """Records owed to the host whose message cannot be built: a supervisor decides."""
        return self._select("state = 'QUARANTINED'")

    def declined_after_stored(self, batch: str | None = None) -> list[TxnRecord]:
        """Refunds of the batch the till was told "stored" and the host then declined (a record
        that failed to reach the host at least once before its decline)."""
        return self._select("kind = 'refund' AND state = 'DECLINED' AND advice_attempts > 0 "
                            "AND batch = ?", (batch or self.current_batch(),))

    def unresolved_counts(self) -> dict[str, int]:
        # txn_unresolved's own WHERE: the idle screen asks at every redraw, an index lookup.
        rows = self._db.execute(
            f"SELECT state, COUNT(*) FROM txn WHERE {TXN_UNRESOLVED_WHERE} GROUP BY state"
        ).fetchall()
        counts = dict.fromkeys(("PENDING", "REVERSAL_DUE", "ADVICE_DUE", "QUARANTINED"), 0)
        counts.update(dict(rows))
        return counts

    def decrypt_pan(self, record_id: int) -> str:
        row = self._db.execute("SELECT pan_enc FROM txn WHERE id = ?", (record_id,)).fetchone()
        if row is None:
            row = self._archived_pan(record_id)
        if row is None or row[0] is None:
            raise JournalError(f"record {record_id} holds no card number")
        return self._vault.decrypt(row[0])

    def _archived_pan(self, record_id: int) -> tuple[bytes | None] | None:
        rows = self._archived_rows(("pan_enc",), "id = ?", (record_id,), limit=1, near=record_id)
        return rows[0] if rows else None

    # -- start-up recovery ------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Whatever was on the wire when the power went is now unknown: plan its reversal."""
        now = self._clock()
        with self._tx() as cur:
            pending = cur.execute("SELECT id, kind, stan FROM txn WHERE state = 'PENDING'").fetchall()
            to_reverse = enquiries = 0
            for rid, kind, stan in pending:
                if kind == TxnKind.BALANCE.value:
                    event, reason = TxnEvent.LOSE_ENQUIRY_REPLY, None
                    enquiries += 1
                else:
                    event, reason = TxnEvent.LOSE_REPLY, "06"
                    to_reverse += 1
                new_state = next_state(TxnState.PENDING, event)
                cur.execute(
                    "UPDATE txn SET state = ?, reversal_reason = COALESCE(?, reversal_reason), "
                    "updated_at = ? WHERE id = ?",
                    (new_state.value, reason, now, rid),
                )
                self._audit(cur, "system", f"{kind} {event.value}",
                            f"trace {stan}: outcome unknown after a restart", new_state.value)
            abandoned = cur.execute(
                "UPDATE settlement SET state = 'ABANDONED', reason = ?, finished_at = ? "
                "WHERE state = 'REQUESTED'",
                ("no recorded reply to the settlement request before a restart", now),
            ).rowcount
            if pending or abandoned:
                self._audit(cur, "system", "start-up recovery",
                            f"{to_reverse} to reverse, {enquiries} enquiries lost, "
                            f"{abandoned} settlement requests abandoned", "done")
        return RecoveryReport(to_reverse, enquiries, abandoned, self.open_settlement())

    # -- totals and settlement --------------------------------------------------

    def totals(self, batch: str | None = None) -> tuple[SideTotals, SideTotals]:
        batch = batch or self.current_batch()
        rows = self._db.execute(
            "SELECT foreign_card, "
            f" SUM(CASE WHEN kind IN {DEBIT_KINDS} AND state IN {DEBIT_STATES} THEN amount ELSE 0 END),"
            f" SUM(CASE WHEN kind IN {DEBIT_KINDS} AND state IN {DEBIT_STATES} THEN 1 ELSE 0 END),"
            f" SUM(CASE WHEN kind IN {CREDIT_KINDS} AND state IN {CREDIT_STATES} THEN amount ELSE 0 END),"
            f" SUM(CASE WHEN kind IN {CREDIT_KINDS} AND state IN {CREDIT_STATES} THEN 1 ELSE 0 END)"
            " FROM txn WHERE batch = ? GROUP BY foreign_card",
            (batch,),
        ).fetchall()
        sides = {0: SideTotals(0, 0, 0, 0), 1: SideTotals(0, 0, 0, 0)}
        for foreign, da, dc, ca, cc in rows:
            sides[foreign] = SideTotals(int(da), int(dc), int(ca), int(cc))  # SUM of 0s, not NULL
        return sides[0], sides[1]

    def totals_by_kind(self, batch: str | None = None) -> dict[tuple[str, str], tuple[int, int]]:
        """(card side, kind) -> (count, amount) of counted records, for reviews and reports."""
        batch = batch or self.current_batch()
        rows = self._db.execute(
            "SELECT foreign_card, kind, COUNT(*), SUM(amount) FROM txn WHERE batch = ? "
            "AND state IN ('APPROVED', 'VOIDED') GROUP BY foreign_card, kind",
            (batch,),
        ).fetchall()
        return {("foreign" if f else "domestic", k): (c, int(a)) for f, k, c, a in rows}

    def settled_totals_by_kind(self, settlement_id: int) -> dict[tuple[str, str], tuple[int, int]]:
        """totals_by_kind of a settled batch, by its settlement (its Z report), wherever the
        batch is kept: the hot journal or, once it moved, the archive."""
        sql = ("SELECT foreign_card, kind, COUNT(*), SUM(amount) FROM txn WHERE settlement_id = ? "
               "AND state IN ('APPROVED', 'VOIDED') GROUP BY foreign_card, kind")
        rows = (self._db.execute(sql, (settlement_id,)).fetchall()
                or self._settled_in_archive(sql, settlement_id))
        return {("foreign" if f else "domestic", k): (c, int(a)) for f, k, c, a in rows}

    def open_settlement(self) -> SettlementRow | None:
        row = self._db.execute(
            f"SELECT {_SETTLEMENT_COLUMNS} FROM settlement WHERE state IN "
            f"{OPEN_SETTLEMENT_STATES} ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return _row_to_settlement(row) if row else None

    def last_settlement(self) -> SettlementRow | None:
        row = self._db.execute(
            f"SELECT {_SETTLEMENT_COLUMNS} FROM settlement WHERE state = 'DONE' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return _row_to_settlement(row) if row else None

    def get_settlement(self, settlement_id: int) -> SettlementRow:
        sql = f"SELECT {_SETTLEMENT_COLUMNS} FROM settlement WHERE id = ?"
        rows = (self._db.execute(sql, (settlement_id,)).fetchall()
                or self._settled_in_archive(sql, settlement_id))
        if not rows:
            raise JournalError(f"no settlement {settlement_id}")
        return _row_to_settlement(rows[0])

    def begin_settlement(self, batch: str, stan: str, domestic: SideTotals,
                         foreign: SideTotals, operator: str) -> int:
        totals = json.dumps({
            "domestic": [domestic.debit_amount, domestic.debit_count,
                         domestic.credit_amount, domestic.credit_count],
            "foreign": [foreign.debit_amount, foreign.debit_count,
                        foreign.credit_amount, foreign.credit_count],
        })
        with self._tx() as cur:
            if cur.execute(
                f"SELECT COUNT(*) FROM settlement WHERE state IN {OPEN_SETTLEMENT_STATES}"
            ).fetchone()[0]:
                raise JournalError("a settlement is already in progress")
            cur.execute(
                "INSERT INTO settlement (batch, state, stan, totals, started_at, operator) "
                "VALUES (?, 'REQUESTED', ?, ?, ?, ?)",
                (batch, stan, totals, self._clock(), operator),
            )
            sid = cur.lastrowid
            self._audit(cur, operator, "settlement", f"batch {batch} requested", "REQUESTED")
        assert sid is not None
        return sid

    def record_settlement_reply(self, settlement_id: int, dom: str, fgn: str) -> None:
        state = "ENDING" if (dom, fgn) == ("1", "1") else "UPLOADING"
        with self._tx() as cur:
            cur.execute(
                "UPDATE settlement SET state = ?, result_domestic = ?, result_foreign = ? "
                "WHERE id = ? AND state = 'REQUESTED'",
                (state, dom, fgn, settlement_id),
            )
            self._audit(cur, "system", "settlement reply",
                        f"domestic {dom} foreign {fgn}", state)

    def upload_items(self, settlement_id: int, limit: int) -> list[tuple[TxnRecord, str]]:
        s = self.get_settlement(settlement_id)
        sides = [side for side, result in ((0, s.result_domestic), (1, s.result_foreign))
                 if result != "1"]
        if not sides:
            return []
        marks = ",".join("?" * len(sides))
        records = self._select(
            f"batch = ? AND uploaded = 0 AND foreign_card IN ({marks}) AND ("
            f"(kind IN {DEBIT_KINDS} AND state IN {DEBIT_STATES}) OR "
            f"(kind IN {CREDIT_KINDS} AND state IN {CREDIT_STATES})) ",
            (s.batch, *sides), order=f"id LIMIT {int(limit)}",
        )
        return [(r, self.decrypt_pan(r.id)) for r in records]

    def mark_uploaded(self, settlement_id: int, record_ids: tuple[int, ...]) -> None:
        with self._tx() as cur:
            cur.executemany("UPDATE txn SET uploaded = 1 WHERE id = ?", [(i,) for i in record_ids])
            cur.execute(
                "UPDATE settlement SET uploaded_count = uploaded_count + ? WHERE id = ?",
                (len(record_ids), settlement_id),
            )

    def record_end_stan(self, settlement_id: int, stan: str) -> None:
        """The end of upload is about to go with this STAN: keep it for any resend."""
        with self._tx() as cur:
            cur.execute(
                "UPDATE settlement SET end_stan = ?, state = 'ENDING' WHERE id = ? "
                "AND state IN ('UPLOADING', 'ENDING')",
                (stan, settlement_id),
            )

    def abandon_settlement(self, settlement_id: int, reason: str) -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE settlement SET state = 'ABANDONED', reason = ?, finished_at = ? "
                "WHERE id = ?",
                (reason, self._clock(), settlement_id),
            )
            self._audit(cur, "system", "settlement abandoned", reason, "ABANDONED")

    def finish_settlement(self, settlement_id: int,
                          report_copies: tuple[CopyKind, ...] = (CopyKind.MERCHANT,)) -> str:
        """Close the batch: its records join the settlement, the batch number advances, and the
        settlement report is queued, all in one commit: a power loss can neither lose the report
        of a finished settlement nor print one for an unfinished settlement. report_copies=()
        queues none."""
        with self._tx() as cur:
            row = cur.execute(
                "SELECT batch, state FROM settlement WHERE id = ?", (settlement_id,)
            ).fetchone()
            if row is None or row[1] not in ("UPLOADING", "ENDING"):
                raise JournalError(f"settlement {settlement_id} cannot finish from {row}")
            batch = row[0]
            cur.execute(
                "UPDATE settlement SET state = 'DONE', finished_at = ? WHERE id = ?",
                (self._clock(), settlement_id),
            )
            cur.execute("UPDATE txn SET settlement_id = ? WHERE batch = ?", (settlement_id, batch))
            new_batch = int(batch) % COUNTER_WRAP + 1
            cur.execute("UPDATE counters SET value = ? WHERE name = 'batch'", (new_batch,))
            self._audit(cur, "system", "settlement done", f"batch {batch} closed", "DONE")
            if report_copies:
                self._insert_job(cur, JobKind.SETTLEMENT, tuple(report_copies),
                                 settlement_id=settlement_id, batch=batch,
                                 title=f"settlement report {batch}")
        return f"{new_batch:06d}"

    def settlements(self, limit: int) -> list[SettlementRow]:
        """The newest settlements first, whatever their state."""
        rows = self._db.execute(
            f"SELECT {_SETTLEMENT_COLUMNS} FROM settlement ORDER BY id DESC LIMIT ?", (int(limit),)
        ).fetchall()
        return [_row_to_settlement(r) for r in rows]

    def settlement_operator(self, settlement_id: int) -> str | None:
        """Who asked for the settlement (None for one begun before schema 5 kept it)."""
        sql = "SELECT operator FROM settlement WHERE id = ?"
        rows = (self._db.execute(sql, (settlement_id,)).fetchall()
                or self._settled_in_archive(sql, settlement_id))
        if not rows:
            raise JournalError(f"no settlement {settlement_id}")
        return rows[0][0]

    def purge_settled(self, older_than_days: int) -> int:
        """Retention: settled records older than the setting go (never unresolved ones, never
        one another record or a held order still names: the order is the merchant's record of
        what its sale paid and what cancelled it)."""
        cutoff = self._clock() - older_than_days * 86400
        with self._tx() as cur:
            return cur.execute(
                "DELETE FROM txn WHERE settlement_id IS NOT NULL AND created_at < ? AND state IN "
                "('APPROVED','DECLINED','REVERSED','VOIDED','FAILED','RESOLVED_MANUALLY') "
                "AND id NOT IN (SELECT orig_id FROM txn WHERE orig_id IS NOT NULL) "
                "AND id NOT IN (SELECT txn_id FROM held_order WHERE txn_id IS NOT NULL) "
                "AND id NOT IN (SELECT cancel_txn_id FROM held_order "
                "WHERE cancel_txn_id IS NOT NULL)",
                (cutoff,),
            ).rowcount

    # -- print queue ------------------------------------------------------------

    def _insert_job(self, cur: sqlite3.Cursor, kind: JobKind, copies: tuple[CopyKind, ...], *,
                    txn_id: int | None = None, reprint: bool = False, voids_job: int | None = None,
                    title: str = "", printed_any: bool = False, settlement_id: int | None = None,
                    batch: str | None = None, held_order_id: int | None = None) -> int:
        now = self._clock()
        cur.execute(
            "INSERT INTO print_job (kind, state, txn_id, copies, reprint, voids_job, title, "
            "printed_any, created_at, updated_at, settlement_id, batch, held_order_id) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (kind.value, PrintState.QUEUED.value, txn_id, ",".join(c.value for c in copies),
             int(reprint), voids_job, title, int(printed_any), now, now, settlement_id, batch,
             held_order_id),
        )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def enqueue_print(self, kind: JobKind, copies: tuple[CopyKind, ...], *,
                      txn_id: int | None = None, reprint: bool = False, title: str = "",
                      operator: str = "system") -> PrintJob:
        with self._tx() as cur:
            jid = self._insert_job(cur, kind, copies, txn_id=txn_id, reprint=reprint, title=title)
            if reprint:
                self._audit(cur, operator, "reprint", title, "queued")
        return self.print_job(jid)

    def enqueue_held_trail(self, order_id: int, operator: str = "system") -> PrintJob:
        """Queue the audit trail of one held order; it is rebuilt from the journal as it prints."""
        with self._tx() as cur:
            if cur.execute("SELECT 1 FROM held_order WHERE id = ?", (order_id,)).fetchone() is None:
                raise JournalError(f"there is no held order {order_id}")
            title = f"held order {order_id} trail"
            jid = self._insert_job(cur, JobKind.HELD_TRAIL, (CopyKind.MERCHANT,), title=title,
                                   held_order_id=order_id)
            self._audit(cur, operator, "held trail", title, "queued")
        return self.print_job(jid)

    def enqueue_report(self, kind: JobKind, settlement_id: int | None = None, reprint: bool = False,
                       operator: str = "system",
                       copies: tuple[CopyKind, ...] = (CopyKind.MERCHANT,)) -> PrintJob:
        """Queue a report: an X report or transaction list of the open batch, or (again) the
        settlement report of a finished settlement, which then prints marked REPRINT."""
        kind = JobKind(kind)
        if kind not in REPORT_KINDS:
            raise JournalError(f"{kind.value} is not a report; reports are "
                               f"{', '.join(sorted(k.value for k in REPORT_KINDS))}")
        if not copies:
            raise JournalError("a report needs at least one copy")
        with self._tx() as cur:
            if kind is JobKind.SETTLEMENT:
                row = cur.execute("SELECT batch, state FROM settlement WHERE id = ?",
                                  (settlement_id,)).fetchone()
                if row is None:
                    raise JournalError(f"no settlement {settlement_id} to print a report of")
                if row[1] != "DONE":
                    raise JournalError(f"settlement {settlement_id} is {row[1]}, not DONE: "
                                       "its report prints when it finishes")
                batch, title = row[0], f"settlement report {row[0]}"
            else:
                if settlement_id is not None:
                    raise JournalError(f"a {kind.value} report is of the open batch, not of a settlement")
                value = cur.execute("SELECT value FROM counters WHERE name = 'batch'").fetchone()[0]
                batch, title = f"{value:06d}", f"{kind.value} {value:06d}"
            jid = self._insert_job(cur, kind, tuple(copies), reprint=reprint, title=title,
                                   settlement_id=settlement_id, batch=batch)
            self._audit(cur, operator, "reprint" if reprint else "report", title, "queued")
        return self.print_job(jid)

    def last_report_job(self, kind: JobKind) -> PrintJob | None:
        """The newest job of one report kind, whatever its state."""
        row = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM print_job WHERE kind = ? "
                               "ORDER BY id DESC LIMIT 1", (JobKind(kind).value,)).fetchone()
        return _row_to_job(row) if row else None

    def print_job(self, job_id: int) -> PrintJob:
        row = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM print_job WHERE id = ?",
                               (job_id,)).fetchone()
        if row is None:
            raise JournalError(f"no print job {job_id}")
        return _row_to_job(row)

    def print_jobs(self, open_only: bool = True, limit: int = 50) -> list[PrintJob]:
        where = "WHERE state IN ('QUEUED', 'PRINTING', 'PAUSED')" if open_only else ""
        rows = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM print_job {where} ORDER BY id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_row_to_job(r) for r in reversed(rows)]

    def open_print_jobs(self) -> tuple[int, list[int], PrintJob | None]:
        """How many jobs are open (queued, printing, paused), which wait for the operator's
        reprint answer, and the oldest open one: the whole queue, however long it is."""
        count, = self._db.execute(
            "SELECT COUNT(*) FROM print_job WHERE state IN ('QUEUED', 'PRINTING', 'PAUSED')"
        ).fetchone()
        # A job waiting for the answer is QUEUED: recover_prints puts it there, the spooler never
        # takes it (next_print_job) and an answer clears the mark or closes the job.
        waiting = [r[0] for r in self._db.execute(
            f"SELECT id FROM print_job WHERE {PRINT_JOB_OPEN_WHERE} AND state = 'QUEUED' "
            "AND needs_confirm = 1 ORDER BY id")]
        row = self._db.execute(
            f"SELECT {_JOB_COLUMNS} FROM print_job WHERE state IN ('QUEUED', 'PRINTING', 'PAUSED') "
            "ORDER BY id LIMIT 1").fetchone()
        return count, waiting, None if row is None else _row_to_job(row)

    def next_print_job(self) -> PrintJob | None:
        """The oldest job the spooler may print now (re-queued ones wait for the operator)."""
        row = self._db.execute(
            # print_job_open's own WHERE, word for word, or SQLite scans every job ever printed.
            f"SELECT {_JOB_COLUMNS} FROM print_job WHERE {PRINT_JOB_OPEN_WHERE} "
            "AND needs_confirm = 0 ORDER BY id LIMIT 1"
        ).fetchone()
        return _row_to_job(row) if row else None

    def update_print_job(self, job_id: int, state: PrintState | None = None, **fields: object
                         ) -> PrintJob:
        """One job change in one commit; the state move is checked against queue.TRANSITIONS."""
        allowed = {"copies_done", "copy_restarted", "printed_any", "reason"}
        if not set(fields) <= allowed:
            raise JournalError(f"print job fields {sorted(set(fields) - allowed)} cannot be set")
        with self._tx() as cur:
            job = self._job_in(cur, job_id)
            sets, args = ["updated_at = ?"], [self._clock()]
            if state is not None and state is not job.state:
                check_transition(job.state, state)
                sets.append("state = ?")
                args.append(state.value)
            for name, value in fields.items():
                sets.append(f"{name} = ?")
                args.append(int(value) if isinstance(value, bool) else value)
            cur.execute(f"UPDATE print_job SET {', '.join(sets)} WHERE id = ?", (*args, job_id))
        return self.print_job(job_id)

    def _job_in(self, cur: sqlite3.Cursor, job_id: int) -> PrintJob:
        row = cur.execute(f"SELECT {_JOB_COLUMNS} FROM print_job WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise JournalError(f"no print job {job_id}")
        return _row_to_job(row)

    def _cancel_job(self, cur: sqlite3.Cursor, job: PrintJob, reason: str, with_void_slip: bool
                    ) -> int | None:
        check_transition(job.state, PrintState.CANCELLED)
        cur.execute("UPDATE print_job SET state = ?, reason = ?, updated_at = ? WHERE id = ?",
                    (PrintState.CANCELLED.value, reason, self._clock(), job.id))
        slip = None
        if with_void_slip and job.kind is not JobKind.VOID_SLIP:
            # The slip names the copy that is on paper: the one under way, or the last done.
            index = job.copies_done if job.printed_any else job.copies_done - 1
            index = max(0, min(index, len(job.copies) - 1))
            slip = self._insert_job(cur, JobKind.VOID_SLIP, (job.copies[index],), txn_id=job.txn_id,
                                    voids_job=job.id, title=f"void of {job.title}",
                                    settlement_id=job.settlement_id, batch=job.batch)
        return slip

    def finish_print_cancel(self, job_id: int) -> int | None:
        """The copy under way finished after a CANCEL: the job ends, its VOID slip is queued
        in the same commit. Returns the slip's job id."""
        with self._tx() as cur:
            job = self._job_in(cur, job_id)
            slip = self._cancel_job(cur, job, "cancelled", with_void_slip=True)
            self._audit(cur, "operator", "print cancel", job.title, "void slip queued")
        return slip

    def request_print_cancel(self, job_id: int, operator: str) -> CancelAction:
        """CANCEL on a job, by cancel-semantics.md: dropped now, or after its current copy."""
        with self._tx() as cur:
            job = self._job_in(cur, job_id)
            action = cancel_action(job)
            if action is CancelAction.DROP:
                self._cancel_job(cur, job, "cancelled", with_void_slip=False)
            elif action is CancelAction.DROP_WITH_VOID_SLIP:
                self._cancel_job(cur, job, "cancelled", with_void_slip=True)
            elif action is CancelAction.AFTER_CURRENT_COPY:
                cur.execute("UPDATE print_job SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                            (self._clock(), job_id))
            self._audit(cur, operator, "print cancel", job.title, action.value)
        return action

    def confirm_print(self, job_id: int, operator: str) -> PrintJob:
        """The operator asked for a receipt cut by a power loss to be printed again."""
        with self._tx() as cur:
            job = self._job_in(cur, job_id)
            if not job.needs_confirm:
                raise JournalError(f"print job {job_id} is not waiting for a confirmation")
            cur.execute("UPDATE print_job SET needs_confirm = 0, updated_at = ? WHERE id = ?",
                        (self._clock(), job_id))
            self._audit(cur, operator, "reprint after power loss", job.title, "confirmed")
        return self.print_job(job_id)

    def recover_prints(self) -> PrintRecovery:
        """Start-up: jobs the power loss cut are re-queued marked REPRINT, to be confirmed."""
        requeued = voided = kept = 0
        with self._tx() as cur:
            rows = cur.execute(f"SELECT {_JOB_COLUMNS} FROM print_job WHERE state IN "
                               "('QUEUED', 'PRINTING', 'PAUSED')").fetchall()
            for job in map(_row_to_job, rows):
                action = recovery_action(job)
                if action is RecoveryAction.KEEP:
                    kept += 1
                elif action is RecoveryAction.REQUEUE_FOR_CONFIRM:
                    # The REPRINT mark only where paper was used: a copy paused before its
                    # first line is not a second print of anything.
                    restarted = job.printed_any or job.copy_restarted
                    cur.execute(
                        "UPDATE print_job SET state = 'QUEUED', needs_confirm = 1, copy_restarted = ?, "
                        "reason = 'power_loss', updated_at = ? WHERE id = ?",
                        (int(restarted), self._clock(), job.id))
                    self._audit(cur, "system", "print interrupted by power loss", job.title,
                                "re-queued for confirmation")
                    requeued += 1
                elif action is RecoveryAction.CANCEL_WITH_VOID_SLIP:
                    self._cancel_job(cur, job, "cancelled", with_void_slip=True)
                    voided += 1
                elif action is RecoveryAction.DROP:
                    self._cancel_job(cur, job, "cancelled", with_void_slip=False)
        return PrintRecovery(requeued, voided, kept)

    def last_receipt_txn(self) -> TxnRecord | None:
        """The transaction of the newest receipt printed or queued (what "reprint last" means)."""
        row = self._db.execute(
            "SELECT txn_id FROM print_job WHERE kind = 'receipt' AND txn_id IS NOT NULL "
            "ORDER BY id DESC LIMIT 1").fetchone()
        return self.get(row[0]) if row else None

    # -- audit ------------------------------------------------------------------

    def _audit(self, cur: sqlite3.Cursor, operator: str, action: str, detail: str,
               outcome: str) -> None:
        """One audit line, chained to the one before it (inside the caller's BEGIN IMMEDIATE,
        so no other writer can slip a row in between the read and the insert)."""
        last = cur.execute("SELECT id, chain FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        if last is None:  # none yet, or every row moved: go on from the last that moved
            with contextlib.suppress(sqlite3.OperationalError):  # no archive_log before schema 17
                moved = archive.anchor(cur.connection)
                last = moved if moved[0] else None
        row = ((last[0] + 1) if last else 1, float(self._clock()), operator, action, detail, outcome)
        previous = (last[1] or "") if last else chain.GENESIS
        cur.execute(
            "INSERT INTO audit (id, at, operator, action, detail, outcome, chain) "
            "VALUES (?,?,?,?,?,?,?)", (*row, chain.row_hash(previous, row)),
        )

    def audit(self, operator: str, action: str, detail: str, outcome: str) -> None:
        with self._tx() as cur:
            self._audit(cur, operator, action, detail, outcome)

    def audit_lines(self, limit: int | None = None) -> list[tuple[float, str, str, str, str]]:
        """The newest audit lines first (all of them unless a limit is given)."""
        sql = "SELECT at, operator, action, detail, outcome FROM audit ORDER BY id DESC"
        if limit is None:
            return self._db.execute(sql).fetchall()
        return self._db.execute(sql + " LIMIT ?", (limit,)).fetchall()

    def audit_chain_break(self) -> int | None:
        """The id of the first audit row whose hash does not follow from the rows before it
        (changed, removed or inserted behind the journal's back); None if the chain holds."""
        rows = self._db.execute(
            "SELECT id, at, operator, action, detail, outcome, chain FROM audit ORDER BY id")
        start = archive.anchor(self._db) if self.archive_log() else (0, chain.GENESIS)
        return chain.first_break(rows, start[1])

    def audit_matching(self, action_like: str, detail_like: str) -> list[tuple[float, str, str, str, str]]:
        """Audit lines (at, operator, action, detail, outcome) matching both LIKE patterns, oldest
        first, archived ones included (a held order's trail may span the move)."""
        sql = ("SELECT at, operator, action, detail, outcome FROM audit WHERE action LIKE ? "
               "AND detail LIKE ? ORDER BY id")
        lines: list[tuple[float, str, str, str, str]] = []
        # Rows of a move cut short are still hot: read them there, not twice.
        moving = [r.audit_from for r in self.archive_log() if r.state == "COPYING"]
        below = min(moving) if moving else None
        for name, _skip in reversed(self._archive_files()):
            conn = self._archives.connection(name)
            if conn is not None:
                lines += conn.execute(sql.replace("ORDER BY", "AND id < ? ORDER BY"),
                                      (action_like, detail_like, below if below else 2**62)).fetchall()
        return lines + self._db.execute(sql, (action_like, detail_like)).fetchall()

    def integrity(self) -> str:
        return self._db.execute("PRAGMA quick_check").fetchone()[0]
