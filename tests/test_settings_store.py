"""Settings on disk: history of 10, restore, factory defaults, corrupt files, crash and full disk."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.settings import store as store_module
from firmware.settings.model import SettingsInvalid, factory, hash_password
from firmware.settings.store import HISTORY_KEEP, SettingsStore, SettingsWriteError, history_lines

ROOT = Path(__file__).resolve().parent.parent


def _with_port(port: int) -> dict:
    data = factory()
    data["comms"]["port"] = port
    return data


def test_first_start_writes_factory_and_history_is_kept_at_ten(tmp_path: Path) -> None:
    s = SettingsStore(tmp_path / "settings.json")
    assert s.load()["comms"]["port"] == 5800
    assert s.problem is None and s.history() == []
    ids = [s.save(_with_port(1000 + i), f"edit {i}") for i in range(HISTORY_KEEP + 3)]
    versions = s.history()
    assert len(versions) == HISTORY_KEEP
    assert [v.id for v in versions] == list(reversed(ids))[:HISTORY_KEEP]  # newest first
    # each backup carries the reason and time the replaced version was saved with
    assert versions[0].reason == f"edit {HISTORY_KEEP + 1}"
    assert versions[-1].reason == "edit 2"  # 13 backups made (factory, edit 0..11): 10 kept
    assert all(abs(v.saved_at - time.time()) < 60 for v in versions)
    lines = history_lines(versions, "en")
    assert len(lines) == 2 * HISTORY_KEEP and lines[1] == f" edit {HISTORY_KEEP + 1}"
    assert history_lines([], "zh_CN") == ["没有历史版本"]


def test_save_refuses_invalid_data_and_writes_nothing(tmp_path: Path) -> None:
    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    before = s.path.read_bytes()
    with pytest.raises(SettingsInvalid) as caught:
        s.save(_with_port(0), "bad")
    assert "comms.port" in caught.value.problems
    assert s.path.read_bytes() == before and s.history() == []


def test_restore_previous_leaves_a_backup_and_a_second_one_undoes_it(tmp_path: Path) -> None:
    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    s.save(_with_port(1111), "first")
    s.save(_with_port(2222), "second")
    assert s.restore_previous("restore")["comms"]["port"] == 1111
    assert s.load()["comms"]["port"] == 1111
    assert s.history()[0].reason == "second"  # the replaced live file is a backup
    assert s.last_backup == s.history()[0].id
    assert s.restore_previous()["comms"]["port"] == 2222  # undo


def test_restore_a_version_by_id(tmp_path: Path) -> None:
    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    backup = s.save(_with_port(1111), "first")  # backup = the factory file
    s.save(_with_port(2222), "second")
    assert s.restore(backup, "roll back")["comms"]["port"] == 5800
    assert s.load()["comms"]["port"] == 5800
    with pytest.raises(ValueError, match="no settings version"):
        s.restore("123", "x")


def test_factory_defaults_keep_identity_and_leave_a_backup(tmp_path: Path) -> None:
    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    mine = factory()
    mine["merchant"].update(mid="999999999999999", tid="87654321", name="SHOP")
    mine["comms"].update(host="10.0.0.9", port=7000, reply_timeout=5.0)
    mine["security"].update(supervisor_hash=hash_password("246810"), password_changed=True)
    s.save(mine, "provisioned")
    data = s.factory_defaults(reason="factory")
    assert (data["merchant"]["mid"], data["merchant"]["tid"]) == ("999999999999999", "87654321")
    assert (data["comms"]["host"], data["comms"]["port"]) == ("10.0.0.9", 7000)
    assert data["security"]["supervisor_hash"] == mine["security"]["supervisor_hash"]
    assert data["merchant"]["name"] == "DEMO MERCHANT" and data["comms"]["reply_timeout"] == 30.0
    assert s.history()[0].reason == "provisioned"
    assert s.restore(s.history()[0].id)["merchant"]["name"] == "SHOP"
    full = s.factory_defaults(keep_identity=False)
    assert full["comms"]["port"] == 5800 and full["security"]["password_changed"] is False


def test_corrupt_live_file_reports_and_uses_the_last_good_version(tmp_path: Path) -> None:
    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    s.save(_with_port(1111), "good one")
    s.save(_with_port(2222), "latest")
    s.path.write_text('{"merchant": {', "utf-8")  # cut by a broken card, say
    data = SettingsStore(s.path).load()
    assert data["comms"]["port"] == 1111
    s2 = SettingsStore(s.path)
    s2.load()
    assert s2.problem and "unusable" in s2.problem and "good one" in s2.problem
    # an invalid (parsable) file is reported the same way, naming the field
    s.path.write_text(json.dumps(_with_port(99999)), "utf-8")
    s3 = SettingsStore(s.path)
    assert s3.load()["comms"]["port"] == 1111
    assert "Port" in (s3.problem or "")


def test_all_versions_corrupt_is_a_runtime_error_in_words(tmp_path: Path) -> None:
    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    s.save(_with_port(1111), "x")
    for path in [s.path, *s.history_dir.glob("*.json")]:
        path.write_bytes(b"\x00\xff garbage")
    with pytest.raises(RuntimeError, match="no good earlier version exists"):
        SettingsStore(s.path).load()


def test_old_file_without_new_fields_loads_migrated(tmp_path: Path, caplog) -> None:
    old = factory()
    for group, name in (("comms", "retries"), ("security", "max_password_tries"),
                        ("security", "lock_minutes"), ("printer", "no_signature_limit")):
        del old[group][name]
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(old), "utf-8")
    s = SettingsStore(path)
    with caplog.at_level("WARNING", logger="posfw.settings"):
        data = s.load()
    assert data["comms"]["retries"] == 1 and data["security"]["lock_minutes"] == 5
    assert s.problem is None and "comms.retries" in s.migrated
    assert "migrated" in caplog.text and "comms.retries" in caplog.text


def test_old_history_file_names_still_count(tmp_path: Path) -> None:
    """Older firmware named backups by a 16-digit stamp and kept no meta."""
    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    s.history_dir.mkdir(exist_ok=True)
    (s.history_dir / "1700000000000000.json").write_text(json.dumps(_with_port(4444)), "utf-8")
    s.save(_with_port(1111), "new")
    versions = s.history()
    assert versions[-1].id == "1700000000000000" and versions[-1].reason == "reason not recorded"
    assert versions[0].id != "1700000000000000"


def test_disk_full_leaves_the_live_file_untouched(tmp_path: Path, monkeypatch) -> None:
    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    s.save(_with_port(1111), "before")
    before = s.path.read_bytes()
    history_before = [v.id for v in s.history()]
    real_write = os.write

    def full(fd: int, data) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("settings.json.tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(store_module.os, "write", full)
    with pytest.raises(SettingsWriteError) as caught:
        s.save(_with_port(2222), "after")
    assert "disk is full" in str(caught.value) and caught.value.errno == errno.ENOSPC
    assert s.path.read_bytes() == before
    assert not (tmp_path / "settings.json.tmp").exists()
    monkeypatch.undo()
    assert SettingsStore(s.path).load()["comms"]["port"] == 1111
    assert [v.id for v in s.history()][1:] == history_before  # only the backup was added


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_a_failure_between_steps_leaves_the_old_file(tmp_path: Path, monkeypatch, step: str) -> None:
    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    s.save(_with_port(1111), "before")

    def boom(*args, **kwargs):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(store_module.os, step, boom)
    with pytest.raises(SettingsWriteError, match="live settings are unchanged"):
        s.save(_with_port(2222), "after")
    monkeypatch.undo()
    assert SettingsStore(s.path).load()["comms"]["port"] == 1111


SAVE_LOOP = """
import sys
from firmware.settings.model import factory
from firmware.settings.store import SettingsStore
s = SettingsStore(sys.argv[1])
s.load()
data = factory()
i = 0
print("ready", flush=True)
while True:
    i += 1
    data["comms"]["port"] = 1 + i % 60000
    data["merchant"]["receipt_footer"] = "x" * (i % 32)
    s.save(data, f"loop {i}")
