"""Pkcs11KeyStore on real SoftHSM2 tokens: the same outputs as the development store for the same
keys, check values (all or none), missing keys, an absent or refusing token in words, the
attributes of every object, the card vault's blobs, TR-31 import, destroy_all, and a token
through p11-kit's client (where mechanisms with parameters are missing)."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import p11kit
import pkcs11
import pytest
from p11kit import (
    P11KIT_CLIENT,
    SOFTHSM_MODULE,
    TokenEnv,
    p11kit_server,
    provision_token,
    softhsm_env,
    write_conf,
)
from pkcs11 import Attribute
from pkcs11.exceptions import AttributeSensitive
from psec import mac as psec_mac
from psec import tr31

from drivers.keystore.memory import MemoryKeyStore
from drivers.keystore.pkcs11 import HEAP_TUNABLES, LABEL_PREFIX, Pkcs11KeyStore
from drivers.keystore.tr31 import wrap_tmk
from firmware.host.keys import (
    WorkingKeys,
    build_signon_keys,
    check_value,
    encrypt_pin_block,
    generate_working_keys,
)
from firmware.host.mac import cup_ecb_mac
from firmware.ports import (
    KeyCheckFailed,
    KeyMissing,
    KeyStore,
    KeyStoreError,
    KeyStoreUnavailable,
    WrappedKey,
)

# The kit's fixtures, used by name.
softhsm_template = p11kit.softhsm_template
token_env = p11kit.token_env

TMK = bytes.fromhex("3B1F5D7A2C4E6B8091A2B3C4D5E6F708")
ROLES = ("PIK", "MAK", "TDK")


def run(coro):
    return asyncio.run(coro)


def wrapped_keys(keys: WorkingKeys, tmk: bytes = TMK, mak_check: str = "first8") -> list[WrappedKey]:
    """Field 62 as the host sends it, cut into the contract's WrappedKeys."""
    raw = bytes.fromhex(build_signon_keys(keys, tmk, mak_check))
    return [WrappedKey(role, raw[i * 20:i * 20 + 16], raw[i * 20 + 16:i * 20 + 20],
                       check_first8=(role == "MAK" and mak_check == "first8"))
            for i, role in enumerate(ROLES[:len(raw) // 20])]


def memory_store(dir_: Path, tmk: bytes = TMK, vault_key: bytes | None = None) -> MemoryKeyStore:
    keys = dir_ / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    (keys / "tmk.key").write_text(tmk.hex())
    os.chmod(keys / "tmk.key", 0o600)
    if vault_key is not None:
        (keys / "card.key").write_bytes(vault_key)
        os.chmod(keys / "card.key", 0o600)
    return MemoryKeyStore(keys)


@pytest.fixture
def provisioned(token_env: TokenEnv) -> TokenEnv:
    provision_token(token_env, TMK)
    return token_env


@pytest.fixture
def store(provisioned: TokenEnv):
    s = provisioned.open()
    yield s
    s.close()


# ---- the MACs built from mac_cipher, as firmware/host/mac.py builds them ----

async def cup_mac(store: KeyStore, data: bytes) -> bytes:
    """The CUP "ECB" MAC (firmware/host/mac.py) with the single-DES step done by the store."""
    padded = data + b"\x00" * (-len(data) % 8)
    acc = 0
    for i in range(0, len(padded), 8):
        acc ^= int.from_bytes(padded[i:i + 8], "big")
    expanded = acc.to_bytes(8, "big").hex().upper().encode()
    first = await store.mac_cipher(expanded[:8], double=False, chain=False)
    second = await store.mac_cipher(bytes(a ^ b for a, b in zip(first, expanded[8:], strict=True)),
                                    double=False, chain=False)
    return second.hex().upper().encode()[:8]


async def x919_mac(store: KeyStore, data: bytes) -> bytes:
    """ISO 9797-1 algorithm 3, padding method 1: single-DES CBC over all blocks but the last,
    then TDES with both halves over the last block XOR the chaining value."""
    padded = data + b"\x00" * (-len(data) % 8)
    head, last = padded[:-8], padded[-8:]
    chain = (await store.mac_cipher(head, double=False, chain=True))[-8:] if head else bytes(8)
    return await store.mac_cipher(bytes(a ^ b for a, b in zip(last, chain, strict=True)),
                                  double=True, chain=False)


# ---- the same outputs as the development store ----

def test_same_outputs_as_the_memory_store(store: Pkcs11KeyStore, tmp_path: Path) -> None:
    keys = generate_working_keys(with_tdk=True)
    mem = memory_store(tmp_path / "mem")
    for s in (store, mem):
        run(s.install_working_keys(wrapped_keys(keys)))
    rnd = os.urandom
    for n in (8, 64, 120, 123):
        data = rnd(n)
        cup = run(cup_mac(store, data))
        assert cup == run(cup_mac(mem, data)) == cup_ecb_mac(keys.mak, data)
        x919 = run(x919_mac(store, data))
        assert x919 == run(x919_mac(mem, data)) == psec_mac.generate_retail_mac(
            keys.mak[:8], keys.mak[8:], data, padding=1)
    block = rnd(64)
    for double in (False, True):
        for chain in (False, True):
            assert run(store.mac_cipher(block, double=double, chain=chain)) == \
                run(mem.mac_cipher(block, double=double, chain=chain))
    pan = "6222021234567890123"
    assert run(store.encrypt_pin("123456", pan)) == run(mem.encrypt_pin("123456", pan)) == \
        encrypt_pin_block("123456", pan, keys.pik)
    track = rnd(8)
    assert run(store.encrypt_track_block(track)) == run(mem.encrypt_track_block(track))
    assert store.status().working_keys == ROLES


def test_mak_checked_over_all_16_bytes(store: Pkcs11KeyStore) -> None:
    keys = generate_working_keys(with_tdk=False)
    run(store.install_working_keys(wrapped_keys(keys, mak_check="full16")))
    assert store.has_working_key("MAK") and not store.has_working_key("TDK")
    data = os.urandom(40)
    assert run(cup_mac(store, data)) == cup_ecb_mac(keys.mak, data)


# ---- check values: all or none ----

@pytest.mark.parametrize("role", ROLES)
def test_a_check_value_mismatch_keeps_the_old_keys(store: Pkcs11KeyStore, role: str) -> None:
    old = generate_working_keys(with_tdk=True)
    run(store.install_working_keys(wrapped_keys(old)))
    data = os.urandom(32)
    before = run(store.mac_cipher(data, double=True, chain=True))
    new = wrapped_keys(generate_working_keys(with_tdk=True))
    i = ROLES.index(role)
    bad = WrappedKey(role, new[i].wrapped, bytes(b ^ 0xFF for b in new[i].check_value),
                     new[i].check_first8)
    new[i] = bad
    with pytest.raises(KeyCheckFailed) as caught:
        run(store.install_working_keys(new))
    assert caught.value.role == role and caught.value.expected == bad.check_value
    assert caught.value.got != bad.check_value
    # The old keys still answer, and the failed attempt left no object behind.
    assert run(store.mac_cipher(data, double=True, chain=True)) == before
    assert run(store.encrypt_pin("1234", "6222021234567890123")) == \
        encrypt_pin_block("1234", "6222021234567890123", old.pik)
    assert store.status().working_keys == ROLES
    labels = [o[Attribute.LABEL] for o in store._session.get_objects()]
    assert sorted(labels) == sorted(["posfw-tmk", "posfw-vault", "posfw-pik", "posfw-mak",
                                     "posfw-mak-k1", "posfw-tdk"])


def test_a_new_sign_on_replaces_every_working_key(store: Pkcs11KeyStore) -> None:
    run(store.install_working_keys(wrapped_keys(generate_working_keys(with_tdk=True))))
    second = generate_working_keys(with_tdk=False)
    run(store.install_working_keys(wrapped_keys(second)))
    assert store.status().working_keys == ("PIK", "MAK")
    with pytest.raises(KeyMissing):
        run(store.encrypt_track_block(bytes(8)))
    labels = sorted(o[Attribute.LABEL] for o in store._session.get_objects())
    assert labels == ["posfw-mak", "posfw-mak-k1", "posfw-pik", "posfw-tmk", "posfw-vault"]


# ---- missing keys ----

def test_key_missing_before_sign_on_and_after_destroy_all(store: Pkcs11KeyStore) -> None:
    for call in (store.mac_cipher(bytes(8), double=False, chain=False),
                 store.encrypt_pin("1234", "6222021234567890123"),
                 store.encrypt_track_block(bytes(8))):
        with pytest.raises(KeyMissing, match="sign on first"):
            run(call)
    blob = store.seal(b"6222021234567890123", b"row 1")
    run(store.install_working_keys(wrapped_keys(generate_working_keys(with_tdk=True))))
    words = store.destroy_all()
    assert words == [w for w in words if "(token object posfw-" in w or "(session object posfw-" in w]
    assert any(w.startswith("terminal master key (token object posfw-tmk)") for w in words)
    assert any(w.startswith("card-data key (token object posfw-vault)") for w in words)
    assert "MAC key, single-DES form (session object posfw-mak-k1)" in words
    assert len(words) == 6
    with pytest.raises(KeyMissing):
        run(store.mac_cipher(bytes(8), double=True, chain=False))
    with pytest.raises(KeyMissing, match="no terminal master key"):
        run(store.install_working_keys(wrapped_keys(generate_working_keys(with_tdk=False))))
    with pytest.raises(KeyMissing, match="no card-vault key"):
        store.unseal(blob, b"row 1")
    assert store.status().tmk_check is None and not store.status().vault_key
    assert not [o for o in store._session.get_objects()
                if str(o[Attribute.LABEL]).startswith(LABEL_PREFIX)]


def test_destroy_all_reaches_objects_the_store_did_not_make(store: Pkcs11KeyStore) -> None:
    """A stray posfw-* object (an older firmware's, a half-done ceremony's) goes too."""
    store._session.generate_key(pkcs11.KeyType.AES, 128, store=True, label="posfw-stray")
    words = store.destroy_all()
    assert "key (token object posfw-stray)" in words


# ---- the token absent, refusing, or not loadable ----

def test_wrong_pin_is_refused_in_words(provisioned: TokenEnv) -> None:
    with pytest.raises(KeyStoreUnavailable) as caught:
        Pkcs11KeyStore(provisioned.module, provisioned.label, "999999")
    assert "refused the PIN" in str(caught.value) and "999999" not in str(caught.value)


def test_token_absent_names_what_is_there(token_env: TokenEnv) -> None:
    with pytest.raises(KeyStoreUnavailable) as caught:
        Pkcs11KeyStore(token_env.module, "posfw-other", token_env.pin)
    text = str(caught.value)
    assert "'posfw-other' is not present" in text and "'posfw'" in text
    assert token_env.pin not in text


def test_no_token_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOFTHSM2_CONF", str(write_conf(tmp_path / "empty")))
    with pytest.raises(KeyStoreUnavailable, match=r"not present .*tokens seen: none"):
        Pkcs11KeyStore(SOFTHSM_MODULE, "posfw", "246813")


def test_module_path_wrong_or_configuration_missing(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyStoreUnavailable, match="does not exist: install its package"):
        Pkcs11KeyStore(str(tmp_path / "libnothing.so"), "posfw", "1")
    not_a_module = tmp_path / "libbroken.so"
    not_a_module.write_bytes(b"not an ELF file")
    with pytest.raises(KeyStoreUnavailable, match="cannot be loaded"):
        Pkcs11KeyStore(str(not_a_module), "posfw", "1")
    monkeypatch.setenv("SOFTHSM2_CONF", str(tmp_path / "missing.conf"))
    with pytest.raises(KeyStoreUnavailable, match="SOFTHSM2_CONF"):
        Pkcs11KeyStore(SOFTHSM_MODULE, "posfw", "1")


def test_stores_on_two_tokens_in_turn(tmp_path: Path, softhsm_template: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The module is loaded afresh when no store holds it, so a second token's configuration
    is read; while a store is open, another configuration is refused in words."""
    other_tmk = os.urandom(16)
    a = softhsm_env(tmp_path / "a", set_env=False)
    b = softhsm_env(tmp_path / "b", set_env=False)
    provision_token(a, TMK)
    provision_token(b, other_tmk)
    monkeypatch.setenv("SOFTHSM2_CONF", str(a.conf))
    first = a.open()
    try:
        assert first.status().tmk_check == check_value(TMK).hex().upper()
        monkeypatch.setenv("SOFTHSM2_CONF", str(b.conf))
        with pytest.raises(KeyStoreUnavailable, match="in use in this process"):
            b.open()
    finally:
        first.close()
    second = b.open()
    try:
        assert second.status().tmk_check == check_value(other_tmk).hex().upper()
    finally:
        second.close()


def test_operations_after_close_say_so(store: Pkcs11KeyStore) -> None:
    store.close()
    with pytest.raises(KeyStoreUnavailable, match="is closed"):
        store.seal(b"x", b"")
    assert store.status().notes == ("closed",)
    store.close()  # twice is harmless


# ---- the objects' attributes ----

def test_every_object_is_sensitive_and_never_extractable(store: Pkcs11KeyStore) -> None:
    run(store.install_working_keys(wrapped_keys(generate_working_keys(with_tdk=True))))
    objects = [o for o in store._session.get_objects()
               if str(o[Attribute.LABEL]).startswith(LABEL_PREFIX)]
    assert len(objects) == 6
    for obj in objects:
        label = obj[Attribute.LABEL]
        assert obj[Attribute.SENSITIVE] is True, label
        assert obj[Attribute.EXTRACTABLE] is False, label
        assert obj[Attribute.PRIVATE] is True, label
        assert obj[Attribute.MODIFIABLE] is False, label
        assert obj[Attribute.TOKEN] is (label in ("posfw-tmk", "posfw-vault")), label
        assert obj[Attribute.WRAP] is False and obj[Attribute.SIGN] is False, label
        with pytest.raises(AttributeSensitive):
            obj[Attribute.VALUE]
    working = [o for o in objects if not o[Attribute.TOKEN]]
    for obj in working:
        assert obj[Attribute.ENCRYPT] is True and obj[Attribute.DECRYPT] is False
    # Not modifiable: nobody can later flip a key to extractable or add a use.
    with pytest.raises(pkcs11.exceptions.PKCS11Error):
        working[0][Attribute.DECRYPT] = True


# ---- provisioning ----

def test_install_tmk_wipes_its_argument_and_replaces_the_old_one(store: Pkcs11KeyStore) -> None:
    new = bytearray(os.urandom(16))
    expected = check_value(bytes(new)).hex().upper()
    run(store.install_working_keys(wrapped_keys(generate_working_keys(with_tdk=False))))
    assert store.install_tmk(new) == expected
    assert new == bytearray(16)
    assert store.status().tmk_check == expected
    assert store.status().working_keys == ()  # they came under the old TMK
    tmks = list(store._session.get_objects({Attribute.LABEL: "posfw-tmk"}))
    assert len(tmks) == 1
    with pytest.raises(KeyStoreError, match="16 bytes"):
        store.install_tmk(bytearray(8))


def test_a_second_vault_key_is_refused(store: Pkcs11KeyStore) -> None:
    blob = store.seal(b"6222021234567890123", b"aad")
    key = bytearray(os.urandom(32))
    with pytest.raises(KeyStoreError, match="already holds a card-vault key"):
        store.create_vault_key(key)
    assert key == bytearray(32)  # wiped even when refused
    assert store.unseal(blob, b"aad") == b"6222021234567890123"


def test_vault_key_generated_in_the_token(token_env: TokenEnv) -> None:
    s = token_env.open()
    try:
        assert not s.status().vault_key
        with pytest.raises(KeyMissing):
            s.seal(b"1", b"")
        s.create_vault_key()
        assert s.status().vault_key
        assert s.unseal(s.seal(b"6222021234567890123", b"r"), b"r") == b"6222021234567890123"
    finally:
        s.close()


def test_vault_blobs_move_between_the_stores(token_env: TokenEnv, tmp_path: Path) -> None:
    """A development journal's keys/card.key imported into the token keeps its sealed PANs
    readable, and the other way round (same nonce || ct || tag format)."""
    key = os.urandom(32)
    mem = memory_store(tmp_path / "mem", vault_key=key)
    s = token_env.open()
    try:
        s.create_vault_key(bytearray(key))
        pan, aad = b"6222021234567890123", b"journal row 42"
        assert s.unseal(mem.seal(pan, aad), aad) == pan
        assert mem.unseal(s.seal(pan, aad), aad) == pan
        blob = bytearray(s.seal(pan, aad))
        assert len(blob) == 12 + len(pan) + 16
        for i in (0, 15, len(blob) - 1):
            bad = bytearray(blob)
            bad[i] ^= 1
            with pytest.raises(KeyStoreError, match="integrity check"):
                s.unseal(bytes(bad), aad)
        with pytest.raises(KeyStoreError, match="integrity check"):
            s.unseal(bytes(blob), b"journal row 43")
        with pytest.raises(KeyStoreError, match="too short"):
            s.unseal(bytes(blob[:20]), aad)
    finally:
        s.close()


def test_tr31_import(token_env: TokenEnv) -> None:
    kbpk = os.urandom(16)
    block = wrap_tmk(TMK, kbpk)
    s = token_env.open()
    try:
        arg = bytearray(kbpk)
        assert s.import_tmk_tr31(block, arg) == check_value(TMK).hex().upper()
        assert arg == bytearray(16)
        keys = generate_working_keys(with_tdk=True)
        run(s.install_working_keys(wrapped_keys(keys)))
        assert run(cup_mac(s, b"x" * 30)) == cup_ecb_mac(keys.mak, b"x" * 30)

        for words, blk, key in (
            ("does not verify under this key-block protection key", block, os.urandom(16)),
            ("does not verify", block[:-1] + ("0" if block[-1] != "0" else "1"), kbpk),
            ("does not verify", block[:20] + ("0" if block[20] != "0" else "1") + block[21:], kbpk),
            ("usage P0", tr31.wrap(kbpk, "B0000P0TE00N0000", TMK), kbpk),
            ("16-byte triple-DES key", tr31.wrap(kbpk, "B0000K0TB00E0000", TMK[:8] * 3), kbpk),
            ("malformed", "B0096K0TB00E0000XYZ", kbpk),
        ):
            with pytest.raises(KeyStoreError, match=words) as caught:
                s.import_tmk_tr31(blk, bytearray(key))
            text = str(caught.value)
            for secret in (TMK, kbpk, key):
                assert secret.hex().upper() not in text.upper()
        # The refused imports left the installed TMK alone.
        assert s.status().tmk_check == check_value(TMK).hex().upper()
    finally:
        s.close()


# ---- status, threads ----

def test_status_in_words(store: Pkcs11KeyStore) -> None:
    assert isinstance(store, KeyStore)
    st = store.status()
    assert st.kind == "pkcs11" and "token 'posfw' in slot" in st.where
    assert "SoftHSM" in st.where
    assert st.tmk_check == check_value(TMK).hex().upper() and st.vault_key
    assert any("cannot unwrap under a DES key" in n and "zeroed at once" in n for n in st.notes)


def test_status_says_when_freed_memory_is_not_overwritten(
        store: Pkcs11KeyStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert any(f"GLIBC_TUNABLES={HEAP_TUNABLES}" in n for n in store.status().notes)
    monkeypatch.setenv("GLIBC_TUNABLES", HEAP_TUNABLES)
    assert not any("GLIBC_TUNABLES" in n for n in store.status().notes)


def test_one_session_shared_by_threads(store: Pkcs11KeyStore) -> None:
    """Seal/unseal from worker threads while the loop signs on again and again and computes
    MACs: the store's lock keeps each multi-call job (C_DecryptInit + C_Decrypt +
    C_CreateObject, a check value) whole on the one session; nothing fails or mixes up."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def worker(n: int) -> None:
        try:
            i = 0
            while not stop.is_set():
                pan = f"62220212345678{n:02d}{i % 1000:03d}".encode()
                assert store.unseal(store.seal(pan, b"t"), b"t") == pan
                i += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    try:
        data = os.urandom(64)
        for _ in range(25):
            keys = generate_working_keys(with_tdk=True)
            run(store.install_working_keys(wrapped_keys(keys)))
            assert run(cup_mac(store, data)) == cup_ecb_mac(keys.mak, data)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not errors and not any(t.is_alive() for t in threads)


# ---- a token in another process, through p11-kit's client ----

def test_through_p11kit_client(provisioned: TokenEnv, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """p11-kit 0.24 forwards no mechanism with parameters: no CKM_DES3_CBC (chained MACs run as
    ECB calls, same results) and no CKM_AES_GCM (the vault says so in words)."""
    with p11kit_server(provisioned, tmp_path / "run") as server:
        monkeypatch.setenv("P11_KIT_SERVER_ADDRESS", server.address)
        s = Pkcs11KeyStore(P11KIT_CLIENT, provisioned.label, provisioned.pin)
        try:
            st = s.status()
            assert st.tmk_check == check_value(TMK).hex().upper()
            assert any("missing CKM_AES_GCM" in n for n in st.notes)
            assert any("missing CKM_DES3_CBC" in n for n in st.notes)
            assert any("zeroed at once" in n for n in st.notes)
            assert any("through p11-kit's client" in n for n in st.notes)
            keys = generate_working_keys(with_tdk=True)
            run(s.install_working_keys(wrapped_keys(keys)))
            data = os.urandom(120)
            assert run(x919_mac(s, data)) == psec_mac.generate_retail_mac(
                keys.mak[:8], keys.mak[8:], data, padding=1)
            assert run(cup_mac(s, data)) == cup_ecb_mac(keys.mak, data)
            with pytest.raises(KeyStoreUnavailable, match="no AES_GCM mechanism"):
                s.seal(b"6222021234567890123", b"")
        finally:
            s.close()
