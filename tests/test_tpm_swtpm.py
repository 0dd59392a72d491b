"""The TPM token without QEMU: swtpm on 127.0.0.1 behind tpm2-abrmd, tpm2-pkcs11 loaded into this
process by python-pkcs11 (tests/tpmkit.py), the token initialised as the QEMU guest does.

What the QEMU board's key custody rests on, proven against the real TPM stack: what tpm2-pkcs11
offers (AES ECB/CBC; no GCM, no DES; no C_GenerateKey, hence tpm2_ptool addkey at
initialisation), that the vault keys are sensitive and never extractable, that the CBC vault
format (drivers/keystore/vault_cbc.py) runs on it, that its keys outlive a TPM power cycle, and
the PKCS#11 key store (drivers/keystore/pkcs11.py) sealing with it there and destroying its keys.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism
from tpmkit import (
    TOKEN_LABEL,
    TPM2_PKCS11_MODULE,
    USER_PIN,
    SwtpmToken,
    swtpm_token,
    token_environment,
    vault_over,
)

from drivers.keystore import vault_cbc
from drivers.keystore.pkcs11 import Pkcs11KeyStore
from drivers.keystore.vault_cbc import ENC_KEY_LABEL, MAC_KEY_LABEL
from firmware.ports import KeyMissing, KeyStoreError, KeyStoreUnavailable, WrappedKey

AAD = b"posfw/pan/v1"
PAN = b"6225880000000001"


@pytest.fixture(scope="module")
def tpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmToken]:
    with swtpm_token(tmp_path_factory.mktemp("tpm")) as token:
        yield token


@pytest.fixture
def session(tpm: SwtpmToken):
    with token_environment(tpm):
        token = pkcs11.lib(TPM2_PKCS11_MODULE).get_token(token_label=TOKEN_LABEL)
        with token.open(user_pin=USER_PIN, rw=True) as opened:
            yield opened


def test_tpm2_pkcs11_offers_aes_ecb_cbc_and_nothing_for_gcm_or_des(session) -> None:
    mechanisms = session.token.slot.get_mechanisms()
    assert {Mechanism.AES_ECB, Mechanism.AES_CBC} <= mechanisms
    # Why the vault is CBC + CMAC on this token and the DES keys live in the PIN pad:
    assert Mechanism.AES_GCM not in mechanisms and Mechanism.AES_CMAC not in mechanisms
    assert not {Mechanism.DES3_ECB, Mechanism.DES3_CBC, Mechanism.DES3_KEY_GEN} & mechanisms
    # Why initialisation makes the keys with tpm2_ptool addkey:
    with pytest.raises(pkcs11.FunctionNotSupported):
        session.generate_key(KeyType.AES, 256, label="posfw-probe", store=True)


def test_the_vault_keys_are_sensitive_and_never_extractable(session) -> None:
    for label in (ENC_KEY_LABEL, MAC_KEY_LABEL):
        key = session.get_key(label=label, key_type=KeyType.AES)
        assert key[Attribute.VALUE_LEN] == 32
        assert key[Attribute.TOKEN] and key[Attribute.PRIVATE]
        assert key[Attribute.SENSITIVE] and key[Attribute.ALWAYS_SENSITIVE]
        assert not key[Attribute.EXTRACTABLE] and key[Attribute.NEVER_EXTRACTABLE]
        assert key[Attribute.VALUE] == b""  # tpm2-pkcs11 has no clear value to give


def test_the_cbc_vault_runs_on_the_tpm(session) -> None:
    vault, fast = vault_over(session), vault_over(session, one_call_mac=True)
    blob = vault.seal(PAN, AAD)
    assert blob[0] == vault_cbc.FORMAT_CBC_CMAC and PAN not in blob
    assert vault.unseal(blob, AAD) == PAN
    assert fast.unseal(blob, AAD) == PAN and vault.unseal(fast.seal(PAN, AAD), AAD) == PAN
    damaged = bytearray(blob)
    damaged[20] ^= 1
    with pytest.raises(KeyStoreError, match="integrity"):
        vault.unseal(bytes(damaged), AAD)
    with pytest.raises(KeyStoreError, match="integrity"):
        vault.unseal(blob, b"posfw/pan/v2")
    # The token's CBC is the chain of its ECB: the two CMAC paths agree on the TPM too.
    iv = bytes(range(16))
    enc = session.get_key(label=ENC_KEY_LABEL, key_type=KeyType.AES)
    by_blocks = vault_cbc.seal(PAN, AAD, cbc_encrypt=vault._cbc_encrypt,
                               ecb_encrypt=vault._ecb_encrypt, iv=iv)
    one_call = vault_cbc.seal(PAN, AAD, cbc_encrypt=fast._cbc_encrypt,
                              ecb_encrypt=fast._ecb_encrypt, mac_cbc_encrypt=fast._mac_cbc, iv=iv)
    assert by_blocks == one_call
    block = enc.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
    assert enc.encrypt(bytes(16), mechanism=Mechanism.AES_CBC, mechanism_param=bytes(16)) == block


def test_a_blob_sealed_before_a_tpm_power_cycle_opens_after_it(tpm: SwtpmToken) -> None:
    with token_environment(tpm):
        token = pkcs11.lib(TPM2_PKCS11_MODULE).get_token(token_label=TOKEN_LABEL)
        with token.open(user_pin=USER_PIN) as session:
            blob = vault_over(session).seal(PAN, AAD)
    tpm.restart_tpm()  # swtpm ends and starts again from its state directory
    with token_environment(tpm):
        token = pkcs11.lib(TPM2_PKCS11_MODULE).get_token(token_label=TOKEN_LABEL)
        with pytest.raises(pkcs11.PinIncorrect):
            token.open(user_pin="wrong-pin")
        with token.open(user_pin=USER_PIN) as session:
            assert vault_over(session).unseal(blob, AAD) == PAN


def test_per_call_cost_on_the_host_tpm(session) -> None:
    """Figures for docs/qemu.md (printed with -s): one AES call through tpm2-pkcs11, abrmd and
    swtpm, and a vault seal both ways. Bounded loosely: a TPM call here is milliseconds."""
    enc = session.get_key(label=ENC_KEY_LABEL, key_type=KeyType.AES)
    n = 20
    started = time.perf_counter()
    for _ in range(n):
        enc.encrypt(bytes(16), mechanism=Mechanism.AES_ECB)
    per_call = (time.perf_counter() - started) / n
    vault, fast = vault_over(session), vault_over(session, one_call_mac=True)
    vault.seal(PAN, AAD), fast.seal(PAN, AAD)  # subkeys computed before timing
    timings = {}
    for name, v in (("ecb-cmac", vault), ("cbc-cmac", fast)):
        started = time.perf_counter()
        for _ in range(n):
            v.seal(PAN, AAD)
        timings[name] = (time.perf_counter() - started) / n
    print(f"\n[tpm host] one AES call {per_call * 1000:.1f} ms; seal of a card number: "
          f"{timings['ecb-cmac'] * 1000:.1f} ms with the CMAC block by block (6 calls), "
          f"{timings['cbc-cmac'] * 1000:.1f} ms with one CBC call for it (2 calls)")
    assert per_call < 1.0, f"one TPM AES call took {per_call:.2f} s"


def test_the_kit_leaves_no_process_behind(tmp_path: Path) -> None:
    with swtpm_token(tmp_path, init=False) as token:
        pids = [p.pid for p in token.processes.values()]
        assert len(pids) == 3
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        # reaped by Popen.wait in close(): a pid still signalable would be a stray process
        raise AssertionError(f"process {pid} of the TPM kit still runs")


def test_the_pkcs11_key_store_seals_with_the_cbc_vault_on_the_tpm(tpm: SwtpmToken) -> None:
    with token_environment(tpm):
        store = Pkcs11KeyStore(TPM2_PKCS11_MODULE, TOKEN_LABEL, USER_PIN)
        try:
            status = store.status()
            assert status.kind == "pkcs11" and status.vault_key and status.tmk_check is None
            notes = " ".join(status.notes)
            assert "AES-CBC then AES-CMAC" in notes and "CKM_DES3_ECB" in notes
            assert "card vault cannot use this token" not in notes
            assert "crosses this process" not in notes  # no working key ever comes to a TPM
            blob = store.seal(PAN, AAD)
            assert blob[0] == vault_cbc.FORMAT_CBC_CMAC and PAN not in blob
            assert store.unseal(blob, AAD) == PAN
            with pytest.raises(KeyStoreError, match="integrity"):
                store.unseal(blob[:-1] + bytes([blob[-1] ^ 1]), AAD)
            # The DES jobs are not this token's (on the qemu board the PIN pad has them).
            with pytest.raises(KeyStoreUnavailable, match="DES3_ECB"):
                asyncio.run(store.install_working_keys(
                    [WrappedKey("PIK", bytes(16), bytes(4))]))
            with pytest.raises(KeyStoreError, match="tpm2_ptool addkey"):
                store.create_vault_key()
        finally:
            store.close()


def test_deregistration_destroys_the_tpm_vault_keys(tmp_path: Path) -> None:
    with swtpm_token(tmp_path) as tpm, token_environment(tpm):
        with pytest.raises(KeyStoreUnavailable, match="refused the PIN"):
            Pkcs11KeyStore(TPM2_PKCS11_MODULE, TOKEN_LABEL, "not-the-pin")
        store = Pkcs11KeyStore(TPM2_PKCS11_MODULE, TOKEN_LABEL, USER_PIN)
        try:
            store.seal(PAN, AAD)
            destroyed = store.destroy_all()
            assert sorted(destroyed) == [
                f"card-data MAC key (token object {MAC_KEY_LABEL})",
                f"card-data encryption key (token object {ENC_KEY_LABEL})",
            ]
            assert not store.status().vault_key
            with pytest.raises(KeyMissing, match="no card-vault keys"):
                store.seal(PAN, AAD)
        finally:
            store.close()
        again = Pkcs11KeyStore(TPM2_PKCS11_MODULE, TOKEN_LABEL, USER_PIN)
        try:  # gone from the token, not only from the store object
            assert not again.status().vault_key
        finally:
            again.close()
