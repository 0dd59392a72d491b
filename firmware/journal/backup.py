"""The journal's export before deregistration: an SQLite online backup, a CSV of transactions with
masked PANs only, a manifest with the SHA-256 of each file; verification by re-reading it, and a
restore into a fresh journal. Also a CLI: `python -m firmware.journal.backup verify|restore ...`.

The copy carries no card data at all: its encrypted PANs are cleared (the card-data key is about
to be wiped, so they could never be read again) and the copy is vacuumed before it is hashed.
The journal's archive files (firmware/journal/archive.py) are copied the same way into archive/,
each with its own counts and totals in the manifest, and their records are in the CSV too.
The terminal never deletes an export.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import sqlite3
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from firmware.journal.durable import fsync_dir, fsync_file

JOURNAL_NAME = "journal.db"
CSV_NAME = "transactions.csv"
MANIFEST_NAME = "manifest.json"
ARCHIVE_SUBDIR = "archive"
FORMAT = "posfw-journal-backup/1"
CSV_COLUMNS = ("id", "kind", "state", "batch", "stan", "invoice", "amount", "currency", "pan_masked",
               "foreign_card", "entry_mode", "local_date", "local_time", "operator", "reference",
               "response_code", "rrn", "auth_code", "card_org", "settlement_id")
COUNTED_TABLES = ("txn", "settlement", "audit", "print_job", "held_order", "counters")
# 13 or more digits in a row: a full card number, which an export must never hold.
_FULL_PAN = re.compile(rb"(?<!\d)\d{13,19}(?!\d)")


class BackupError(Exception):
    """The export could not be written, or does not verify; the message says which part."""


@dataclass
class Verdict:
    ok: bool
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    totals: list[list[object]] = field(default_factory=list)

    def __str__(self) -> str:
        if self.ok:
            return f"backup verified: {self.counts.get('txn', 0)} transactions, checksums and totals match"
        return "backup does NOT verify: " + "; ".join(self.problems)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def table_counts(conn: sqlite3.Connection) -> dict[str, int]:
    present = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return {t: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
            for t in COUNTED_TABLES if t in present}


def txn_totals(conn: sqlite3.Connection) -> list[list[object]]:
    """[batch, kind, state, count, amount] of every transaction group: what a restore must match."""
    rows = conn.execute("SELECT batch, kind, state, COUNT(*), SUM(amount) FROM txn "
                        "GROUP BY batch, kind, state ORDER BY batch, kind, state").fetchall()
    return [[b, k, s, int(c), int(a or 0)] for b, k, s, c, a in rows]


def _moved(conn: sqlite3.Connection) -> dict[str, list[int]]:
    """file -> settlement ids whose move into it is committed, from a journal (copy)'s log."""
    try:
        rows = conn.execute("SELECT file, settlement_id FROM archive_log WHERE state = 'MOVED'")
    except sqlite3.OperationalError:  # a journal from before the archive
        return {}
    moved: dict[str, list[int]] = {}
    for name, sid in rows:
        moved.setdefault(name, []).append(int(sid))
    return moved


def _archive_books(conn: sqlite3.Connection, sids: list[int]) -> tuple[int, list[list[object]], list[tuple]]:
    """(records, totals, CSV rows) of an archive file's committed batches."""
    marks = ",".join("?" * len(sids)) or "NULL"
    where = f"WHERE settlement_id IN ({marks})"
    totals = conn.execute(f"SELECT batch, kind, state, COUNT(*), SUM(amount) FROM txn {where} "
                          "GROUP BY batch, kind, state ORDER BY batch, kind, state", sids).fetchall()
    rows = conn.execute(f"SELECT {', '.join(CSV_COLUMNS)} FROM txn {where} ORDER BY id", sids).fetchall()
    return len(rows), [[b, k, st, int(c), int(a or 0)] for b, k, st, c, a in totals], rows


def _copy_archives(journal_path: Path, journal_copy: sqlite3.Connection, into: Path
                   ) -> tuple[dict[str, dict[str, object]], list[tuple]]:
    """Copy every archive file the journal has committed batches in, card data cleared; their
    manifest entries (records, totals) and their CSV rows."""
    from firmware.journal.archive import directory_for

    entries: dict[str, dict[str, object]] = {}
    csv_rows: list[tuple] = []
    for name, sids in sorted(_moved(journal_copy).items()):
        source_path = directory_for(journal_path) / name
        if not source_path.is_file():
            raise BackupError(f"the archive file {source_path} is missing")
        into.mkdir(exist_ok=True)
        source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
        try:
            dest = sqlite3.connect(into / name)
            try:
                source.backup(dest)
                dest.execute("PRAGMA journal_mode = DELETE")
                dest.execute("UPDATE txn SET pan_enc = NULL WHERE pan_enc IS NOT NULL")
                dest.commit()
                dest.execute("VACUUM")
                records, totals, rows = _archive_books(dest, sids)
            finally:
                dest.close()
        finally:
            source.close()
        entries[name] = {"records": records, "totals": totals}
        csv_rows += rows
    return entries, csv_rows


