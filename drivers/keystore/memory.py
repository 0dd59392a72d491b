"""The development key store: the TMK and the card-vault key in 0600 files under keys/, the
working keys in this process's memory.

For the sim and dev boards only (firmware/app/boards.py refuses it elsewhere): every key here is
in clear in Python memory, which is exactly what a board with a token avoids. It keeps the file
formats the firmware has always used (tmk.key: 32 hex digits; card.key: 32 random bytes), so a
development journal stays readable. Each working key's DES/TDES cipher is built once, when it is
first used, and goes with the key (a new sign-on, forget, destroy, close).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psec.des import decrypt_tdes_ecb, encrypt_tdes_ecb
from psec.pinblock import encode_pinblock_iso_0

from firmware.ports import (
    WORKING_KEY_ROLES,
    KeyCheckFailed,
    KeyMissing,
    KeyStatus,
    KeyStoreError,
    WrappedKey,
)

VAULT_KEY_BYTES = 32
NONCE_BYTES = 12
ZERO_IV = bytes(8)
TMK_FILE = "tmk.key"
VAULT_FILE = "card.key"


def _tdes(key: bytes) -> bytes:
    """The 24-byte form of an 8- or 16-byte DES key (cryptography deprecates the short forms)."""
    return key * 3 if len(key) == 8 else key + key[:8]


def check_value(key: bytes) -> bytes:
    return encrypt_tdes_ecb(_tdes(key), b"\x00" * 8)[:4]


class _DesCipher:
    """One working key's cipher, built once: ECB, and CBC from a zero IV (the MAC's chaining).
    It holds the key (its 24-byte form) in this process's memory, where the store's dict of
    working keys already holds it. Each call takes a fresh encryptor context: no state is
    carried from one call to the next."""

    __slots__ = ("_cbc", "_ecb")

    def __init__(self, key: bytes) -> None:
        algorithm = TripleDES(_tdes(key))
        self._ecb = Cipher(algorithm, modes.ECB())
        self._cbc = Cipher(algorithm, modes.CBC(ZERO_IV))

    def ecb(self, data: bytes) -> bytes:
        return self._ecb.encryptor().update(data)

    def cbc(self, data: bytes) -> bytes:
        return self._cbc.encryptor().update(data)


def _private_file(path: Path, what: str) -> bytes:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise KeyMissing(f"the {what} file {path} is missing") from None
    if mode & 0o077:
        raise KeyStoreError(f"the {what} file {path} is readable by others (mode {mode:o}); "
                            f"run chmod 600 {path}")
    return path.read_bytes()


def _overwrite(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.write(b"\0" * os.fstat(fh.fileno()).st_size)
        fh.flush()
        os.fsync(fh.fileno())


class MemoryKeyStore:
    """firmware.ports.KeyStore over development key files (see the module docstring)."""

    def __init__(self, keys_dir: str | os.PathLike[str], *, create_vault_key: bool = True) -> None:
        self.keys_dir = Path(keys_dir)
        self._tmk: bytes | None = None
        self._working: dict[str, bytes] = {}
        # (role, double) -> the cipher of that key (double: all 16 bytes; else its first 8)
        self._ciphers: dict[tuple[str, bool], _DesCipher] = {}
        self._aead: AESGCM | None = None
        self._create_vault_key = create_vault_key

    def __repr__(self) -> str:
        return f"MemoryKeyStore({self.keys_dir})"

    # ---- the files ----

    def _load_tmk(self) -> bytes:
        if self._tmk is None:
            raw = _private_file(self.keys_dir / TMK_FILE, "terminal master key")
            try:
                tmk = bytes.fromhex(raw.decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                raise KeyStoreError(f"the terminal master key file {self.keys_dir / TMK_FILE} "
                                    "is not 32 hex digits") from None
            if len(tmk) != 16:
                raise KeyStoreError(f"the terminal master key file {self.keys_dir / TMK_FILE} "
                                    f"holds {len(tmk)} bytes, not 16")
            self._tmk = tmk
        return self._tmk

    def _vault(self) -> AESGCM:
        if self._aead is None:
            path = self.keys_dir / VAULT_FILE
            if not path.exists() and self._create_vault_key:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    os.write(fd, os.urandom(VAULT_KEY_BYTES))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, path)
            key = _private_file(path, "card-data key")
            if len(key) != VAULT_KEY_BYTES:
                raise KeyStoreError(f"the card-data key file {path} holds {len(key)} bytes, "
                                    f"not {VAULT_KEY_BYTES}")
            self._aead = AESGCM(key)
        return self._aead

    # ---- HostKeys ----

    async def install_working_keys(self, keys: list[WrappedKey]) -> None:
        tmk = self._load_tmk()
        fresh: dict[str, bytes] = {}
        for k in keys:
            if k.role not in WORKING_KEY_ROLES or len(k.wrapped) != 16:
                raise KeyStoreError(f"a working key must be one of {WORKING_KEY_ROLES} and "
                                    "16 bytes wrapped")
            clear = decrypt_tdes_ecb(_tdes(tmk), k.wrapped)
            got = check_value(clear[:8] if k.check_first8 else clear)
            if got != k.check_value:
                raise KeyCheckFailed(k.role, k.check_value, got)
            fresh[k.role] = clear
        self._working, self._ciphers = fresh, {}

    def forget_working_keys(self) -> None:
        self._working, self._ciphers = {}, {}

    def has_working_key(self, role: str) -> bool:
        return role in self._working

    def _key(self, role: str) -> bytes:
        try:
            return self._working[role]
        except KeyError:
            raise KeyMissing(f"no {role}: sign on first") from None

    def _cipher(self, role: str, double: bool = True) -> _DesCipher:
        """The key's cipher, built at its first use since the keys were installed: a sale MACs
        twice and may encrypt a PIN, and building the cipher (key checks, psec's and
        cryptography's wrappers) each time was about two thirds of each call's cost."""
        cipher = self._ciphers.get((role, double))
        if cipher is None:
            key = self._key(role)
            cipher = self._ciphers[(role, double)] = _DesCipher(key if double else key[:8])
        return cipher

    async def mac_cipher(self, data: bytes, *, double: bool, chain: bool) -> bytes:
        # A cipher context buffers a partial block silently: refuse one here, in words.
        if not data or len(data) % 8:
            raise KeyStoreError("MAC data must be a multiple of 8 bytes")
        cipher = self._cipher("MAK", double)
        return cipher.cbc(data) if chain else cipher.ecb(data)

    async def encrypt_pin(self, pin: str, pan: str) -> bytes:
        try:
            block = encode_pinblock_iso_0(pin, pan)
        except ValueError:
            # psec's words are safe, but keep ours fixed so no PIN can leak into a message.
            raise KeyStoreError("a PIN must be 4-12 digits and the PAN at least 13 digits") \
                from None
        return self._cipher("PIK").ecb(block)

    async def encrypt_track_block(self, block: bytes) -> bytes:
        if len(block) != 8:
            raise KeyStoreError("track data is encrypted one 8-byte block at a time")
        return self._cipher("TDK").ecb(bytes(block))

    # ---- VaultKeys ----

    def seal(self, plain: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._vault().encrypt(nonce, plain, aad)

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        try:
            return self._vault().decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except (InvalidTag, ValueError):
            raise KeyStoreError("an encrypted card number failed its integrity check") from None

    # ---- the rest ----

    def status(self) -> KeyStatus:
        problem: tuple[str, ...] = ()
        try:
            tmk_cv: str | None = check_value(self._load_tmk()).hex().upper()
        except KeyStoreError as exc:
            tmk_cv, problem = None, (str(exc),)
        return KeyStatus(kind="memory", where=f"development key files in {self.keys_dir}",
                         tmk_check=tmk_cv, vault_key=(self.keys_dir / VAULT_FILE).exists(),
                         working_keys=tuple(r for r in WORKING_KEY_ROLES if r in self._working),
                         notes=(*problem, "development store: keys are in clear in files and "
                                "memory; sim and dev boards only"))

    def destroy_all(self) -> list[str]:
        done = []
        self._tmk, self._working, self._ciphers, self._aead = None, {}, {}, None
        for name, words in ((TMK_FILE, "terminal master key"), (VAULT_FILE, "card-data key")):
            path = self.keys_dir / name
            if path.exists():
                _overwrite(path)  # zeros on the disk first: an unlinked file's blocks keep its bytes
                path.unlink()
                done.append(f"{words} (file keys/{name})")
        return done

    def close(self) -> None:
        self._tmk, self._working, self._ciphers, self._aead = None, {}, {}, None
