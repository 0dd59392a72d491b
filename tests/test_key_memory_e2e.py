"""The issue's end-to-end memory proof: the running terminal, with its token in use, holds no key
bytes in its memory, and none are in any file.

The terminal is the real firmware process (`python -m board.sim.firmware`, driven over its ECR
port as a till drives it) against the acquirer simulator on 127.0.0.1. Its token is SoftHSM2
held by `p11-kit server` in another process; the terminal loads p11-kit's client module, named by
POSFW_TOKEN_MODULE (firmware/app/devices.py), with P11_KIT_SERVER_ADDRESS, and runs with
GLIBC_TUNABLES as the systemd unit sets it (board/systemd/posfw.service says why). It signs on
at start (PIK, MAK and TDK, track encryption on, installed through the token), sells with a card
without PIN (its track encrypted under the TDK) and with a PIN card (the sim keypad's PIN comes
in clear over the ECR link by design: a PIN is not a key, and the PIN block is made under the
PIK in the token), and settles. Right after the sign-on, and again after the settlement, with the
process idle and alive, the test reads every readable mapping of /proc/PID/mem and asserts that
none of the known key values occurs: the TMK,
the PIK, MAK and TDK the simulator's ledger says it sent, each 16-byte key's 24-byte TDES form
and 8-byte halves, the MAK's K1||K1, and the two card-vault keys. Every file under the data
directory (journal, WAL, settings, logs, the PIN file, the record) and under the token's own
directory is grepped for them too (raw and hex).

What this shows and what it does not:
- The process never loads SoftHSM2 (its mappings are checked): the keys live in the server.
- SoftHSM 2.6.1 cannot unwrap under a DES key, so each working key's clear value crosses the
  terminal for one C_Decrypt and one C_CreateObject at sign-on (drivers/keystore/pkcs11.py): the
  scan shows it did not stay, not that it never passed.
- p11-kit 0.24's client forwards no mechanism with parameters (no CKM_AES_GCM, no CKM_AES_CBC,
  no CKM_DES3_CBC). The card vault therefore runs in its CBC + CMAC format (the TPM's,
  drivers/keystore/vault_cbc.py) over the token's AES-ECB, under the pair posfw-vault-enc /
  posfw-vault-mac that this test provisions with known values; the GCM vault key cannot serve a
  terminal through this client. The sale seals the card number with that pair.
Sensitivity, tried by planting: a store that keeps a copy of each clear working key is caught;
a sign-on buffer left unzeroed is not (later work in the process overwrites it before the first
scan), nor are python-pkcs11's unwiped copies; without GLIBC_TUNABLES the scan found the PIK (and
MAK) in the heap in about two runs of three, so that setting is not proved by this test alone
(tests/test_keystore_memory_scan.py is the sharper one for transient buffers).
The control (the plant that must be caught): the same run with the development store
(tests/memstore_entry.py, MemoryKeyStore) finds every key in the process and the TMK in a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import p11kit
import pkcs11
import pytest
from helpers import MID, PASSWORD, TID, TerminalProcess, write_token_pin_file
from p11kit import SOFTHSM_MODULE, TokenEnv, p11kit_server, pointing_at
from pkcs11 import Attribute, KeyType, ObjectClass
from test_keystore_memory_scan import scan_files, scan_memory

from board.sim.acquirer import SimulatorThread
from drivers.keystore.pkcs11 import HEAP_TUNABLES
from drivers.keystore.vault_cbc import ENC_KEY_LABEL, MAC_KEY_LABEL
from firmware.app.core import custody
from firmware.app.devices import TOKEN_MODULE_ENV
from firmware.app.provision import tmk_check_value
from firmware.host.keys import expand_key
from firmware.settings.model import factory, hash_password

softhsm_template = p11kit.softhsm_template
token_env = p11kit.token_env


# ---- provisioning ----

def provision_token(env: TokenEnv, tmk: bytes, enc: bytes, mac: bytes) -> None:
    """The TMK as provisioning installs it, and the CBC vault's key pair imported with known
    values (on a TPM tpm2_ptool makes it; here python-pkcs11 on SoftHSM2 in this process)."""
    with pointing_at(env):
        store = env.open()
        try:
            store.install_tmk(bytearray(tmk))
        finally:
            store.close()
        lib = pkcs11.lib(SOFTHSM_MODULE)
        try:
            with lib.get_token(token_label=env.label).open(rw=True, user_pin=env.pin) as session:
                for label, value in ((ENC_KEY_LABEL, enc), (MAC_KEY_LABEL, mac)):
                    session.create_object({
                        Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.KEY_TYPE: KeyType.AES,
                        Attribute.TOKEN: True, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False, Attribute.LABEL: label,
                        Attribute.ID: os.urandom(8), Attribute.VALUE: value,
                        Attribute.ENCRYPT: True, Attribute.DECRYPT: True})
        finally:
            pkcs11.unload(SOFTHSM_MODULE)


def provision_data_dir(data_dir: Path, sim_port: int, tmk: bytes, kind: str,
                       vault: bytes | None = None) -> Path:
    """Settings (track encryption on: the TDK too), the provisioning record, and the keys' part:
    "pkcs11" the token PIN file (the token is the server's), "memory" the development files."""
    keys = data_dir / "keys"
    keys.mkdir(mode=0o700, parents=True)
    if kind == "pkcs11":
        write_token_pin_file(data_dir)
    else:
        assert vault is not None
        custody.write_private(keys / "tmk.key", tmk.hex().encode())
        custody.write_private(keys / "card.key", vault)
    record = custody.new_record(tmk_check_value(tmk), kind, "clear (development)")
    custody.write_private(data_dir / custody.RECORD, custody.record_bytes(record))
    settings = factory()
    settings["merchant"].update({"tid": TID, "mid": MID})
    settings["comms"].update({"port": sim_port, "reply_timeout": 3.0, "connect_timeout": 2.0,
                              "ecr_auth": "open", "track_encryption": True})
    settings["security"].update({"supervisor_hash": hash_password(PASSWORD),
                                 "password_changed": True})
    (data_dir / "settings.json").write_text(json.dumps(settings))
    return data_dir


# ---- the run ----

def needles(tmk: bytes, working: tuple[bytes, bytes, bytes],
            vault: dict[str, bytes]) -> dict[str, bytes]:
    """Every form of every key the scan must not find."""
    out: dict[str, bytes] = {}
    pik, mak, tdk = working
    for name, key in (("TMK", tmk), ("PIK", pik), ("MAK", mak), ("TDK", tdk)):
        out[name] = key
        out[f"{name} 24-byte form"] = expand_key(key)
        out[f"{name} K1"], out[f"{name} K2"] = key[:8], key[8:]
    out["MAK K1||K1"] = mak[:8] * 2
    out["MAK K1 24-byte form"] = mak[:8] * 3
    for name, key in vault.items():
        out[name] = key
        out[f"{name} half 1"], out[f"{name} half 2"] = key[:16], key[16:]
    return out


def work_and_scan(proc: TerminalProcess, sim: SimulatorThread, tmk: bytes,
                  vault: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, dict], str]:
    """Start the terminal (it signs on) and scan its memory; sell twice, settle, and scan again,
    each time while it is idle. Returns the needles, what each scan found and the process's
    mappings."""
    proc.start()
    assert proc.proc is not None
    working = sim.ledger.working_keys(TID)
    assert working is not None and working[2] is not None, "no sign-on with a TDK"
    wanted = needles(tmk, (working[0], working[1], working[2]), vault)
    found = {"after sign-on": scan_memory(proc.proc.pid, wanted)}
    visa = proc.request(op="sale", amount=2000, card="visa")
    assert visa["result"] == "approved", visa
    debit = proc.request(op="sale", amount=1000, card="cup_debit", pin="123456")
    assert debit["result"] == "approved", debit
    settled = proc.request(op="settle", password=PASSWORD)
    assert settled["result"] == "settled", settled
    assert not proc.request(op="status")["busy"]
    assert sim.ledger.working_keys(TID) == working  # the keys scanned for are the keys in use
    maps = Path(f"/proc/{proc.proc.pid}/maps").read_text()
    found["after the sales and the settlement"] = scan_memory(proc.proc.pid, wanted)
    return wanted, found, maps


