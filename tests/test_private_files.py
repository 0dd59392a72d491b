"""Data files are the owner's alone: what the firmware (a real process), make run's provisioning
and the provision CLI create is 0600 (directories 0700), and a terminal master key that others
can read puts the terminal in service mode with a clear message, as a key file does."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from ecrkit import SignedProcess, paired_offline
from helpers import REPO, TMK, TOKEN_PIN, TerminalProcess, provision, provision_token_dir
from p11kit import softhsm_env

from firmware.app.core import custody
from firmware.app.provision import tmk_check_value
from firmware.settings.model import factory


def _loose(root: Path, skip: set[Path]) -> list[str]:
    """Every file or directory under root (root itself not) that group or others may use."""
    found = []
    for path in sorted(root.rglob("*")):
        if path in skip:
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        if mode & 0o077:
            found.append(f"{path.relative_to(root)} {mode:o}")
    return found


def _keys_only(data_dir: Path) -> Path:
    """Only what the key ceremony leaves (the token with the TMK and the card-vault key, its PIN
    file, the record): everything else the firmware creates. Returns keys/."""
    provision_token_dir(data_dir)
    record = custody.new_record(tmk_check_value(TMK), "pkcs11", "clear (development)")
    custody.write_private(data_dir / custody.RECORD, custody.record_bytes(record))
    return data_dir / "keys"


def test_every_file_the_firmware_creates_is_private(tmp_path, sim):
    data_dir = tmp_path / "terminal"
    keys = _keys_only(data_dir)
    first = TerminalProcess(data_dir, ["--port", str(sim.port)])
    old = os.umask(0o022)  # what the firmware inherits must not decide its files' modes
    try:
        # Factory settings serve paired tills only: a first start makes the journal, then a
        # till is paired into it (as the keypad would) and the terminal started again.
        first.start(wait_idle=False)
        first.kill()
        proc = SignedProcess(TerminalProcess(data_dir, ["--port", str(sim.port)]), "T01",
                             paired_offline(data_dir, "T01"))
        proc.start()
    finally:
        os.umask(old)
    try:
        exports = proc.request(op="deregister_check")  # export/ on demand
        changed = proc.request(op="set_password", old="000000", new="135790")  # history + meta
        sold = proc.request(op="sale", amount=100, card="visa")  # journal, WAL, card key
    finally:
        proc.term.kill()
    assert changed["ok"] and sold["ok"] and exports["ok"], (changed, sold, exports)
    created = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*")}
    assert {"journal.db", "terminal.log", "settings.json", "settings.json.meta",
            "settings.json.history", "export"} <= created, created
    assert _loose(data_dir, skip={data_dir / "stderr.log", keys, *keys.rglob("*")}) == []


def test_a_token_pin_others_can_read_puts_the_terminal_in_service_mode_in_words(tmp_path, sim):
    data_dir = provision(tmp_path / "terminal", sim.port)
    (data_dir / "keys" / "token.pin").chmod(0o644)
    proc = TerminalProcess(data_dir)
    try:
        proc.start(timeout=20)
        why = proc.request(op="status")["service_mode"]
        sale = proc.request(op="sale", amount=100, card="visa")
    finally:
        proc.kill()
    assert "token PIN file" in why and "readable by others (mode 644)" in why
    assert "chmod 600" in why
    assert not sale["ok"] and sim.ledger.rows("12345678") == []  # no money work in service mode
    assert "Traceback" not in (data_dir / "stderr.log").read_text()


def test_make_run_provisioning_writes_private_files_whatever_the_umask(tmp_path):
    from board.sim.devrun import provision as dev_provision

    old = os.umask(0o022)
    try:
        dev_provision(tmp_path / "var" / "terminal", 5800)  # the development key files (qemu)
        dev_provision(tmp_path / "var" / "token", 5800, board="sim")  # the SoftHSM2 token
    finally:
        os.umask(old)
    assert (tmp_path / "var" / "token" / "keys" / "tokens").is_dir()
    assert _loose(tmp_path / "var", skip=set()) == []


def test_the_provision_cli_creates_private_files(tmp_path):
    data_dir = tmp_path / "terminal"
    softhsm_env(data_dir / "keys", set_env=False)  # the board's blank token (its maker's files)
    kit = {data_dir / "keys", *(data_dir / "keys").rglob("*")}
    pin = tmp_path / "token-pin"
    pin.write_text(TOKEN_PIN)
    settings = factory()
    settings["security"]["password_changed"] = True
    merchant = tmp_path / "merchant.json"
    merchant.write_text(json.dumps(settings))
    done = subprocess.run(
        [sys.executable, "-m", "firmware.app.provision", "--data", str(data_dir),
         "--tmk", TMK.hex(), "--token-pin-file", str(pin), "--settings", str(merchant)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True,
        timeout=60)
    assert done.returncode == 0, done.stderr
    assert (data_dir / "journal.db").exists() and (data_dir / "keys" / "token.pin").exists()
    assert (data_dir / custody.RECORD).exists() and not (data_dir / "keys" / "tmk.key").exists()
    assert _loose(data_dir, skip=kit) == []
