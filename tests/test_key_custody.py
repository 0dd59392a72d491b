"""Key custody at start-up and in the card vault (firmware/app/core/custody.py, firmware/app/devices.py,
firmware/journal/vault.py): the terminal opens the board's key store, confirms the master key's
check value against the provisioning record and the vault key by a round trip, and anything wrong
is service mode in words (the screen, the ECR status, no money work), never a traceback. The vault
is a thin layer over the store: the blob format of the development key file of old still opens.

Real terminals in process against the acquirer simulator, real key files."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from helpers import TID, TMK, TOKEN_PIN, VAULT_KEY, open_journal, provision, run, sale, token_of
from p11kit import pointing_at

from drivers.keystore.memory import MemoryKeyStore
from firmware.app import boards
from firmware.app.core import custody
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.i18n import text
from firmware.journal.vault import AAD, CardVault, VaultError
from firmware.ports import KeyMissing, KeyStoreError, KeyStoreUnavailable


async def _status_of(data_dir: Path, **cfg: Any) -> tuple[dict[str, Any], Terminal]:
    t = Terminal(AppConfig(data_dir=data_dir, **cfg))
    await t.start()
    try:
        return t.status(), t
    finally:
        await t.close()


def _no_money_work(data_dir: Path, sim: Any) -> None:
    async def go() -> Any:
        t = Terminal(AppConfig(data_dir=data_dir))
        await t.start()
        try:
            return await sale(t, 1234)
        finally:
            await t.close()

    refused = run(go())
    assert refused.status == "refused" and refused.message_key == "service_mode", refused
    assert sim.ledger.rows(TID) == []


def test_a_provisioned_terminal_says_where_its_keys_are_and_the_master_keys_check_value(
        data_dir: Path, sim) -> None:
    status, _ = run(_status_of(data_dir))
    assert status["service_mode"] is None, status
    record = custody.read_record(data_dir)
    assert record is not None and record.tmk_check
    lines = status["key_store"]
    assert f"Master key check value {record.tmk_check}" in lines, lines
    assert any(line.startswith("Keys: SoftHSM") and "'posfw'" in line for line in lines), lines
    assert "Card-data key present" in lines
    assert not any(TMK.hex().upper() in line.upper() for line in lines)


def test_a_master_key_that_is_not_the_one_provisioned_is_service_mode_in_words(
        data_dir: Path, sim) -> None:
    """The record says the acquirer confirmed check value X; the store's TMK gives Y (another key
    file put in its place): service mode, both values in the words, nothing sent."""
    _other_tmk_in(data_dir)  # another key put in its place
    status, t = run(_status_of(data_dir))
    why = status["service_mode"]
    assert why is not None and "TMK check value mismatch" in why, status
    assert custody.read_record(data_dir).tmk_check in why  # what the acquirer confirmed
    assert "not the one provisioned" in why and "provision the terminal again" in why
    assert t.journal is None and t.service_notice == "service_keys"
    assert any(line.startswith("Key store problem:") for line in status["key_store"])
    _no_money_work(data_dir, sim)


def test_a_missing_card_vault_key_on_a_terminal_with_a_journal_is_found_at_start(
        tmp_path: Path, sim) -> None:
    """The vault key file gone under a journal whose PANs it sealed: the development store makes a
    new one (as it always did) and the old PANs say they cannot be read back (VaultError), never
    another card's number."""
    data_dir = provision(tmp_path / "terminal", sim.port, key_store="memory")

    async def first() -> None:
        t = Terminal(AppConfig(data_dir=data_dir, key_store="memory"))
        await t.start()
        try:
            assert (await sale(t, 1234)).status == "approved"
        finally:
            await t.close()

    run(first())
    (data_dir / "keys" / "card.key").unlink()
    journal = open_journal(data_dir, key_store="memory")
    try:
        record = journal.records()[-1]
        with pytest.raises(VaultError, match="integrity"):
            journal.decrypt_pan(record.id)
    finally:
        journal.close()


@pytest.mark.parametrize("lang", ["en", "zh_CN"])
def test_the_service_mode_words_exist_in_both_languages(lang: str) -> None:
    words = text("service_keys", lang)
    assert words and ("key store" in words if lang == "en" else "密钥" in words)


