"""The journal's SQL schema and its migrations, versioned with PRAGMA user_version, and the rule
that lets older firmware open a journal a newer one migrated (a board that fell back to its
previous slot after an update: docs/updates.md, "The journal after a fallback").

Each migration is a list of steps applied in one transaction: SQL statements, or a function
of the cursor for what SQL cannot do (hashing). Each migration from 16 on declares whether it is
additive: firmware of the schema before it can still read AND write the journal after it (new
tables, new nullable columns or columns with a default, new indexes or one rebuilt under its own
name with the same rows; nothing renamed, dropped, retyped or given a new meaning, no rows that
older firmware would misread). The journal records
in journal_compat the lowest schema whose firmware may open it (min_reader); older firmware opens
a newer journal only when its own schema is at least that, and otherwise refuses in words,
touching nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from firmware.journal import chain

Step = str | Callable[[sqlite3.Cursor], None]

AUDIT_NO_UPDATE = """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
           BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"""

MIGRATIONS: list[list[Step]] = [
    # 1: transactions, counters, settlements, audit
    [
        """CREATE TABLE counters (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        )""",
        "INSERT INTO counters (name, value) VALUES ('stan', 0), ('invoice', 0), ('batch', 1)",
        """CREATE TABLE txn (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            stan TEXT NOT NULL,
            batch TEXT NOT NULL,
            invoice TEXT NOT NULL,
            amount INTEGER NOT NULL CHECK (amount >= 0),
            currency TEXT NOT NULL,
            pan_enc BLOB,
            pan_masked TEXT NOT NULL,
            foreign_card INTEGER NOT NULL,
            entry_mode TEXT NOT NULL,
            pin_entered INTEGER NOT NULL,
            operator TEXT NOT NULL,
            local_date TEXT NOT NULL,
            local_time TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            reference TEXT,
            orig_id INTEGER REFERENCES txn(id),
            orig_batch TEXT, orig_stan TEXT, orig_rrn TEXT, orig_auth TEXT, orig_date TEXT,
            response_code TEXT, rrn TEXT, auth_code TEXT, card_org TEXT,
            reversal_reason TEXT,
            reversal_attempts INTEGER NOT NULL DEFAULT 0,
            advice_attempts INTEGER NOT NULL DEFAULT 0,
            uploaded INTEGER NOT NULL DEFAULT 0,
            settlement_id INTEGER REFERENCES settlement(id)
        )""",
        # A STAN is never used twice within a batch; the counter makes it so,
        # the index proves it.
        "CREATE UNIQUE INDEX txn_batch_stan ON txn (batch, stan)",
        "CREATE INDEX txn_state ON txn (state)",
        "CREATE INDEX txn_batch_invoice ON txn (batch, invoice)",
        "CREATE INDEX txn_rrn ON txn (rrn)",
        """CREATE TABLE settlement (
            id INTEGER PRIMARY KEY,
            batch TEXT NOT NULL,
            state TEXT NOT NULL,
            stan TEXT NOT NULL,
            totals TEXT NOT NULL,
            result_domestic TEXT,
            result_foreign TEXT,
            uploaded_count INTEGER NOT NULL DEFAULT 0,
            reason TEXT,
            started_at REAL NOT NULL,
            finished_at REAL
        )""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            operator TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL,
            outcome TEXT NOT NULL
        )""",
        # Append-only: the audit trail cannot be edited from SQL either.
        AUDIT_NO_UPDATE,
        """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
           BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    ],
]

MIGRATIONS.append([
    # 2: the upload-end STAN is kept, so a resumed end of upload is a repeat the host
    # recognises (same STAN) rather than a new message for a batch it already closed.
    "ALTER TABLE settlement ADD COLUMN end_stan TEXT",
    # Foreign keys are on: without this index every purged row scans the whole table
    # for follow-ups that name it (12 ms a row on a 100k-row journal; 0.24 ms with it).
    "CREATE INDEX txn_orig_id ON txn (orig_id) WHERE orig_id IS NOT NULL",
    # Only answered records have an RRN: the index need not grow with every PENDING.
    "DROP INDEX txn_rrn",
    "CREATE INDEX txn_rrn ON txn (rrn) WHERE rrn IS NOT NULL",
])