def export(journal_path: Path, into: Path, terminal_id: str = "", clock: float | None = None) -> Path:
    """Write a new export directory under `into` and return it (never overwrites an export)."""
    if not into.is_dir():
        raise BackupError(f"backup directory {into} does not exist or is not a directory")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(clock))
    target = into / f"posfw-backup-{terminal_id or 'terminal'}-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = into / f"posfw-backup-{terminal_id or 'terminal'}-{stamp}-{n}"
    work = target.with_name(target.name + ".partial")
    try:
        work.mkdir()
        db_copy = work / JOURNAL_NAME
        source = sqlite3.connect(f"file:{journal_path}?mode=ro", uri=True)
        try:
            dest = sqlite3.connect(db_copy)
            try:
                source.backup(dest)  # SQLite's online backup: a consistent snapshot
                dest.execute("PRAGMA journal_mode = DELETE")
                dest.execute("UPDATE txn SET pan_enc = NULL WHERE pan_enc IS NOT NULL")
                dest.commit()
                dest.execute("VACUUM")
                counts, totals = table_counts(dest), txn_totals(dest)
                rows = dest.execute(f"SELECT {', '.join(CSV_COLUMNS)} FROM txn ORDER BY id").fetchall()
                archives, archived_rows = _copy_archives(journal_path, dest, work / ARCHIVE_SUBDIR)
            finally:
                dest.close()
        finally:
            source.close()
        rows = sorted([*rows, *archived_rows])
        with open(work / CSV_NAME, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(CSV_COLUMNS)
            writer.writerows(rows)
        names = [JOURNAL_NAME, CSV_NAME, *(f"{ARCHIVE_SUBDIR}/{a}" for a in archives)]
        files = {name: {"sha256": sha256_of(work / name), "bytes": (work / name).stat().st_size}
                 for name in names}
        manifest = {"format": FORMAT, "terminal": terminal_id, "created_at": clock or time.time(),
                    "files": files, "counts": counts, "totals": totals, "archives": archives}
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        for name in (*names, MANIFEST_NAME):
            fsync_file(work / name)
        if archives:
            fsync_dir(work / ARCHIVE_SUBDIR)
        fsync_dir(work)
        os.replace(work, target)  # the export appears complete or not at all
        fsync_dir(into)
    except (OSError, sqlite3.Error) as exc:
        raise BackupError(f"the backup into {into} failed: {exc}") from exc
    return target


def verify(directory: Path, expect_counts: dict[str, int] | None = None,
           expect_totals: list[list[object]] | None = None) -> Verdict:
    """Re-read an export: every checksum, the copy's integrity, its row counts and totals against
    the manifest (and against the live journal's, when given), the CSV against the copy."""
    v = Verdict(ok=False)
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        v.problems.append(f"manifest unreadable: {exc}")
        return v
    if manifest.get("format") != FORMAT:
        v.problems.append(f"not a journal backup (format {manifest.get('format')!r})")
        return v
    for name, info in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            v.problems.append(f"{name} is missing")
        elif sha256_of(path) != info.get("sha256"):
            v.problems.append(f"{name}: SHA-256 does not match the manifest")
    if v.problems:
        return v
    try:
        conn = sqlite3.connect(f"file:{directory / JOURNAL_NAME}?mode=ro", uri=True)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
            if verdict != "ok":
                v.problems.append(f"journal copy fails integrity_check: {verdict}")
            v.counts, v.totals = table_counts(conn), txn_totals(conn)
            with_pan = conn.execute("SELECT COUNT(*) FROM txn WHERE pan_enc IS NOT NULL").fetchone()[0]
            if with_pan:
                v.problems.append(f"journal copy still holds {with_pan} encrypted card numbers")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        v.problems.append(f"journal copy unreadable: {exc}")
        return v
    if v.counts != manifest.get("counts"):
        v.problems.append(f"row counts {v.counts} differ from the manifest's {manifest.get('counts')}")
    if v.totals != manifest.get("totals"):
        v.problems.append("transaction totals differ from the manifest's")
    if expect_counts is not None and v.counts.get("txn") != expect_counts.get("txn"):
        v.problems.append(f"the copy has {v.counts.get('txn')} transactions, the journal "
                          f"{expect_counts.get('txn')}")
    if expect_totals is not None and v.totals != expect_totals:
        v.problems.append("the copy's totals differ from the live journal's")
    archived = _verify_archives(directory, manifest, v)
    raw = (directory / CSV_NAME).read_bytes()
    if _FULL_PAN.search(raw):
        v.problems.append("the CSV holds a full card number")
    with open(directory / CSV_NAME, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    expected = v.counts.get("txn", -1) + sum(n for n, _ in archived)
    if len(rows) != expected:
        v.problems.append(f"the CSV has {len(rows)} rows, the copy {expected} transactions")
    elif sum(int(r["amount"]) for r in rows) != sum(int(t[4]) for t in v.totals) + sum(  # type: ignore[call-overload]
            a for _, a in archived):
        v.problems.append("the CSV's amounts do not add up to the copy's totals")
    v.ok = not v.problems
    return v


def _verify_archives(directory: Path, manifest: dict, v: Verdict) -> list[tuple[int, int]]:
    """Each archive copy: integrity, no card data, its committed records and totals as the
    manifest has them. Returns (records, amount) of each, for the CSV's check."""
    found: list[tuple[int, int]] = []
    try:
        with closing(sqlite3.connect(f"file:{directory / JOURNAL_NAME}?mode=ro", uri=True)) as conn:
            moved = _moved(conn)
    except sqlite3.Error as exc:
        v.problems.append(f"journal copy unreadable: {exc}")
        return found
    archives = manifest.get("archives", {})
    if set(archives) != set(moved):
        v.problems.append(f"the manifest lists archive files {sorted(archives)}, the journal copy "
                          f"{sorted(moved)}")
        return found
    for name, entry in archives.items():
        try:
            with closing(sqlite3.connect(f"file:{directory / ARCHIVE_SUBDIR / name}?mode=ro",
                                         uri=True)) as conn:
                verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
                if verdict != "ok":
                    v.problems.append(f"archive copy {name} fails integrity_check: {verdict}")
                if conn.execute("SELECT COUNT(*) FROM txn WHERE pan_enc IS NOT NULL").fetchone()[0]:
                    v.problems.append(f"archive copy {name} still holds encrypted card numbers")
                records, totals, _rows = _archive_books(conn, moved[name])
        except sqlite3.Error as exc:
            v.problems.append(f"archive copy {name} unreadable: {exc}")
            continue
        if records != entry.get("records") or totals != entry.get("totals"):
            v.problems.append(f"archive copy {name}: records or totals differ from the manifest's")
        found.append((records, sum(int(t[4]) for t in totals)))  # type: ignore[call-overload]
    return found


def restore(directory: Path, new_db: Path) -> Verdict:
    """Verify the export, then copy its journal into a new file (never over an existing one) and
    check that the restored journal opens, migrates and has the same totals."""
    if new_db.exists():
        raise BackupError(f"{new_db} already exists: restore only into a new file")
    verdict = verify(directory)
    if not verdict.ok:
        raise BackupError(str(verdict))
    source = sqlite3.connect(f"file:{directory / JOURNAL_NAME}?mode=ro", uri=True)
    try:
        dest = sqlite3.connect(new_db)
        try:
            source.backup(dest)
        finally:
            dest.close()
    finally:
        source.close()
    from firmware.journal.archive import directory_for

    for copy in sorted((directory / ARCHIVE_SUBDIR).glob("*.sqlite")):
        target = directory_for(new_db) / copy.name
        target.parent.mkdir(exist_ok=True)
        if target.exists():
            raise BackupError(f"{target} already exists: restore only into a new directory")
        target.write_bytes(copy.read_bytes())
    from firmware.journal.store import Journal
    from firmware.journal.vault import CardVault

    # A throwaway card-data key: the copy holds no encrypted card numbers for any key to read.
    Journal.open(new_db, CardVault.throwaway()).close()  # opens, checks, migrates
    conn = sqlite3.connect(f"file:{new_db}?mode=ro", uri=True)
    try:
        restored = Verdict(ok=True, counts=table_counts(conn), totals=txn_totals(conn))
    finally:
        conn.close()
    if restored.totals != verdict.totals:
        raise BackupError("the restored journal's totals differ from the backup's")
    return restored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m firmware.journal.backup",
                                     description="verify or restore a deregistration backup")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("verify", help="re-read an export and check it").add_argument("directory", type=Path)
    restore_cmd = sub.add_parser("restore", help="restore an export into a new journal file")
    restore_cmd.add_argument("directory", type=Path)
    restore_cmd.add_argument("new_db", type=Path)
    args = parser.parse_args(argv)
    if args.command == "verify":
        verdict = verify(args.directory)
        print(verdict)
        print(json.dumps({"ok": verdict.ok, "counts": verdict.counts, "totals": verdict.totals}))
        return 0 if verdict.ok else 1
    try:
        verdict = restore(args.directory, args.new_db)
    except (BackupError, sqlite3.Error, OSError) as exc:
        print(f"restore failed: {exc}", file=sys.stderr)
        return 1
    print(f"restored into {args.new_db}: {verdict.counts.get('txn', 0)} transactions, totals match")
    print(json.dumps({"ok": True, "counts": verdict.counts, "totals": verdict.totals}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
