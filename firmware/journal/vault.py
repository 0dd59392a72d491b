"""The card vault: PANs sealed at rest under the board's card-vault key.

CardVault is a thin layer over the key store's VaultKeys (firmware/ports.py): the store seals and
unseals (AES-GCM, blob = nonce || ciphertext || tag, inside a PKCS#11 token on a board that has
one), the vault fixes what is sealed (the PAN as ASCII) and the associated data (AAD), and turns a
blob that fails its integrity check into VaultError. The blob format and the AAD are those of the
development key file of old, so a development journal's PANs stay readable once its key moves into
a token (provisioning imports it: firmware/app/provision.py).

The clear PAN exists only in memory, for the one message that needs it.
"""

from __future__ import annotations

import os

from firmware.ports import KeyMissing, KeyStoreError, KeyStoreUnavailable, VaultKeys

KEY_BYTES = 32
NONCE_BYTES = 12
AAD = b"posfw/pan/v1"


class VaultError(Exception):
    """A sealed card number cannot be read back: damaged, or sealed under another key."""


class LocalVaultKey:
    """VaultKeys over a key held in this process: for a vault that must never hold a real card
    number (a wiped terminal's throwaway vault, a restore's check) and for tests. A terminal's
    own vault key lives in its key store."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise VaultError(f"the card-data key must be {KEY_BYTES} bytes, got {len(key)}")
        # cryptography only for a vault whose key is in this process: a terminal's own vault
        # seals in its key store, and idle loads neither.
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(bytes(key))

    def __repr__(self) -> str:
        return "LocalVaultKey(<key hidden>)"

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, aad)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag  # loaded with AESGCM in __init__

        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise KeyStoreError("sealed data failed its integrity check (damaged, or sealed under "
                                "another key or for another record)") from None


class CardVault:
    """PANs in and out of the vault key (see the module docstring). `keys`: the key store's
    VaultKeys, or 32 bytes for a LocalVaultKey."""

    def __init__(self, keys: VaultKeys | bytes) -> None:
        self._keys: VaultKeys = (LocalVaultKey(bytes(keys)) if isinstance(keys, bytes | bytearray)
                                 else keys)

    def __repr__(self) -> str:
        return f"CardVault({type(self._keys).__name__})"

    @property
    def keys(self) -> VaultKeys:
        """The sealing keys under this vault (the store's card-vault key)."""
        return self._keys

    @classmethod
    def throwaway(cls) -> CardVault:
        """A vault under a random key nobody keeps: what it seals can never be read again."""
        return cls(os.urandom(KEY_BYTES))

    def encrypt(self, pan: str) -> bytes:
        return self._keys.seal(pan.encode("ascii"), AAD)

    def decrypt(self, blob: bytes) -> str:
        try:
            return self._keys.unseal(blob, AAD).decode("ascii")
        except (KeyStoreUnavailable, KeyMissing):
            raise  # the store is gone, not the blob: never a reason to set a record aside
        except (KeyStoreError, UnicodeDecodeError) as exc:
            raise VaultError("an encrypted card number failed its integrity check") from exc