def test_the_development_store_is_refused_on_a_board_that_is_not_a_development_board(
        data_dir: Path, sim, monkeypatch) -> None:
    real = dataclasses.replace(boards.PROFILES["sim"], name="sim-real", development=False)
    monkeypatch.setitem(boards.PROFILES, "sim-real", real)
    status, t = run(_status_of(data_dir, board="sim-real", key_store="memory"))
    why = status["service_mode"]
    assert why is not None and "development boards only" in why and "give it a token" in why, why
    assert t.journal is None


def test_a_key_store_that_cannot_be_opened_is_service_mode_in_words(data_dir: Path, sim,
                                                                    monkeypatch) -> None:
    """A token that is absent (the driver says so in words): service mode with those words."""
    from firmware.app import devices

    def absent(*_: Any, **__: Any) -> Any:
        raise KeyStoreUnavailable("the key token 'posfw' is not present: check the PKCS#11 module")

    monkeypatch.setattr(devices, "open_key_store", absent)
    status, t = run(_status_of(data_dir))
    assert status["service_mode"] == ("key store: the key token 'posfw' is not present: check the "
                                      "PKCS#11 module"), status
    assert t.journal is None


def test_a_driver_that_fails_without_words_is_service_mode_and_the_log_keeps_the_traceback(
        data_dir: Path, sim, monkeypatch, caplog) -> None:
    from firmware.app import devices

    def broken(*_: Any, **__: Any) -> Any:
        raise OSError("libsofthsm2.so: cannot open shared object file")

    monkeypatch.setattr(devices, "open_key_store", broken)
    status, _ = run(_status_of(data_dir))
    assert status["service_mode"] == "key store: the key store failed (OSError); see the log"
    assert "cannot open shared object file" in caplog.text


# -- the card vault over the key store ---------------------------------------------------------

def test_the_vault_reads_blobs_of_the_development_key_file_of_old_and_writes_the_same_format(
        tmp_path: Path) -> None:
    """A blob sealed as the old CardVault sealed it (AES-GCM, nonce 12 || ct || tag, AAD
    posfw/pan/v1, under the 32 bytes of keys/card.key) opens through the store, and the store's
    blobs open under the bare key: a journal's PANs move with the key, whatever holds it."""
    store = MemoryKeyStore(tmp_path)
    vault = CardVault(store)
    sealed = vault.encrypt("6222021234567890")
    key = (tmp_path / "card.key").read_bytes()
    assert AESGCM(key).decrypt(sealed[:12], sealed[12:], AAD) == b"6222021234567890"
    nonce = os.urandom(12)
    old = nonce + AESGCM(key).encrypt(nonce, b"6222029876543210", AAD)
    assert vault.decrypt(old) == "6222029876543210"
    assert CardVault(key).decrypt(sealed) == "6222021234567890"  # a LocalVaultKey, same format


def test_a_damaged_blob_is_a_vault_error_but_a_store_that_went_away_is_not(tmp_path: Path) -> None:
    """VaultError sets a record aside (it cannot be read back); a token that is gone must not:
    the store's KeyStoreUnavailable goes through unchanged."""
    vault = CardVault(MemoryKeyStore(tmp_path))
    blob = bytearray(vault.encrypt("6222021234567890"))
    blob[-1] ^= 1
    with pytest.raises(VaultError, match="integrity"):
        vault.decrypt(bytes(blob))

    class Gone:
        def seal(self, plain: bytes, aad: bytes) -> bytes:
            raise KeyStoreUnavailable("the key token 'posfw' is not present")

        def unseal(self, blob: bytes, aad: bytes) -> bytes:
            raise KeyStoreUnavailable("the key token 'posfw' is not present")

    with pytest.raises(KeyStoreUnavailable):
        CardVault(Gone()).decrypt(bytes(blob))
    with pytest.raises(KeyStoreError):
        CardVault(Gone()).encrypt("6222021234567890")


def test_the_check_needs_a_master_key(tmp_path: Path) -> None:
    with pytest.raises(KeyMissing, match="no terminal master key in development key files"):
        custody.check_store(MemoryKeyStore(tmp_path), None)