"""


def test_sigkill_during_a_save_loop_never_leaves_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    for delay in (0.15, 0.3, 0.45):
        proc = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(path)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        time.sleep(delay)  # let it save a few hundred times, then kill it mid-flight
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        s = SettingsStore(path)
        data = s.load()
        assert s.problem is None, s.problem  # the live file itself is whole: old or new
        assert 1 <= data["comms"]["port"] <= 60000
        assert len(s.history()) <= HISTORY_KEEP + 1


# -- no old supervisor password hash is kept (issue 12 item 19) ----------------------------

def _with_password(password: str, port: int = 5800) -> dict:
    data = _with_port(port)
    data["security"].update(supervisor_hash=hash_password(password), password_changed=True)
    return data


def _hashes_on_disk(s: SettingsStore) -> set[str]:
    """Every supervisor hash in the live file and the history (each file read as bytes)."""
    found: set[str] = set()
    for path in [s.path, *s.history_dir.iterdir()]:
        found |= set(re.findall(r"scrypt\$[0-9$a-f]+", path.read_text("utf-8")))
    return found


def _live_hash(s: SettingsStore) -> str:
    return json.loads(s.path.read_text("utf-8"))["security"]["supervisor_hash"]


def test_history_keeps_no_old_password_hash_and_a_restore_keeps_the_current_password(tmp_path):
    from firmware.settings.model import verify_password

    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    first = s.save(_with_password("135790", 1111), "password one")  # backup: the factory file
    s.save(_with_password("246810", 2222), "password two")
    s.save(_with_password("314159", 3333), "password three")
    assert len(s.history()) == 3
    assert _hashes_on_disk(s) == {_live_hash(s)}  # ten copies, one hash: the current one

    def live_password_is_current() -> bool:
        security = json.loads(s.path.read_text("utf-8"))["security"]
        return verify_password("314159", security["supervisor_hash"]) and security["password_changed"]

    assert s.restore_previous()["comms"]["port"] == 2222 and live_password_is_current()
    assert s.restore(first)["comms"]["port"] == 5800 and live_password_is_current()
    assert s.load()["security"]["password_changed"] is True and live_password_is_current()
    assert _hashes_on_disk(s) == {_live_hash(s)}


def test_history_an_older_firmware_wrote_loses_its_old_hashes_at_load_in_place(tmp_path):
    from firmware.settings.model import verify_password

    s = SettingsStore(tmp_path / "settings.json")
    s.path.write_text(json.dumps(_with_password("314159", 3333)), "utf-8")
    s.history_dir.mkdir()
    for i, password in enumerate(("135790", "246810")):  # what the old firmware kept
        (s.history_dir / f"17000000000000000{i}.json").write_text(
            json.dumps(_with_password(password, 1000 + i), indent=2), "utf-8")
    sizes = {p.name: p.stat().st_size for p in s.history_dir.iterdir()}
    s.load()
    assert _hashes_on_disk(s) == {_live_hash(s)}
    assert {p.name: p.stat().st_size for p in s.history_dir.iterdir()} == sizes  # in place
    restored = s.restore("170000000000000000")
    assert restored["comms"]["port"] == 1000
    assert verify_password("314159", restored["security"]["supervisor_hash"])


def test_the_fall_back_at_load_keeps_the_current_password(tmp_path):
    from firmware.settings.model import verify_password

    s = SettingsStore(tmp_path / "settings.json")
    s.load()
    s.save(_with_password("135790", 1111), "good one")
    s.save(_with_password("314159", 2222), "latest")  # the password changed with this save
    broken = _with_password("314159", 99999)  # a wrong port: unusable, but its hash is fine
    s.path.write_text(json.dumps(broken), "utf-8")
    data = SettingsStore(s.path).load()
    assert data["comms"]["port"] == 1111
    assert verify_password("314159", data["security"]["supervisor_hash"])
    s.path.write_text('{"security": {', "utf-8")  # nothing left to read the hash from
    data = SettingsStore(s.path).load()
    assert data["comms"]["port"] == 1111 and data["security"]["password_changed"] is True
    assert verify_password("314159", data["security"]["supervisor_hash"])  # not "135790"