@pytest.fixture
def sim(tmp_path: Path):
    tmk = os.urandom(16)
    s = SimulatorThread(tmp_path / "ledger.db", terminals=[(TID, MID, tmk)])
    s.start()
    yield s, tmk
    s.stop()


def test_the_running_terminal_holds_no_key_bytes_in_memory_or_files(
        sim, token_env: TokenEnv, tmp_path: Path) -> None:
    simulator, tmk = sim
    vault = {"vault encryption key": os.urandom(32), "vault MAC key": os.urandom(32)}
    provision_token(token_env, tmk, vault["vault encryption key"], vault["vault MAC key"])
    data_dir = provision_data_dir(tmp_path / "terminal", simulator.port, tmk, "pkcs11")
    with p11kit_server(token_env, tmp_path / "server") as server:
        proc = TerminalProcess(data_dir, extra_args=["--reader", ""],
                               env={TOKEN_MODULE_ENV: server.client_module,
                                    "P11_KIT_SERVER_ADDRESS": server.address,
                                    "GLIBC_TUNABLES": HEAP_TUNABLES})
        try:
            wanted, found, maps = work_and_scan(proc, simulator, tmk, vault)
            status = proc.request(op="status")
        finally:
            proc.stop()
    # The keys are in the server: the terminal runs p11-kit's client, never SoftHSM2 itself.
    assert "p11-kit-client" in maps and "libsofthsm2" not in maps
    notes = json.dumps(status)
    assert "AES-CMAC under posfw-vault-enc" in notes, status  # the vault served the sale
    assert found == {"after sign-on": {}, "after the sales and the settlement": {}}, \
        f"key bytes in the terminal process's memory: {found}"
    in_files = scan_files([data_dir, token_env.tokendir], wanted)
    assert in_files == {}, f"key bytes in files: {in_files}"


