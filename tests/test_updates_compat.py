"""After a fall back to the previous slot, older firmware meets a journal and settings that newer
firmware wrote (docs/updates.md). The journal: a "future" migration is applied here the way
newer firmware would apply it under the rule (journal_compat's min_reader and schema written in
the same transaction), then the current code opens the file: an additive one opens and works, a
breaking one is refused in words with the file byte for byte as it was. Settings: a file of a
newer version keeps the fields this firmware does not know; one of this version refuses them."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.journal.errors import JournalTooNew
from firmware.journal.schema import ADDITIVE, COMPAT_SINCE, SCHEMA_VERSION, min_reader
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.settings.model import factory
from firmware.settings.schema import SETTINGS_VERSION, VERSION_KEY
from firmware.settings.store import SettingsStore

VAULT = CardVault(b"k" * 32)
FUTURE = SCHEMA_VERSION + 1


def _future(path: Path, additive: bool) -> None:
    """Migration FUTURE as a newer firmware applies it: a new table and a nullable column
    (additive) or a renamed column (breaking), with min_reader worked out by the same rule."""
    steps = ["CREATE TABLE loyalty (id INTEGER PRIMARY KEY, points INTEGER)",
             "ALTER TABLE txn ADD COLUMN loyalty_id INTEGER"] if additive else [
             "ALTER TABLE txn RENAME COLUMN reference TO order_ref"]
    lowest = min_reader(FUTURE, ADDITIVE | {FUTURE} if additive else ADDITIVE)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        for sql in steps:
            db.execute(sql)
        db.executemany("UPDATE journal_compat SET value = ? WHERE name = ?",
                       ((lowest, "min_reader"), (FUTURE, "schema")))
        db.execute(f"PRAGMA user_version = {FUTURE}")
        db.execute("COMMIT")
    finally:
        db.close()


def test_min_reader_follows_the_newest_breaking_migration() -> None:
    assert min_reader(17) == 16  # 17 (issue 19's indexes) is additive: schema 16 still opens it
    newest_breaking = max(n for n in range(1, SCHEMA_VERSION + 1) if n not in ADDITIVE)
    assert min_reader(SCHEMA_VERSION) == newest_breaking
    assert min_reader(SCHEMA_VERSION + 2, frozenset({SCHEMA_VERSION + 1, SCHEMA_VERSION + 2})) \
        == SCHEMA_VERSION
    assert min_reader(SCHEMA_VERSION + 2, frozenset({SCHEMA_VERSION + 1})) == SCHEMA_VERSION + 2


def test_a_new_journal_records_who_may_open_it(tmp_path: Path) -> None:
    Journal.open(tmp_path / "j.db", VAULT).close()
    db = sqlite3.connect(tmp_path / "j.db")
    assert dict(db.execute("SELECT name, value FROM journal_compat")) == {
        "min_reader": min_reader(SCHEMA_VERSION), "schema": SCHEMA_VERSION}
    assert SCHEMA_VERSION >= COMPAT_SINCE
    db.close()


def test_older_firmware_opens_and_writes_a_journal_after_an_additive_migration(tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    j = Journal.open(path, VAULT)
    j.audit("01 keypad", "before the update", "", "done")
    j.close()
    _future(path, additive=True)
    j = Journal.open(path, VAULT)  # the current firmware, one schema behind
    try:
        j.audit("01 keypad", "after the fall back", "", "done")
        assert j.allocate_stan() == "000001"
        assert [line[2] for line in j.audit_lines(2)] == ["after the fall back", "before the update"]
        assert j.integrity() == "ok"
    finally:
        j.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == FUTURE  # never moved back
    db.close()


def test_older_firmware_refuses_a_journal_after_a_breaking_migration_and_touches_nothing(
        tmp_path: Path) -> None:
    path = tmp_path / "j.db"
    Journal.open(path, VAULT).close()
    _future(path, additive=False)
    before = path.read_bytes()
    with pytest.raises(JournalTooNew) as refused:
        Journal.open(path, VAULT)
    words = str(refused.value)
    assert f"newer firmware (schema {FUTURE})" in words and "install the newer firmware" in words
    assert f"needs firmware of schema {FUTURE}" in words
    assert path.read_bytes() == before


def test_a_record_for_another_schema_is_not_trusted(tmp_path: Path) -> None:
    """A newer firmware that bumped the version without keeping the rule: refused."""
    path = tmp_path / "j.db"
    Journal.open(path, VAULT).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {FUTURE}")  # journal_compat still says SCHEMA_VERSION
    db.commit()
    db.close()
    with pytest.raises(JournalTooNew):
        Journal.open(path, VAULT)


def test_the_terminal_starts_in_service_mode_with_the_words(data_dir: Path) -> None:
    Journal.open(data_dir / "journal.db", VAULT).close()
    _future(data_dir / "journal.db", additive=False)
    before = (data_dir / "journal.db").read_bytes()

    async def go() -> None:
        t = Terminal(AppConfig(data_dir=data_dir, printer_path="", reader_path=""))
        await t.open()
        try:
            assert t.journal is None
            assert "written by newer firmware" in (t.service_problem or "")
            assert t.status()["service_mode"] == t.service_problem
        finally:
            await t.close()
    asyncio.run(go())
    assert (data_dir / "journal.db").read_bytes() == before


# -- settings ---------------------------------------------------------------------------------

def _written_by_newer(path: Path) -> dict:
    data = factory()
    data["display"]["brightness_curve"] = "soft"  # a field of a newer firmware
    data["loyalty"] = {"scheme": "stamps"}  # and a whole new group
    data[VERSION_KEY] = SETTINGS_VERSION + 3
    path.write_text(json.dumps(data))
    return data


def test_settings_of_newer_firmware_load_and_keep_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    _written_by_newer(path)
    store = SettingsStore(path)
    data = store.load()
    assert store.problem is None
    assert "brightness_curve" not in data["display"] and "loyalty" not in data
    data["merchant"]["name"] = "AFTER FALLBACK"
    store.save(data, "edited after the fall back")
    saved = json.loads(path.read_text())
    # the newer firmware finds its fields again, and the file still says it is its version
    assert saved["display"]["brightness_curve"] == "soft" and saved["loyalty"] == {"scheme": "stamps"}
    assert saved[VERSION_KEY] == SETTINGS_VERSION + 3
    assert saved["merchant"]["name"] == "AFTER FALLBACK"
    assert SettingsStore(path).load()["merchant"]["name"] == "AFTER FALLBACK"


def test_an_unknown_field_in_a_file_of_this_version_is_still_refused(tmp_path: Path) -> None:
    """A typo is not a newer firmware's field: the file is unusable, as before the rule."""
    path = tmp_path / "settings.json"
    store = SettingsStore(path)
    store.load()  # first start: factory settings written with this version
    assert json.loads(path.read_text())[VERSION_KEY] == SETTINGS_VERSION
    data = json.loads(path.read_text())
    data["comms"]["hots"] = "10.0.0.1"
    path.write_text(json.dumps(data))
    with pytest.raises(RuntimeError, match=r"comms\.hots: unknown field"):
        SettingsStore(path).load()  # no earlier version to fall back to: refused in words


def test_a_terminal_s_own_settings_file_provisions_another(tmp_path: Path) -> None:
    """The store's `_version` is not a setting: provisioning takes a settings.json as it is."""
    from firmware.app.provision import read_settings_file
    from firmware.settings.model import problems

    path = tmp_path / "settings.json"
    SettingsStore(path).load()
    assert VERSION_KEY in json.loads(path.read_text())
    assert problems(read_settings_file(path)) == {}
