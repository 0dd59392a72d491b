"""The deregistration wipe: the DEREGISTERED marker, the keys (the key store's objects and a
development card-data key file), the other key files (a development TMK, the token PIN, the
provisioning record), the encrypted PANs in the journal (cleared, vacuumed, WAL truncated), the
merchant settings with their meta and history, and the log. Every part is idempotent, so a wipe
cut by a power loss is simply run again.

The marker goes first: from then on the data directory says "deregistered" even before the
journal is open (so start-up does not ask for a TMK that is being wiped). The keys go next,
before the PANs are cleared: a flash file system may keep old copies of the encrypted PANs in
blocks no file owns any more, and those are safe only because nothing can decrypt them once the
card-vault key is gone. The key store's objects (a token's TMK and vault key) are destroyed by
the app's `destroy_keys` in that part; the token itself stays (its configuration, KEEP, says
where its object store is and holds no secret), ready to be provisioned again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

MARKER_NAME = "DEREGISTERED"
PARTS = ("marker", "card_key", "keys", "card_data", "settings", "log")
CARD_KEY = "card.key"  # keys/card.key: the card vault's key on sim and dev boards
KEEP = ("softhsm2.conf",)  # in keys/: where a SoftHSM2 token's object store is (no secret)
SETTINGS_FILES = ("settings.json", "settings.json.meta", "settings.tmp", "settings.json.tmp",
                  "settings.json.meta.tmp", "logo.png")
LOG_NAME = "terminal.log"


def marker_path(data_dir: Path) -> Path:
    return Path(data_dir) / MARKER_NAME


def is_marked(data_dir: Path) -> bool:
    return marker_path(data_dir).exists()


def write_marker(data_dir: Path, terminal_id: str) -> None:
    path = marker_path(data_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"deregistered_at": time.time(), "terminal": terminal_id,
                               "provision": "see docs/provisioning.md"}))
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def shred(path: Path) -> bool:
    """Overwrite a file with zeros, flush it, then unlink it; False if it was not there."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    with open(path, "r+b") as fh:
        fh.write(b"\0" * size)
        fh.flush()
        os.fsync(fh.fileno())
    path.unlink()
    return True


def shred_in_place(path: Path) -> bool:
    """Overwrite a file that stays open elsewhere (the log: its handler appends to it) with
    zeros, then truncate it to nothing; False if it was not there."""
    try:
        with open(path, "r+b") as fh:
            fh.write(b"\0" * os.fstat(fh.fileno()).st_size)
            fh.flush()
            os.fsync(fh.fileno())
            fh.truncate(0)
            os.fsync(fh.fileno())
    except FileNotFoundError:
        return False
    return True


def wipe_card_key(data_dir: Path) -> int:
    """The card vault's key first: every encrypted PAN, wherever a copy lingers, is unreadable."""
    return int(shred(Path(data_dir) / "keys" / CARD_KEY))


def wipe_keys(data_dir: Path) -> int:
    keys = Path(data_dir) / "keys"
    if not keys.is_dir():
        return 0
    return sum(shred(p) for p in sorted(keys.iterdir()) if p.is_file() and p.name not in KEEP)


def wipe_card_data(journal_path: Path) -> int:
    """Clear every encrypted PAN, then VACUUM and truncate the WAL so no old page keeps one.

    A connection of its own: VACUUM and the checkpoint cannot run inside the journal's
    transactions, and secure_delete zeroes the freed content on the way.
    """
    conn = sqlite3.connect(journal_path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA secure_delete = ON")
        cleared = conn.execute("UPDATE txn SET pan_enc = NULL WHERE pan_enc IS NOT NULL").rowcount
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise sqlite3.OperationalError("the journal's WAL could not be truncated (a reader holds it)")
    finally:
        conn.close()
    return int(cleared)


def wipe_archives(journal_path: Path) -> int:
    """The archive files (the export holds their copies): shredded, and the journal's log says
    WIPED for their batches, so nothing looks for them. Returns how many files went."""
    from firmware.journal.archive import directory_for, files_in

    done = 0
    for path in files_in(directory_for(journal_path)):
        done += shred(path)
        stray = path.with_name(path.name + "-journal")
        if stray.exists():
            shred(stray)
    conn = sqlite3.connect(journal_path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        with contextlib.suppress(sqlite3.OperationalError):  # a journal from before the archive
            # A move cut short never happened (its rows are still in the journal); the others
            # are in the export now.
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM archive_log WHERE state = 'COPYING'")
            conn.execute("UPDATE archive_log SET state = 'WIPED' WHERE state IN ('MOVED', 'PURGED')")
            conn.execute("COMMIT")
    finally:
        conn.close()
    return done


def wipe_settings(data_dir: Path) -> int:
    data_dir = Path(data_dir)
    done = sum(shred(data_dir / name) for name in SETTINGS_FILES)
    history = data_dir / "settings.json.history"
    if history.is_dir():
        for p in sorted(history.iterdir()):
            done += shred(p) if p.is_file() else 0
        history.rmdir()
    return done


def wipe_log(data_dir: Path) -> int:
    """The log and its rotated copies (merchant ids, amounts, masked cards): the live one is
    emptied where it is, as its handler keeps it open in append mode and writes on."""
    data_dir = Path(data_dir)
    done = int(shred_in_place(data_dir / LOG_NAME))
    for rotated in sorted(data_dir.glob(LOG_NAME + ".*")):
        done += shred(rotated) if rotated.is_file() else 0
    return done


def wipe(data_dir: Path, journal_path: Path, terminal_id: str,
         between: Callable[[str], None] | None = None,
         destroy_keys: Callable[[], int] | None = None) -> dict[str, int]:
    """All parts in order; `between(part)` runs before each part but the first (fault injection);
    `destroy_keys()` destroys the key store's objects in the card_key part (how many)."""
    done: dict[str, int] = {}
    for part in PARTS:
        if between is not None and part != PARTS[0]:
            between(part)
        if part == "marker":
            write_marker(data_dir, terminal_id)
            done[part] = 1
        elif part == "card_key":
            # the store's objects, then a development key file the store did not own
            done[part] = (destroy_keys() if destroy_keys else 0) + wipe_card_key(data_dir)
        elif part == "keys":
            done[part] = wipe_keys(data_dir)
        elif part == "card_data":
            done[part] = wipe_card_data(journal_path) + wipe_archives(journal_path)
        elif part == "settings":
            done[part] = wipe_settings(data_dir)
        else:
            done[part] = wipe_log(data_dir)
    return done