def test_control_the_same_run_on_the_development_store_is_found(sim, tmp_path: Path) -> None:
    """The plant: the same terminal process with MemoryKeyStore (tests/memstore_entry.py). The
    keys are in its memory and in its key files, and both scans say so."""
    simulator, tmk = sim
    vault = {"vault key": os.urandom(32)}
    data_dir = provision_data_dir(tmp_path / "terminal", simulator.port, tmk, "memory",
                                  vault["vault key"])
    proc = TerminalProcess(data_dir, extra_args=["--reader", ""], module="tests.memstore_entry",
                           env={"GLIBC_TUNABLES": HEAP_TUNABLES})
    try:
        wanted, found, _maps = work_and_scan(proc, simulator, tmk, vault)
    finally:
        proc.stop()
    for when, hits in found.items():
        for name in ("TMK", "PIK", "MAK", "TDK", "vault key"):
            assert name in hits, f"the scan {when} missed the development store's {name}: {hits}"
    in_files = scan_files([data_dir], wanted)
    assert str(data_dir / "keys" / "tmk.key") in in_files.get("TMK", []), in_files


def test_the_unit_starts_the_firmware_with_the_heap_settings() -> None:
    """glibc reads GLIBC_TUNABLES at process start only: the service unit sets HEAP_TUNABLES."""
    unit = (Path(__file__).resolve().parents[1] / "board" / "systemd" / "posfw.service")
    lines = [line.strip() for line in unit.read_text().splitlines()]
    assert f"Environment=GLIBC_TUNABLES={HEAP_TUNABLES}" in lines


def test_cbc_chained_over_ecb_is_aes_cbc() -> None:
    """The vault's CBC over one AES-ECB call per block (a token without AES-CBC) gives AES-CBC's
    bytes both ways, so its blobs are the TPM boards' format."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from drivers.keystore.pkcs11 import _cbc_over_ecb, _xor_chain

    key, iv = os.urandom(32), os.urandom(16)
    ecb = Cipher(algorithms.AES(key), modes.ECB())
    for blocks in (1, 2, 5):
        data = os.urandom(16 * blocks)
        mine = _cbc_over_ecb(lambda b: ecb.encryptor().update(b), iv, data)
        assert mine == Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor().update(data)
        assert _xor_chain(ecb.decryptor().update(mine), iv, mine) == data


def test_a_token_module_named_in_the_environment_must_exist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from firmware.app.boards import profile
    from firmware.app.devices import token_module
    from firmware.ports import KeyStoreUnavailable

    monkeypatch.delenv(TOKEN_MODULE_ENV, raising=False)
    assert token_module(profile("sim")) == profile("sim").token_module
    monkeypatch.setenv(TOKEN_MODULE_ENV, p11kit.P11KIT_CLIENT)
    assert token_module(profile("sim")) == p11kit.P11KIT_CLIENT
    monkeypatch.setenv(TOKEN_MODULE_ENV, str(tmp_path / "nothing.so"))
    with pytest.raises(KeyStoreUnavailable, match=TOKEN_MODULE_ENV):
        token_module(profile("sim"))