MIGRATIONS.append([
    # 3: fewer index pages per commit (the write-ahead commits are the cost of a sale):
    # nothing looks records up by invoice, and only unresolved states are looked up
    # by state, so that index holds only the few records the terminal still owes work.
    "DROP INDEX txn_batch_invoice",
    "DROP INDEX txn_state",
    "CREATE INDEX txn_unresolved ON txn (state) "
    "WHERE state IN ('PENDING', 'REVERSAL_DUE', 'ADVICE_DUE')",
])

MIGRATIONS.append([
    # 4: the print queue. A receipt job names its transaction and is re-rendered from
    # the record (masked PAN only), so no document with card data is ever stored.
    """CREATE TABLE print_job (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        txn_id INTEGER REFERENCES txn(id) ON DELETE CASCADE,
        copies TEXT NOT NULL,
        copies_done INTEGER NOT NULL DEFAULT 0,
        reprint INTEGER NOT NULL DEFAULT 0,
        copy_restarted INTEGER NOT NULL DEFAULT 0,
        printed_any INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        needs_confirm INTEGER NOT NULL DEFAULT 0,
        voids_job INTEGER REFERENCES print_job(id) ON DELETE CASCADE,
        reason TEXT,
        title TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX print_job_open ON print_job (state) "
    "WHERE state IN ('QUEUED', 'PRINTING', 'PAUSED')",
    "CREATE INDEX print_job_txn ON print_job (txn_id) WHERE txn_id IS NOT NULL",
    "CREATE INDEX print_job_voids ON print_job (voids_job) WHERE voids_job IS NOT NULL",
])

MIGRATIONS.append([
    # 5: reports in the print queue. A Z report job names its settlement, an X report or a
    # transaction list its batch; each is re-rendered from the journal when it prints.
    "ALTER TABLE print_job ADD COLUMN settlement_id INTEGER REFERENCES settlement(id)",
    "ALTER TABLE print_job ADD COLUMN batch TEXT",
    "CREATE INDEX print_job_settlement ON print_job (settlement_id) WHERE settlement_id IS NOT NULL",
    # Who settled: the Z report prints it (begin_settlement already took it, for the audit).
    "ALTER TABLE settlement ADD COLUMN operator TEXT",
])

MIGRATIONS.append([
    # 6: held orders (挂单) and the terminal's own life cycle (deregistration, 注销).
    # A held order moves no money; when it is paid, txn_id names the sale that paid it.
    """CREATE TABLE held_order (
        id INTEGER PRIMARY KEY,
        reference TEXT NOT NULL,
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        kind TEXT NOT NULL DEFAULT 'sale',
        state TEXT NOT NULL,
        operator TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT 'keypad',
        txn_id INTEGER REFERENCES txn(id),
        cancel_reason TEXT,
        cancel_txn_id INTEGER REFERENCES txn(id),
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX held_order_open ON held_order (state) WHERE state IN ('HELD', 'PAYING', 'CANCELLING')",
    "CREATE INDEX held_order_reference ON held_order (reference)",
    # One row per key: 'lifecycle' (ACTIVE | DEREGISTERING | DEREGISTERED), 'dereg_step' (the
    # last step done), 'dereg_backup' (the verified backup's directory). Survives power loss.
    """CREATE TABLE terminal_state (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "INSERT INTO terminal_state (name, value, updated_at) VALUES ('lifecycle', 'ACTIVE', 0)",
    # A held order's audit trail in the print queue names its order (rebuilt when it prints).
    "ALTER TABLE print_job ADD COLUMN held_order_id INTEGER REFERENCES held_order(id)",
])

MIGRATIONS.append([
    # 7: a record owed to the host whose message cannot be built is QUARANTINED with the words
    # why (problem); it is unresolved, so the partial index of unresolved states takes it.
    "ALTER TABLE txn ADD COLUMN problem TEXT",
    "DROP INDEX txn_unresolved",
    "CREATE INDEX txn_unresolved ON txn (state) "
    "WHERE state IN ('PENDING', 'REVERSAL_DUE', 'ADVICE_DUE', 'QUARANTINED')",
    # Held orders are now tied to their sale (and to the void/refund cancelling them) in the
    # record's own commit. Orders left PAYING by an older firmware, which found the sale later
    # by reference, are tied once here the way it did: the newest sale with the reference
    # written since the order's last change.
    "UPDATE held_order SET txn_id = (SELECT t.id FROM txn t WHERE t.kind = 'sale' "
    "AND t.reference = held_order.reference AND t.created_at >= held_order.updated_at - 2 "
    "AND t.id NOT IN (SELECT txn_id FROM held_order WHERE txn_id IS NOT NULL) "
    "ORDER BY t.id DESC LIMIT 1) WHERE state = 'PAYING' AND txn_id IS NULL",
    "CREATE INDEX held_order_txn ON held_order (txn_id) WHERE txn_id IS NOT NULL",
    "CREATE INDEX held_order_cancel_txn ON held_order (cancel_txn_id) "
    "WHERE cancel_txn_id IS NOT NULL",
])

MIGRATIONS.append([
    # 8: the ECR link's request keys (firmware/journal/requests.py). A till that timed out sends
    # the same request again; the key (who asked, the till's id or ref) finds the first one, so
    # the retry is answered with its outcome instead of running twice. txn_id is written in the
    # same commit as the record it names, so a restart cannot separate the two.
    """CREATE TABLE ecr_request (
        source TEXT NOT NULL,
        key TEXT NOT NULL,
        op TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('RUNNING', 'DONE')),
        txn_id INTEGER REFERENCES txn(id) ON DELETE SET NULL,
        reply TEXT,
        created_at REAL NOT NULL,
        PRIMARY KEY (source, key)
    )""",
    "CREATE INDEX ecr_request_created ON ecr_request (created_at)",
    # Purging a settled record looks up the keys that name it (foreign key): index, not scan.
    "CREATE INDEX ecr_request_txn ON ecr_request (txn_id) WHERE txn_id IS NOT NULL",
])

MIGRATIONS.append([
    # 9: the supervisor password guard (firmware/security.py): wrong tries per source ('keypad',
    # each ECR peer; '*' = every source together) and the lock they caused, so neither a
    # restart nor a power loss resets a lock. A source's row goes when its count is back to 0.
    """CREATE TABLE password_lock (
        source TEXT PRIMARY KEY,
        wrong INTEGER NOT NULL,
        since REAL NOT NULL,
        locked_until REAL NOT NULL
    )""",
])

MIGRATIONS.append([
    # 10: the audit log becomes tamper-evident: each row carries SHA-256 of the previous row's
    # value and its own content (firmware/journal/chain.py). The rows already there are chained
    # once, here, with the append-only trigger lifted for that one step only.
    "ALTER TABLE audit ADD COLUMN chain TEXT",
    "DROP TRIGGER audit_no_update",
    chain.chain_existing,
    AUDIT_NO_UPDATE,
])

MIGRATIONS.append([
    # 11: what a reversal or a resent advice must copy from its original, now that the card is
    # gone (docs/dialect.md, "Reversals"): field 22 and 60.4/60.5 as the request carried them,
    # the card organisation a refund sends back in 63, and the auth code of a reply whose MAC
    # failed (for the A0 reversal's 38; never shown as an approval).
    "ALTER TABLE txn ADD COLUMN pos_entry TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE txn ADD COLUMN read_cap TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE txn ADD COLUMN orig_card_org TEXT",
    "ALTER TABLE txn ADD COLUMN reversal_auth TEXT",
    # Older rows get what the older firmware sent: 22 from the entry mode and whether a PIN was
    # entered (the rule of firmware/host/messages.py ENTRY_MODES, then 1 PIN / 2 no PIN), and
    # 60.4/60.5 only for a fallback swipe (52), the only message that carried them.
    "UPDATE txn SET pos_entry = (CASE entry_mode WHEN 'swipe' THEN '02' WHEN 'fallback' THEN '02' "
    "WHEN 'chip' THEN '05' WHEN 'contactless' THEN '07' ELSE '01' END) "
    "|| (CASE pin_entered WHEN 1 THEN '1' ELSE '2' END), "
    "read_cap = (CASE entry_mode WHEN 'fallback' THEN '52' ELSE '' END)",
])

MIGRATIONS.append([
    # 12: the voucher number (invoice, 凭证号) is the one number a merchant sees and types: void,
    # reprint, lookup and the review find a record by it (the newest with that number in the
    # scope asked, firmware/journal/store.py find_by_invoice), so it gets its index back. A
    # follow-up keeps its original's voucher number too (its slip prints 原凭证号); follow-ups
    # already written take it from the original they name.
    "CREATE INDEX txn_invoice ON txn (invoice, batch)",
    "ALTER TABLE txn ADD COLUMN orig_invoice TEXT",
    "UPDATE txn SET orig_invoice = (SELECT o.invoice FROM txn o WHERE o.id = txn.orig_id) "
    "WHERE orig_id IS NOT NULL",
])

MIGRATIONS.append([
    # 13: the fields a CUP sale slip prints beside the card (issue 13 A15): the issuing and the
    # acquiring institution from the reply's field 44 (发卡行 / 收单行), and the slip's expiry,
    # already masked (the expiry itself is never stored).
    "ALTER TABLE txn ADD COLUMN issuer_id TEXT",
    "ALTER TABLE txn ADD COLUMN acquirer_id TEXT",
    "ALTER TABLE txn ADD COLUMN expiry_shown TEXT",
])

MIGRATIONS.append([
    # 14: chip transactions (docs/chip.md). What a reversal, a batch upload and the slip need once
    # the card is gone: the card sequence number (field 23), the request's field 55 as sent (hex;
    # its tags are none of the sensitive ones: no 57, 5A or 5F20), and the chip's own record of
    # the outcome (hex TLV: AID, application label, the final cryptogram, TVR, TSI, ATC, issuer
    # application data, script results) for the slip, the reversal's and the script advice's 55.
    "ALTER TABLE txn ADD COLUMN card_seq TEXT",
    "ALTER TABLE txn ADD COLUMN icc_data TEXT",
    "ALTER TABLE txn ADD COLUMN chip_tags TEXT",
    # The issuer-script result advice (0620) a chip transaction owes once its card ran the
    # issuer's scripts: NULL none, 'due' until the host acknowledges it, 'sent', or 'dropped'
    # after SCRIPT_ADVICE_TRIES unanswered tries (audited). Set in the outcome's own commit.
    "ALTER TABLE txn ADD COLUMN script_advice TEXT",
    "CREATE INDEX txn_script_advice ON txn (script_advice) WHERE script_advice = 'due'",
    # And the chip parameter tables the host downloads (0800/370 CA keys, 380 AIDs) and their
    # versions (firmware/journal/emvparams.py). A download is swapped in by one transaction, so
    # a power cut mid-download keeps the old tables; no row at all means "never downloaded"
    # (the built-in AIDs, no CA key).
    """CREATE TABLE emv_capk (
        rid TEXT NOT NULL,
        idx INTEGER NOT NULL CHECK (idx BETWEEN 0 AND 255),
        modulus BLOB NOT NULL,
        exponent BLOB NOT NULL,
        check_value BLOB NOT NULL,
        expiry TEXT NOT NULL,
        PRIMARY KEY (rid, idx)
    )""",
    """CREATE TABLE emv_aid (
        aid TEXT PRIMARY KEY,
        params TEXT NOT NULL
    )""",
    """CREATE TABLE emv_param_version (
        tbl TEXT PRIMARY KEY CHECK (tbl IN ('capk', 'aid')),
        version TEXT NOT NULL,
        count INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        downloaded_at REAL NOT NULL
    )""",
])

MIGRATIONS.append([
    # 15: the paired ECR tills (firmware/journal/tills.py, docs/ecr.md "Paired tills"): each
    # till's key, sealed by the key store's vault key (never in clear on disk), and the last
    # request sequence number it used, taken in its own commit before the request runs, so no
    # request can be played again, across restarts and power cuts too.
    """CREATE TABLE ecr_till (
        till TEXT PRIMARY KEY CHECK (length(till) = 3),
        key_sealed BLOB NOT NULL,
        last_seq INTEGER NOT NULL CHECK (last_seq >= 0),
        paired_at REAL NOT NULL,
        paired_by TEXT NOT NULL
    )""",
])

MIGRATIONS.append([
    # 16: the compatibility rule (module docstring): 'min_reader' and the 'schema' it was worked
    # out for, rewritten in the same transaction as every later migration (Journal._migrate),
    # from ADDITIVE below. A record for another schema than user_version is not trusted.
    """CREATE TABLE journal_compat (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    )""",
])

# The WHERE of the partial indexes as the lookups must write it for SQLite to use the index
# (migration 17's comment). Never edited: an index with another WHERE is a new migration.
TXN_UNRESOLVED_WHERE = ("state = 'PENDING' OR state = 'REVERSAL_DUE' OR state = 'ADVICE_DUE' "
                        "OR state = 'QUARANTINED'")  # txn_unresolved, migration 17
PRINT_JOB_OPEN_WHERE = "state IN ('QUEUED', 'PRINTING', 'PAUSED')"  # print_job_open, migration 4

MIGRATIONS.append([
    # 17: lookups that scanned the whole journal, indexed (issue 19). SQLite uses a partial index
    # only where it can prove that the query's WHERE implies the index's, term by term: `state =
    # 'REVERSAL_DUE'` implies an OR of equalities that names it, but not `state IN (...)`. So
    # txn_unresolved (migration 7) served no query at all while every sale kept it up (a page in
    # each of its two commits), and recover() at start-up, the backlog check before every
    # operation (reversals_due, advices_due) and the idle screen's counts each read every record
    # (a 1M-record journal: seconds). The same rows, in the form those lookups can use:
    "DROP INDEX txn_unresolved",
    f"CREATE INDEX txn_unresolved ON txn (state) WHERE {TXN_UNRESOLVED_WHERE}",
    # A refund's follow-ups are found by orig_id OR by the RRN of an original from elsewhere
    # (store.follow_ups): without an index on that RRN the OR scanned the journal on every void
    # and refund. Refunds only: no sale writes a page of it.
    "CREATE INDEX txn_refund_orig_rrn ON txn (orig_rrn) WHERE kind = 'refund' "
    "AND orig_rrn IS NOT NULL",
])

MIGRATIONS.append([
    # 18: the archive (firmware/journal/archive.py, docs/journal.md "The archive"): settled batches
    # past the newest few move into one SQLite file per month, so the hot journal stays small.
    # One row per batch that moved or is moving: where to, how many records, the digest of what
    # was copied, the audit rows that went with it and the chain value the hot rows follow from.
    # Not additive: firmware before it would not find archived records (a refund's original)
    # and would see the hot audit chain start past its genesis.
    """CREATE TABLE archive_log (
        settlement_id INTEGER PRIMARY KEY,
        batch TEXT NOT NULL,
        file TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('COPYING', 'MOVED', 'PURGED', 'WIPED')),
        txn_count INTEGER NOT NULL,
        digest TEXT NOT NULL,
        audit_from INTEGER NOT NULL,
        audit_to INTEGER NOT NULL,
        audit_hash TEXT NOT NULL,
        txn_min_id INTEGER NOT NULL,
        txn_max_id INTEGER NOT NULL,
        started_at REAL NOT NULL,
        moved_at REAL
    )""",
    # A settled batch is found by its settlement (the move selects and deletes by it).
    "CREATE INDEX txn_settlement ON txn (settlement_id) WHERE settlement_id IS NOT NULL",
])

SCHEMA_VERSION = len(MIGRATIONS)

# The migrations (by number, 1-based) that are additive in the sense of the module docstring.
# 1-16 are not: firmware before 16 knows no rule and refuses any newer journal by its version.
# A migration not listed here is breaking: firmware older than it refuses the journal after it.
# 17: an index rebuilt with the same rows and a new one; older firmware's SQL runs unchanged.
ADDITIVE: frozenset[int] = frozenset({17})
COMPAT_SINCE = 16  # the first schema that records min_reader


def min_reader(version: int, additive: frozenset[int] = ADDITIVE) -> int:
    """The lowest schema whose firmware may read and write a journal at `version`: the newest
    breaking migration up to it (an additive one keeps the readers of the schema before)."""
    lowest = 0
    for number in range(1, version + 1):
        if number not in additive:
            lowest = number
    return lowest

# The first schema with the archive (archive_log): found by the table, not by a number to keep.
ARCHIVE_SINCE = next(number for number, steps in enumerate(MIGRATIONS, start=1)
                     if any(isinstance(step, str) and "CREATE TABLE archive_log" in step
                            for step in steps))
