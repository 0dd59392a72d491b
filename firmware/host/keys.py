"""Working keys on the wire: sign-on field 62 (PIK, MAK, optional TDK under the master key)
and its check-value conventions.

The terminal's side: signon_entries() turns field 62 into WrappedKey entries for its key store
(firmware/ports.py HostKeys), which decrypts and checks them where the TMK lives;
key_check_error() words a refusal. The acquirer's side (the simulator holds clear keys because
it is the acquirer) and the tests: build_signon_keys / parse_signon_keys over a clear TMK, the
PIN block helpers. Nothing here logs or stores key bytes or PINs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

from firmware.ports import KeyCheckFailed, WrappedKey

from .errors import HostError, KeyCheckError, LocalProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAK_CHECK",
    "MAK_CHECK_CONVENTIONS",
    "WorkingKeys",
    "build_signon_keys",
    "check_value",
    "decrypt_pin",
    "encrypt_pin_block",
    "expand_key",
    "generate_working_keys",
    "key_check_error",
    "parse_signon_keys",
    "signon_entries",
]

KEY_LEN: Final = 16  # double-length keys on the wire
CV_LEN: Final = 4
_ENTRY: Final = KEY_LEN + CV_LEN
# (name used in messages, attribute) in wire order.
_ORDER: Final = (("PIN key", "pik"), ("MAC key", "mak"), ("track data key", "tdk"))
# The key store's role names (firmware/ports.py WORKING_KEY_ROLES), in the same order.
_ROLES: Final = {"pik": "PIK", "mak": "MAK", "tdk": "TDK"}
# Over what the MAK's check value is computed (an acquirer setting, docs/dialect.md "Working
# keys"): "first8", the 8 bytes the MAC uses (the open CUP terminal implementations), or
# "full16", the whole double-length key like the PIK and TDK.
MAK_CHECK_CONVENTIONS: Final = ("first8", "full16")
DEFAULT_MAK_CHECK: Final = "first8"


def expand_key(key: bytes) -> bytes:
    """The same DES/TDES key in 24-byte form (K, K, K or K1, K2, K1).

    cryptography deprecates 8- and 16-byte TripleDES keys; the 24-byte form
    computes exactly the same cipher and keeps working after that removal.
    """
    key = bytes(key)
    if len(key) == 8:
        return key * 3
    if len(key) == 16:
        return key + key[:8]
    if len(key) == 24:
        return key
    raise LocalProtocolError(f"DES key must be 8, 16 or 24 bytes, got {len(key)}")


def _check_key(name: str, key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) not in (8, 16):
        raise LocalProtocolError(f"{name} must be 8 or 16 bytes")


@dataclass(frozen=True, repr=False)
class WorkingKeys:
    """Clear working keys from the last sign-on (memory only)."""

    pik: bytes
    mak: bytes
    tdk: bytes | None = None

    def __post_init__(self) -> None:
        _check_key("PIN key", self.pik)
        _check_key("MAC key", self.mak)
        if self.tdk is not None:
            _check_key("track data key", self.tdk)

    def __repr__(self) -> str:
        # Check values identify keys without revealing them; never print the bytes.
        tdk = check_value(self.tdk).hex().upper() if self.tdk is not None else None
        return (f"WorkingKeys(pik_cv={check_value(self.pik).hex().upper()}, "
                f"mak_cv={check_value(self.mak).hex().upper()}, tdk_cv={tdk})")

    __str__ = __repr__


def check_value(clear_key: bytes) -> bytes:
    """First 4 bytes of TDES-ECB of 8 zero bytes under the key."""
    # psec loads cryptography: imported by the clear-key helpers only, not at idle.
    from psec.des import encrypt_tdes_ecb

    return encrypt_tdes_ecb(expand_key(clear_key), b"\x00" * 8)[:CV_LEN]


def _entry_check_value(attr: str, key: bytes, mak_check: str) -> bytes:
    """The check value field 62 carries for one key under the MAK convention in force."""
    _check_convention(mak_check)
    if attr == "mak" and mak_check == "first8":
        return check_value(key[:8])  # single DES: the only half the MAC ever uses
    return check_value(key)


def _require_tmk(tmk: bytes) -> None:
    if len(tmk) != KEY_LEN:
        raise LocalProtocolError(f"terminal master key must be {KEY_LEN} bytes, got {len(tmk)}")


def _entries(field62_hex: str) -> list[tuple[str, str, bytes, bytes]]:
    """(name, attribute, wrapped key, check value) of each entry of field 62, in wire order.

    40 bytes: PIK+CV, MAK+CV; 60 bytes: and TDK+CV. Anything else is a RemoteProtocolError.
    """
    try:
        raw = bytes.fromhex(field62_hex)
    except ValueError:
        raise RemoteProtocolError("working keys are not hex", field="62") from None
    if len(raw) not in (2 * _ENTRY, 3 * _ENTRY):
        raise RemoteProtocolError(
            f"working keys are {len(raw)} bytes, expected {2 * _ENTRY} or {3 * _ENTRY}",
            field="62")
    return [(name, attr, raw[i * _ENTRY:i * _ENTRY + KEY_LEN],
             raw[i * _ENTRY + KEY_LEN:(i + 1) * _ENTRY])
            for i, (name, attr) in enumerate(_ORDER[: len(raw) // _ENTRY])]


def _check_convention(mak_check: str) -> None:
    if mak_check not in MAK_CHECK_CONVENTIONS:
        raise LocalProtocolError(f"MAK check convention must be one of "
                                 f"{', '.join(MAK_CHECK_CONVENTIONS)}, got {mak_check!r}")


def signon_entries(field62_hex: str, mak_check: str = DEFAULT_MAK_CHECK) -> list[WrappedKey]:
    """The working keys of a sign-on reply's field 62 as the key store takes them: each still
    encrypted under the TMK, with its check value and, for the MAK, over what that value is
    computed (the acquirer's convention, comms.mak_check). RemoteProtocolError on a wrong
    length or non-hex field."""
    _check_convention(mak_check)
    return [WrappedKey(role=_ROLES[attr], wrapped=wrapped, check_value=cv,
                       check_first8=attr == "mak" and mak_check == "first8")
            for _name, attr, wrapped, cv in _entries(field62_hex)]


def _mismatch(name: str, attr: str, expected: bytes, got: bytes, mak_check: str) -> KeyCheckError:
    hint = "wrong terminal master key?"
    if attr == "mak":
        hint = (f"checked over {'its first 8 bytes' if mak_check == 'first8' else 'all 16 bytes'}"
                f" (setting comms.mak_check = {mak_check}): a wrong terminal master key, "
                "or the acquirer computes it the other way")
    return KeyCheckError(f"{name} check value mismatch: host sent {expected.hex().upper()}, "
                         f"decrypted key gives {got.hex().upper()} ({hint})")


def key_check_error(exc: KeyCheckFailed, mak_check: str = DEFAULT_MAK_CHECK) -> KeyCheckError:
    """The key store's refusal of a working key, in the words the terminal has always used
    (the sign-on's audit line and log; the idle screen shows a catalog text)."""
    attr = {role: attr for attr, role in _ROLES.items()}.get(exc.role, "")
    name = dict((a, n) for n, a in _ORDER).get(attr, f"{exc.role} key")
    return _mismatch(name, attr, exc.expected, exc.got, mak_check)


def parse_signon_keys(field62_hex: str, tmk: bytes,
                      mak_check: str = DEFAULT_MAK_CHECK) -> WorkingKeys:
    """Decrypt and verify the working keys of field 62 under a clear TMK (the simulator's
    testkit and the tests; the terminal's key store does this where its TMK lives).

    A wrong length is a RemoteProtocolError; a check value mismatch a KeyCheckError naming
    the key (and, for the MAK, the convention it was checked under).
    """
    # psec loads cryptography: imported by the clear-key helpers only, not at idle.
    from psec.des import decrypt_tdes_ecb

    _require_tmk(tmk)
    _check_convention(mak_check)
    clear: dict[str, bytes] = {}
    for name, attr, wrapped, expected in _entries(field62_hex):
        key = decrypt_tdes_ecb(expand_key(tmk), wrapped)
        got = _entry_check_value(attr, key, mak_check)
        if got != expected:
            raise _mismatch(name, attr, expected, got, mak_check)
        clear[attr] = key
    return WorkingKeys(**clear)


def build_signon_keys(keys: WorkingKeys, tmk: bytes, mak_check: str = DEFAULT_MAK_CHECK) -> str:
    """Inverse of parse_signon_keys (acquirer simulator side): field 62 as hex."""
    # psec loads cryptography: imported by the clear-key helpers only, not at idle.
    from psec.des import encrypt_tdes_ecb

    _require_tmk(tmk)
    out = bytearray()
    for name, attr in _ORDER:
        key = getattr(keys, attr)
        if key is None:
            continue
        if len(key) != KEY_LEN:
            raise LocalProtocolError(f"{name} must be {KEY_LEN} bytes for field 62")
        out += encrypt_tdes_ecb(expand_key(tmk), key) + _entry_check_value(attr, key, mak_check)
    return out.hex().upper()


def generate_working_keys(with_tdk: bool) -> WorkingKeys:
    """Fresh random double-length keys with odd parity (simulator and tests)."""
    # psec loads cryptography: imported by the clear-key helpers only, not at idle.
    from psec.des import adjust_key_parity

    def one() -> bytes:
        return adjust_key_parity(secrets.token_bytes(KEY_LEN))
    return WorkingKeys(pik=one(), mak=one(), tdk=one() if with_tdk else None)


def encrypt_pin_block(pin: str, pan: str, pik: bytes) -> bytes:
    """ISO 9564 format 0 PIN block (ANSI X9.8, with PAN) encrypted TDES-ECB under the PIK."""
    # psec loads cryptography: imported by the clear-key helpers only, not at idle.
    from psec.des import encrypt_tdes_ecb
    from psec.pinblock import encode_pinblock_iso_0

    try:
        block = encode_pinblock_iso_0(pin, pan)
    except ValueError:
        # psec's message is safe here, but keep ours fixed so no PIN can leak into it.
        raise LocalProtocolError("PIN must be 4-12 digits and the PAN at least 13 digits") \
            from None
    return encrypt_tdes_ecb(expand_key(pik), block)


def decrypt_pin(pin_block: bytes, pan: str, pik: bytes) -> str:
    """Recover the clear PIN (acquirer simulator side). HostError if the block is malformed."""
    # psec loads cryptography: imported by the clear-key helpers only, not at idle.
    from psec.des import decrypt_tdes_ecb
    from psec.pinblock import decode_pinblock_iso_0

    if len(pin_block) != 8:
        raise HostError(f"PIN block must be 8 bytes, got {len(pin_block)}")
    try:
        return decode_pinblock_iso_0(decrypt_tdes_ecb(expand_key(pik), bytes(pin_block)), pan)
    except ValueError:
        # psec's messages quote PIN digits; never pass them on.
        raise HostError("PIN block is malformed (not ISO format 0 for this PAN and key)") \
            from None
