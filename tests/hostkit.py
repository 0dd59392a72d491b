"""The host link's key store in tests: a development store (drivers.keystore.memory) over a
temporary keys/ holding the test TMK, or a SoftHSM2 token provisioned with it
(drivers.keystore.pkcs11 through tests/p11kit.py); a sign-on's working keys installed the way
HostLink installs them (field 62 built by the acquirer's side, firmware.host.keys.
build_signon_keys, then HostKeys.install_working_keys); and a check of which keys a store holds
that only uses the store's own operations (a token never shows its keys).

The `host_store` fixture runs a test once per store kind (import it, and p11kit's
`softhsm_template`, into the test module).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from p11kit import provision_token, softhsm_env
from psec.des import decrypt_tdes_ecb, encrypt_tdes_ecb

from drivers.keystore.memory import MemoryKeyStore
from firmware.host.keys import (
    DEFAULT_MAK_CHECK,
    WorkingKeys,
    build_signon_keys,
    expand_key,
    signon_entries,
)
from firmware.ports import HostKeys, KeyStore

TMK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
STORE_KINDS = ("memory", "pkcs11")
_PROBE = bytes.fromhex("0011223344556677")


def keys_dir(path: Path, tmk: bytes = TMK) -> Path:
    """`path` made a development keys/ directory holding `tmk` (0600, as provisioning does)."""
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / "tmk.key", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, tmk.hex().upper().encode())
    finally:
        os.close(fd)
    return path


async def install(store: HostKeys, keys: WorkingKeys, tmk: bytes = TMK,
                  mak_check: str = DEFAULT_MAK_CHECK) -> None:
    """Install `keys` in `store` as a sign-on reply carrying them would."""
    await store.install_working_keys(signon_entries(build_signon_keys(keys, tmk, mak_check),
                                                    mak_check))


async def store_in(path: Path, keys: WorkingKeys | None = None,
                   tmk: bytes = TMK) -> MemoryKeyStore:
    """A development key store over `path` (created), holding `keys` when given."""
    store = MemoryKeyStore(keys_dir(path, tmk))
    if keys is not None:
        await install(store, keys, tmk)
    return store


async def holds(store: HostKeys, keys: WorkingKeys) -> bool:
    """The store's working keys are `keys`: its MAK (both halves), PIK and TDK are tried on a
    probe block through the store's own operations and compared with the clear keys."""
    mak = await store.mac_cipher(_PROBE, double=True, chain=False)
    if mak != encrypt_tdes_ecb(expand_key(keys.mak), _PROBE):
        return False
    block = await store.encrypt_pin("1234", "6225881234567890")
    if decrypt_tdes_ecb(expand_key(keys.pik), block)[:2] != b"\x04\x12":
        return False
    if keys.tdk is None:
        return not store.has_working_key("TDK")
    return await store.encrypt_track_block(_PROBE) == encrypt_tdes_ecb(expand_key(keys.tdk), _PROBE)


class StoreMaker:
    """Makes a test's key stores of one kind, closes them after the test. A token test gets one
    SoftHSM2 token, provisioned with the TMK like the firmware's provisioning does; SoftHSM
    reads its configuration when the module loads, so one store of that kind at a time."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind, self.root = kind, root
        self.stores: list[KeyStore] = []

    async def __call__(self, keys: WorkingKeys | None = None, tmk: bytes | None = TMK) -> KeyStore:
        """A store holding `tmk` (None: no TMK at all) and, when given, `keys` installed."""
        store: KeyStore
        if self.kind == "memory":
            where = self.root / f"keys{len(self.stores)}"
            if tmk is None:
                where.mkdir(parents=True)
                store = MemoryKeyStore(where)
            else:
                store = MemoryKeyStore(keys_dir(where, tmk))
        else:
            assert not self.stores, "one token store at a time"
            env = softhsm_env(self.root / "softhsm")
            if tmk is not None:
                provision_token(env, tmk)
            store = env.open()
        self.stores.append(store)
        if keys is not None:
            await install(store, keys, tmk if tmk is not None else TMK)
        return store

    def close(self) -> None:
        for store in self.stores:
            store.close()
        self.stores.clear()


@pytest.fixture(params=STORE_KINDS)
def host_store(request: pytest.FixtureRequest, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[StoreMaker]:
    """Makes this test's key stores: the development store, then a SoftHSM2 token."""
    if request.param == "pkcs11":
        request.getfixturevalue("softhsm_template")
        # softhsm_env points SOFTHSM2_CONF at the test's token; put it back after the test.
        monkeypatch.setenv("SOFTHSM2_CONF", str(tmp_path / "stores" / "softhsm" / "softhsm2.conf"))
    maker = StoreMaker(str(request.param), tmp_path / "stores")
    yield maker
    maker.close()
