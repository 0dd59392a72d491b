"""MemoryKeyStore, the development store over keys/tmk.key and keys/card.key: the same
contract as the token store (tests/test_keystore_pkcs11.py compares their outputs), its files'
rules, and its words."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from drivers.keystore.memory import MemoryKeyStore
from firmware.host.keys import (
    build_signon_keys,
    check_value,
    encrypt_pin_block,
    generate_working_keys,
)
from firmware.ports import (
    KeyCheckFailed,
    KeyMissing,
    KeyStore,
    KeyStoreError,
    WrappedKey,
)

TMK = bytes.fromhex("3B1F5D7A2C4E6B8091A2B3C4D5E6F708")


def run(coro):
    return asyncio.run(coro)


def wrapped(keys, tmk: bytes = TMK) -> list[WrappedKey]:
    raw = bytes.fromhex(build_signon_keys(keys, tmk))
    roles = ("PIK", "MAK", "TDK")[:len(raw) // 20]
    return [WrappedKey(r, raw[i * 20:i * 20 + 16], raw[i * 20 + 16:i * 20 + 20], r == "MAK")
            for i, r in enumerate(roles)]


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    d = tmp_path / "keys"
    d.mkdir()
    (d / "tmk.key").write_text(TMK.hex().upper() + "\n")
    os.chmod(d / "tmk.key", 0o600)
    return d


def test_it_is_a_key_store(keys_dir: Path) -> None:
    assert isinstance(MemoryKeyStore(keys_dir), KeyStore)


def test_working_keys_and_their_outputs(keys_dir: Path) -> None:
    store = MemoryKeyStore(keys_dir)
    keys = generate_working_keys(with_tdk=True)
    run(store.install_working_keys(wrapped(keys)))
    assert store.status().working_keys == ("PIK", "MAK", "TDK")
    assert store.status().tmk_check == check_value(TMK).hex().upper()
    pan = "6222021234567890123"
    assert run(store.encrypt_pin("4321", pan)) == encrypt_pin_block("4321", pan, keys.pik)
    # A PIN or PAN it cannot encode: fixed words, never the digits.
    with pytest.raises(KeyStoreError) as caught:
        run(store.encrypt_pin("12", pan))
    assert "12" not in str(caught.value).replace("4-12", "")
    ecb = run(store.mac_cipher(b"ABCDEFGH", double=False, chain=False))
    assert len(ecb) == 8 and ecb != run(store.mac_cipher(b"ABCDEFGH", double=True, chain=False))
    with pytest.raises(KeyStoreError, match="multiple of 8"):
        run(store.mac_cipher(b"123", double=False, chain=False))
    with pytest.raises(KeyStoreError, match="8-byte block"):
        run(store.encrypt_track_block(b"1234"))
    store.forget_working_keys()
    with pytest.raises(KeyMissing, match="sign on first"):
        run(store.mac_cipher(bytes(8), double=False, chain=False))


def test_a_check_value_mismatch_keeps_the_old_keys(keys_dir: Path) -> None:
    store = MemoryKeyStore(keys_dir)
    old = generate_working_keys(with_tdk=False)
    run(store.install_working_keys(wrapped(old)))
    before = run(store.encrypt_pin("1234", "6222021234567890123"))
    new = wrapped(generate_working_keys(with_tdk=False))
    new[1] = WrappedKey("MAK", new[1].wrapped, b"\x00\x00\x00\x00", True)
    with pytest.raises(KeyCheckFailed) as caught:
        run(store.install_working_keys(new))
    assert caught.value.role == "MAK"
    assert run(store.encrypt_pin("1234", "6222021234567890123")) == before


def test_the_files_rules(keys_dir: Path) -> None:
    os.chmod(keys_dir / "tmk.key", 0o644)
    with pytest.raises(KeyStoreError, match="readable by others"):
        run(MemoryKeyStore(keys_dir).install_working_keys([]))
    os.chmod(keys_dir / "tmk.key", 0o600)
    (keys_dir / "tmk.key").write_text("not hex")
    with pytest.raises(KeyStoreError, match="not 32 hex digits") as caught:
        run(MemoryKeyStore(keys_dir).install_working_keys([]))
    assert "not hex" not in str(caught.value)
    (keys_dir / "tmk.key").unlink()
    with pytest.raises(KeyMissing, match="terminal master key file"):
        run(MemoryKeyStore(keys_dir).install_working_keys([]))
    assert MemoryKeyStore(keys_dir).status().tmk_check is None


def test_the_vault_key_file(keys_dir: Path) -> None:
    store = MemoryKeyStore(keys_dir)
    blob = store.seal(b"6222021234567890123", b"row")
    card = keys_dir / "card.key"
    assert stat.S_IMODE(card.stat().st_mode) == 0o600 and len(card.read_bytes()) == 32
    assert MemoryKeyStore(keys_dir).unseal(blob, b"row") == b"6222021234567890123"
    with pytest.raises(KeyStoreError, match="integrity check"):
        store.unseal(blob, b"other row")
    no_create = MemoryKeyStore(keys_dir.parent / "none", create_vault_key=False)
    with pytest.raises(KeyMissing, match="card-data key file"):
        no_create.seal(b"1", b"")


def test_destroy_all_in_words(keys_dir: Path) -> None:
    store = MemoryKeyStore(keys_dir)
    store.seal(b"1", b"")
    run(store.install_working_keys(wrapped(generate_working_keys(with_tdk=False))))
    assert store.destroy_all() == ["terminal master key (file keys/tmk.key)",
                                   "card-data key (file keys/card.key)"]
    assert not any(keys_dir.iterdir())
    assert not store.has_working_key("PIK")
    assert store.destroy_all() == []


def test_each_working_key_builds_its_cipher_once(keys_dir: Path, monkeypatch) -> None:
    """A sale MACs twice and may encrypt a PIN and a track block: each key's cipher is built at
    its first use, not at every block (issue 19), and stays the key's own: every output equals
    the one computed afresh from the clear key."""
    import drivers.keystore.memory as memory

    built: list[bytes] = []
    real = memory.TripleDES

    def counting(key: bytes):
        built.append(bytes(key))
        return real(key)

    monkeypatch.setattr(memory, "TripleDES", counting)
    store = MemoryKeyStore(keys_dir)
    keys = generate_working_keys(with_tdk=True)
    run(store.install_working_keys(wrapped(keys)))
    pan = "6222021234567890123"
    for i in range(5):
        block = bytes([i]) * 8
        assert run(store.mac_cipher(block * 2, double=False, chain=True)) == \
            clear_cbc(keys.mak[:8] * 3, block * 2)
        assert run(store.mac_cipher(block, double=True, chain=False)) == \
            clear_ecb(keys.mak + keys.mak[:8], block)
        assert run(store.encrypt_pin(f"{1234 + i}", pan)) == encrypt_pin_block(f"{1234 + i}", pan, keys.pik)
        assert run(store.encrypt_track_block(block)) == clear_ecb(keys.tdk + keys.tdk[:8], block)
    # MAK single (K1) and double length, PIK, TDK: four ciphers for twenty blocks.
    assert len(built) == 4


def test_a_new_sign_on_or_forget_drops_the_old_ciphers(keys_dir: Path) -> None:
    """The ciphers go with their keys: after a new sign-on the MAC is the new MAK's, after
    forget_working_keys (or close, or destroy_all) nothing is computed until the next one."""
    store = MemoryKeyStore(keys_dir)
    block = b"ABCDEFGH" * 2
    for _ in range(2):
        keys = generate_working_keys(with_tdk=False)
        run(store.install_working_keys(wrapped(keys)))
        assert run(store.mac_cipher(block, double=False, chain=True)) == \
            clear_cbc(keys.mak[:8] * 3, block)
        assert run(store.encrypt_pin("1234", "6222021234567890123")) == \
            encrypt_pin_block("1234", "6222021234567890123", keys.pik)
    for end in (store.forget_working_keys, store.close, store.destroy_all):
        run(store.install_working_keys(wrapped(generate_working_keys(with_tdk=False))))
        run(store.mac_cipher(block, double=False, chain=True))
        end()
        with pytest.raises(KeyStoreError):  # KeyMissing, or the TMK file gone (destroy_all)
            run(store.mac_cipher(block, double=False, chain=True))
        with pytest.raises(KeyStoreError):
            run(store.encrypt_pin("1234", "6222021234567890123"))
        (keys_dir / "tmk.key").write_text(TMK.hex())
        os.chmod(keys_dir / "tmk.key", 0o600)


def test_no_partial_block_reaches_the_cipher(keys_dir: Path) -> None:
    """A cipher context would keep a partial block back silently: the store refuses in words."""
    store = MemoryKeyStore(keys_dir)
    run(store.install_working_keys(wrapped(generate_working_keys(with_tdk=False))))
    for data in (b"", b"1234567", b"123456789"):
        for chain in (False, True):
            with pytest.raises(KeyStoreError, match="multiple of 8"):
                run(store.mac_cipher(data, double=False, chain=chain))


def clear_ecb(key24: bytes, data: bytes) -> bytes:
    """The reference: a cipher built for this one call (what the store did before caching)."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    return Cipher(TripleDES(key24), modes.ECB()).encryptor().update(data)


def clear_cbc(key24: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    return Cipher(TripleDES(key24), modes.CBC(bytes(8))).encryptor().update(data)
