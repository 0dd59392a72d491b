"""The card vault: PANs encrypted with AES-GCM under the board's card-data key.

On sim and dev boards the key store is a 0600 file of 32 random bytes; a
real board's key store supplies the same 32 bytes from its secure element.
The clear PAN exists only in memory, for the one message that needs it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12
AAD = b"posfw/pan/v1"


class VaultError(Exception):
    """The card-data key is missing, unreadable or unsafe, or a ciphertext is damaged."""


class CardVault:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise VaultError(f"the card-data key must be {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "CardVault(<key hidden>)"

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str], create: bool = True) -> CardVault:
        """Load (or create, 0600, atomically) the dev-board key file."""
        p = Path(path)
        if not p.exists():
            if not create:
                raise VaultError(f"card-data key file {p} is missing")
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, os.urandom(KEY_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, p)
        mode = stat.S_IMODE(p.stat().st_mode)
        if mode & 0o077:
            raise VaultError(
                f"card-data key file {p} is readable by others (mode {mode:o}); run chmod 600 {p}"
            )
        key = p.read_bytes()
        return cls(key)

    def encrypt(self, pan: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, pan.encode("ascii"), AAD)

    def decrypt(self, blob: bytes) -> str:
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], AAD).decode("ascii")
        except Exception as exc:  # InvalidTag or a truncated blob: say which in words
            raise VaultError("an encrypted card number failed its integrity check") from exc
