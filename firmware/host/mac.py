"""The MACs that fill field 64: the dialect's CUP "ECB" MAC (domain doc section 6) and the
stronger X9.19 retail MAC (ISO 9797-1 algorithm 3, padding method 1, double-length MAK) an
acquirer may ask for instead (setting comms.mac_algorithm; docs/dialect.md, "MAC strength").

Two forms of each, computing the same 8 bytes:
- over a key store (`store_mac`): the terminal's. The MAK never leaves the store; the only thing
  asked of it is `HostKeys.mac_cipher` (DES/TDES, ECB or CBC from a zero IV) over data that is
  not key material, and the XORs and hex steps around it are done here;
- over a clear MAK (`clear_mac`): the acquirer simulator's, which holds its keys in clear because
  it is the acquirer. The MAC function clear_mac returns builds its DES/TDES ciphers once, when
  it is made, not at every message.
The codec decides what goes in (the MAC block: MTI up to the byte before field 64); this module
only computes the 8 bytes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from firmware.ports import HostKeys

from .errors import LocalProtocolError
from .keys import expand_key

__all__ = [
    "DEFAULT_MAC_ALGORITHM",
    "MAC_ALGORITHMS",
    "MAC_LEN",
    "AsyncMacFunction",
    "MacFunction",
    "clear_mac",
    "cup_ecb_mac",
    "store_mac",
    "x9_19_mac",
]

MAC_LEN: Final = 8
# "cup_ecb": the dialect's own (XOR of every block, then DES twice: forgeable by changing two
# blocks consistently, docs/dialect.md "MAC strength"); "x9_19": ISO 9797-1 algorithm 3.
MAC_ALGORITHMS: Final = ("cup_ecb", "x9_19")
DEFAULT_MAC_ALGORITHM: Final = "cup_ecb"

MacFunction = Callable[[bytes], bytes]  # MAC block -> field 64 (clear keys: the simulator)
AsyncMacFunction = Callable[[bytes], Awaitable[bytes]]  # the same through a key store

_ZERO_IV: Final = b"\x00" * 8


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in MAC_ALGORITHMS:
        raise LocalProtocolError(f"MAC algorithm must be one of {', '.join(MAC_ALGORITHMS)}, "
                                 f"got {algorithm!r}")


# ---- the steps both forms share -----------------------------------------------------------

def _cup_fold(data: bytes) -> bytes:
    """Steps 1 and 2 of the CUP MAC: zero-pad to a block multiple (no extra block when already
    aligned), XOR every block, expand the 8 bytes to 16 uppercase hex characters."""
    # The fold is done on 64-bit integers: a byte-by-byte generator costs ~4x more per message,
    # and the MAC runs twice on every sale.
    padded = bytes(data) + b"\x00" * (-len(data) % 8)
    acc = 0
    for i in range(0, len(padded), 8):
        acc ^= int.from_bytes(padded[i:i + 8], "big")
    return acc.to_bytes(8, "big").hex().upper().encode("ascii")


def _cup_finish(second: bytes) -> bytes:
    """Step 5: expand the last DES result to hex; its first 8 characters are the MAC."""
    return second.hex().upper().encode("ascii")[:MAC_LEN]


def _x9_19_blocks(data: bytes) -> tuple[bytes, bytes]:
    """ISO 9797-1 padding method 1 (zeros to a block multiple; an empty input is one zero
    block), split into (all blocks but the last, the last block)."""
    padded = bytes(data) + b"\x00" * (-len(data) % 8)
    if not padded:
        padded = b"\x00" * 8
    return padded[:-8], padded[-8:]


# ---- clear keys (the acquirer simulator) --------------------------------------------------

def _check_mak(mak: bytes, double: bool) -> None:
    sizes = (16,) if double else (8, 16)
    if len(mak) not in sizes:
        raise LocalProtocolError(f"MAC key must be {' or '.join(map(str, sizes))} bytes, "
                                 f"got {len(mak)}")


def cup_ecb_mac(mak: bytes, data: bytes) -> bytes:
    """The CUP ECB MAC of `data` under the clear MAC key `mak` (8 or 16 bytes).

    Single DES with the MAK's first 8 bytes: the double-length MAK of a 40-byte sign-on field
    62 is used for its left half only in this dialect. Steps 3 and 4 (encrypt the first 8
    characters, XOR the last 8, encrypt again) are one CBC pass over the 16 characters.
    """
    return clear_mac(mak, "cup_ecb")(data)


def x9_19_mac(mak: bytes, data: bytes) -> bytes:
    """The X9.19 retail MAC of `data` under the clear double-length MAK (K1 = first half,
    K2 = second half): CBC single DES under K1 over every block but the last, then TDES
    (K1, K2, K1) of that chaining value XOR the last block, which is the same as ending the
    CBC pass with decrypt-K2 / encrypt-K1 of the last block."""
    return clear_mac(mak, "x9_19")(data)


def clear_mac(mak: bytes, algorithm: str = DEFAULT_MAC_ALGORITHM) -> MacFunction:
    """The MAC function of `algorithm` under a clear MAK (simulator and tests). Its ciphers are
    built here, once: a host that keeps the function for a session MACs every message with it."""
    # cryptography is needed only where the MAK is in this process (a simulator, the tests, the
    # development key store): a terminal whose key store MACs leaves it out of its idle memory.
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    _check_algorithm(algorithm)
    _check_mak(mak, double=algorithm == "x9_19")
    # Single DES under K1 (TDES with K1 three times), CBC from a zero IV: both algorithms chain
    # with it. Each MAC takes a fresh encryptor, so no chaining state outlives one message.
    k1_cbc = Cipher(TripleDES(expand_key(mak[:8])), modes.CBC(_ZERO_IV))
    if algorithm == "cup_ecb":
        def cup_ecb(data: bytes) -> bytes:
            return _cup_finish(k1_cbc.encryptor().update(_cup_fold(data))[8:])
        return cup_ecb

    full_ecb = Cipher(TripleDES(expand_key(mak)), modes.ECB())

    def x9_19(data: bytes) -> bytes:
        head, last = _x9_19_blocks(data)
        chain = k1_cbc.encryptor().update(head)[-8:] if head else _ZERO_IV
        return full_ecb.encryptor().update(_xor(chain, last))
    return x9_19


# ---- a key store (the terminal) -----------------------------------------------------------

async def _cup_ecb_in(keys: HostKeys, data: bytes) -> bytes:
    chained = await keys.mac_cipher(_cup_fold(data), double=False, chain=True)
    return _cup_finish(chained[8:])


async def _x9_19_in(keys: HostKeys, data: bytes) -> bytes:
    head, last = _x9_19_blocks(data)
    chain = _ZERO_IV
    if head:
        # The chaining value is a ciphertext, not key material: XORing it here is what every
        # token-based retail MAC does (PKCS#11 has no ISO 9797-1 algorithm 3 mechanism).
        chain = (await keys.mac_cipher(head, double=False, chain=True))[-8:]
    return await keys.mac_cipher(_xor(chain, last), double=True, chain=False)


def store_mac(keys: HostKeys, algorithm: str = DEFAULT_MAC_ALGORITHM) -> AsyncMacFunction:
    """The MAC function of `algorithm` computed through the key store's MAK."""
    _check_algorithm(algorithm)
    compute = _cup_ecb_in if algorithm == "cup_ecb" else _x9_19_in

    async def mac(data: bytes) -> bytes:
        return await compute(keys, bytes(data))

    return mac
