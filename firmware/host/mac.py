"""The CUP "ECB" MAC that fills field 64 (domain doc section 6).

Pure function over the MAC block (MTI up to the byte before field 64); the codec
decides what goes in, this module only computes the 8 bytes.
"""

from __future__ import annotations

from psec.des import encrypt_tdes_ecb

from .errors import LocalProtocolError
from .keys import expand_key

__all__ = ["MAC_LEN", "cup_ecb_mac"]

MAC_LEN = 8


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def cup_ecb_mac(mak: bytes, data: bytes) -> bytes:
    """Return the 8-byte field 64 for `data` under the MAC key `mak` (8 or 16 bytes).

    Single DES with the MAK's first 8 bytes: the double-length MAK of a 40-byte
    sign-on field 62 is used for its left half only in this dialect.
    """
    if len(mak) not in (8, 16):
        raise LocalProtocolError(f"MAC key must be 8 or 16 bytes, got {len(mak)}")
    key = expand_key(mak[:8])  # single DES, as K1=K2=K3
    # 1. zero-pad to a block multiple (no extra block when already aligned) and XOR.
    # The fold is done on 64-bit integers: a byte-by-byte generator costs ~4x more
    # per message, and the MAC runs twice on every sale.
    padded = bytes(data) + b"\x00" * (-len(data) % 8)
    acc = 0
    for i in range(0, len(padded), 8):
        acc ^= int.from_bytes(padded[i:i + 8], "big")
    folded = acc.to_bytes(8, "big")
    # 2. expand to 16 uppercase hex characters.
    expanded = folded.hex().upper().encode("ascii")
    # 3. encrypt the first 8 characters.
    first = encrypt_tdes_ecb(key, expanded[:8])
    # 4. XOR with the last 8 characters and encrypt again.
    second = encrypt_tdes_ecb(key, _xor(first, expanded[8:]))
    # 5. expand again; the first 8 characters are the MAC.
    return second.hex().upper().encode("ascii")[:MAC_LEN]