def test_a_damaged_provisioning_record_is_said_in_words(data_dir: Path, sim) -> None:
    (data_dir / custody.RECORD).write_text("{not json")
    status, _ = run(_status_of(data_dir))
    assert "provisioning record" in status["service_mode"] and "provision the terminal again" in \
        status["service_mode"], status
    json.loads(json.dumps(status))  # the ECR status stays plain JSON


# -- a board whose key store is a token (SoftHSM2, tests/p11kit.py) ---------------------------

@pytest.fixture
def token_dir(tmp_path: Path, sim, monkeypatch) -> Path:
    """A terminal whose sim board keeps its keys in a SoftHSM2 token under its data directory."""
    monkeypatch.setitem(boards.PROFILES, "sim", dataclasses.replace(boards.PROFILES["sim"],
                                                                    key_store="pkcs11"))
    monkeypatch.setenv("SOFTHSM2_CONF", "")  # the terminal points it at its own token
    return provision(tmp_path / "terminal", sim.port, key_store="pkcs11")


def _other_tmk_in(data_dir: Path) -> str:
    with pointing_at(token_of(data_dir)):
        store = token_of(data_dir).open()
        try:
            return store.install_tmk(bytearray.fromhex("00112233445566778899AABBCCDDEEFF"))
        finally:
            store.close()


def test_a_token_board_opens_its_token_and_seals_card_numbers_in_it(token_dir: Path) -> None:
    async def go() -> tuple[dict[str, Any], str, bytes]:
        t = Terminal(AppConfig(data_dir=token_dir))
        await t.open()
        try:
            assert t.journal is not None and t.key_store is not None
            blob = t.journal._vault.encrypt("6222021234567890")  # the journal's own vault
            return t.status(), t.journal._vault.decrypt(blob), blob
        finally:
            await t.close()

    status, pan, blob = run(go())
    assert status["service_mode"] is None, status
    lines = status["key_store"]
    assert any("SoftHSM" in line and "'posfw'" in line for line in lines), lines
    assert f"Master key check value {custody.read_record(token_dir).tmk_check}" in lines
    assert pan == "6222021234567890"
    assert AESGCM(VAULT_KEY).decrypt(blob[:12], blob[12:], AAD) == b"6222021234567890"  # same format
    assert not (token_dir / "keys" / "tmk.key").exists() and not (token_dir / "keys" / "card.key").exists()


@pytest.mark.parametrize("fault", ["token gone", "wrong PIN", "PIN file others can read",
                                   "no PIN file", "another TMK", "no vault key", "no TMK"])
def test_a_token_problem_is_service_mode_in_words_and_no_money_moves(
        fault: str, token_dir: Path, sim) -> None:
    keys = token_dir / "keys"
    words = {"token gone": "the key token 'posfw' is not present",
             "wrong PIN": "refused the PIN it was given",
             "PIN file others can read": "readable by others (mode 644); run chmod 600",
             "no PIN file": "token PIN file",
             "another TMK": "TMK check value mismatch",
             "no vault key": "card-vault key",
             "no TMK": "no terminal master key in SoftHSM"}[fault]
    if fault == "token gone":
        shutil.rmtree(keys / "tokens")
        (keys / "tokens").mkdir()
    elif fault == "wrong PIN":
        (keys / "token.pin").write_text("999999\n")
    elif fault == "PIN file others can read":
        (keys / "token.pin").chmod(0o644)
    elif fault == "no PIN file":
        (keys / "token.pin").unlink()
    elif fault == "another TMK":
        _other_tmk_in(token_dir)
    else:
        with pointing_at(token_of(token_dir)):
            store = token_of(token_dir).open()
            try:
                store.destroy_all()
                if fault == "no vault key":
                    store.install_tmk(bytearray(TMK))
            finally:
                store.close()
    status, t = run(_status_of(token_dir))
    why = status["service_mode"]
    assert why is not None and words in why, (fault, status)
    assert t.journal is None and t.service_notice == "service_keys"
    assert TOKEN_PIN not in json.dumps(status) and TMK.hex().upper() not in json.dumps(status).upper()
    _no_money_work(token_dir, sim)
