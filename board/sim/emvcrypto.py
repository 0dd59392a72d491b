"""The issuer's and the test PKI's EMV cryptography, shared by the test chip cards and the host
simulator (the terminal never holds issuer keys; it only recovers certificates with the CAPK).

Owns: the session keys (EMV Book 2 A1.3.1 common session key, via pyemv), the application
cryptograms (ARQC/TC/AAC), ARPC method 1, the issuer script command MAC, and the building of the
offline data authentication objects of EMV Book 2 sections 5-6 (issuer PK certificate 90/92/9F32,
ICC PK certificate 9F46/9F48/9F47, SSAD 93 and the DDA signature 9F4B), SHA-1, plus their
recovery for the tests' and the simulator's checks.

What is by hand and why: EMV certificates are raw RSA ("recovery" of a message with its
redundancy, no PKCS#1 padding), which `cryptography` does not offer: it loads the PEM keys and
gives the numbers, and the signature itself is `pow(block, d, n)`, the recovery `pow(sig, e, n)`
on Python ints. The block layouts are Book 2 tables 6, 7, 14 and 17.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Final, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pyemv import ac, kd, sm

__all__ = [
    "CDOL1",
    "CDOL2",
    "KEY_DIR",
    "RsaKey",
    "ac_input",
    "arpc",
    "build_icc_cert",
    "build_issuer_cert",
    "build_sdad",
    "build_ssad",
    "capk_check_value",
    "cryptogram",
    "dol_values",
    "load_key",
    "parse_dol",
    "recover",
    "script_command",
    "script_mac",
    "session_key",
    "smi_session_key",
]

KEY_DIR: Final = Path(__file__).resolve().parent / "emvkeys"

# The chip contract's card risk management DOLs (the test cards' 8C and 8D).
CDOL1: Final = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F37049F21039F4E14")
CDOL2: Final = bytes.fromhex("8A029F37049505")

# Cryptogram information data (9F27) for each kind of application cryptogram.
CID: Final[dict[str, int]] = {"AAC": 0x00, "TC": 0x40, "ARQC": 0x80}

# Script commands the test cards accept (EMV Book 3 6.5.x): CLA 84 (secure messaging) INS.
SCRIPT_INS: Final[dict[str, int]] = {"block": 0x1E, "unblock": 0x18}


# --- symmetric: session keys, cryptograms, ARPC, script MAC -------------------------------

def _atc_bytes(atc: int | bytes) -> bytes:
    return atc if isinstance(atc, bytes) else atc.to_bytes(2, "big")


def session_key(imk: bytes, pan: str, psn: str, atc: int | bytes) -> bytes:
    """The AC session key: card master key by option A (`derive_icc_mk_a(IMK, PAN, PSN)`),
    then the EMV common session key with R = ATC || 00*6 (Book 2 A1.3.1).

    psn is 5F34 as two digits ("01"); a three-digit form from field 23 ("001") is accepted."""
    mk = kd.derive_icc_mk_a(imk, pan, psn[-2:])
    return kd.derive_common_sk(mk, _atc_bytes(atc) + bytes(6))


def smi_session_key(imk_smi: bytes, pan: str, psn: str, atc: int | bytes) -> bytes:
    """The secure messaging integrity session key: the same derivation with IMK-SMI."""
    return session_key(imk_smi, pan, psn, atc)


def cryptogram(sk: bytes, data: bytes) -> bytes:
    """ARQC / TC / AAC: the 8-byte MAC of `data` with ISO 9797-1 method 2 (EMV) padding."""
    return ac.generate_ac(sk, data, ac.PaddingType.EMV)


def arpc(sk: bytes, arqc: bytes, arc: bytes) -> bytes:
    """ARPC method 1 (Book 2 8.2.1): ARC is the 2 ASCII bytes of field 39, e.g. b"00"."""
    return ac.generate_arpc_1(sk, arqc, arc)


def script_mac(sk_smi: bytes, header: bytes, atc: int | bytes, arqc: bytes) -> bytes:
    """The 4-byte command MAC of a script command: MAC over header (CLA INS P1 P2 Lc, Lc counting
    the MAC) || ATC || ARQC of the current transaction (Book 2 9.2.1)."""
    return sm.generate_command_mac(sk_smi, header + _atc_bytes(atc) + arqc, length=4)


def script_command(kind: Literal["block", "unblock"], sk_smi: bytes, atc: int | bytes,
                   arqc: bytes) -> bytes:
    """A complete APPLICATION BLOCK / UNBLOCK command APDU with its MAC (what a 71/72 script's
    `86` tag carries)."""
    header = bytes([0x84, SCRIPT_INS[kind], 0x00, 0x00, 0x04])
    return header + script_mac(sk_smi, header, atc, arqc)


def parse_dol(dol: bytes) -> list[tuple[str, int]]:
    """A data object list as (tag hex, length) pairs (EMV Book 3 5.4)."""
    out, i = [], 0
    while i < len(dol):
        size = 1
        if dol[i] & 0x1F == 0x1F:
            while dol[i + size] & 0x80:
                size += 1
            size += 1
        out.append((dol[i:i + size].hex().upper(), dol[i + size]))
        i += size + 1
    return out


def dol_values(dol: bytes, values: Mapping[str, bytes]) -> bytes:
    """The DOL's values concatenated in DOL order; a tag not in `values` is zeros (Book 3 5.4).
    A value of another length than the DOL asks is an error here (the contract's tags have fixed
    lengths; a mismatch means the two sides disagree)."""
    out = b""
    for tag, length in parse_dol(dol):
        value = values.get(tag, bytes(length))
        if len(value) != length:
            raise ValueError(f"tag {tag}: {len(value)} bytes, the DOL asks {length}")
        out += value
    return out


def ac_input(tags: Mapping[str, bytes], dol: bytes = CDOL1) -> bytes:
    """What a cryptogram covers, rebuilt from tags (the host's view of field 55): the DOL's
    values || AIP (82) || ATC (9F36) || CVR (9F10 bytes 3..6)."""
    return dol_values(dol, tags) + tags["82"] + tags["9F36"] + tags["9F10"][3:7]


# --- RSA keys -------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class RsaKey:
    """An RSA key as raw numbers (EMV needs the modulus bytes and raw exponentiation)."""

    n: int
    e: int
    d: int | None = None

    def __repr__(self) -> str:
        # Never print the private exponent.
        return f"RsaKey(bits={self.n.bit_length()}, e={self.e})"

    @property
    def size(self) -> int:
        """The modulus length in bytes (N_CA, N_I, N_IC)."""
        return (self.n.bit_length() + 7) // 8

    @property
    def modulus(self) -> bytes:
        return self.n.to_bytes(self.size, "big")

    @property
    def exponent(self) -> bytes:
        """The public exponent as the shortest big-endian bytes (b"\\x03")."""
        return self.e.to_bytes((self.e.bit_length() + 7) // 8, "big")

    def public(self) -> RsaKey:
        return RsaKey(self.n, self.e)

    def sign(self, block: bytes) -> bytes:
        """Raw RSA with the private exponent: the 'signature' of a block of modulus length."""
        if self.d is None:
            raise ValueError("public key only")
        if len(block) != self.size:
            raise ValueError(f"block is {len(block)} bytes, modulus {self.size}")
        return pow(int.from_bytes(block, "big"), self.d, self.n).to_bytes(self.size, "big")


@cache
def load_key(name: str) -> RsaKey:
    """A TEST ONLY private key from board/sim/emvkeys/<name>.pem."""
    key = serialization.load_pem_private_key((KEY_DIR / f"{name}.pem").read_bytes(), None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{name}: not an RSA key")
    numbers = key.private_numbers()
    return RsaKey(numbers.public_numbers.n, numbers.public_numbers.e, numbers.d)


def recover(signature: bytes, modulus: bytes, exponent: bytes) -> bytes:
    """Raw RSA recovery with a public key: `pow(sig, e, n)` as bytes of modulus length."""
    n = int.from_bytes(modulus, "big")
    e = int.from_bytes(exponent, "big")
    return pow(int.from_bytes(signature, "big"), e, n).to_bytes(len(modulus), "big")


def capk_check_value(rid: bytes, index: int, modulus: bytes, exponent: bytes) -> bytes:
    """The CAPK check value (DF03): SHA-1 over RID || index || modulus || exponent."""
    return hashlib.sha1(rid + bytes([index]) + modulus + exponent).digest()


# --- certificates (EMV Book 2, tables 6, 7, 14, 17) --------------------------------------

def _split_key(modulus: bytes, room: int) -> tuple[bytes, bytes]:
    """The leftmost part of a public key modulus that fits `room` bytes (padded with BB when it
    is shorter) and the remainder (empty when it fits)."""
    if len(modulus) <= room:
        return modulus + b"\xbb" * (room - len(modulus)), b""
    return modulus[:room], modulus[room:]


def _seal(signer: RsaKey, body: bytes, hashed_tail: bytes, *, break_hash: bool = False) -> bytes:
    """'6A' || body || SHA-1(body || hashed_tail) || 'BC', signed by `signer`. break_hash flips a
    bit of the hash (a test card whose certificate must fail)."""
    digest = bytearray(hashlib.sha1(body + hashed_tail).digest())
    if break_hash:
        digest[0] ^= 0x01
    return signer.sign(b"\x6a" + body + bytes(digest) + b"\xbc")


def build_issuer_cert(ca: RsaKey, issuer: RsaKey, issuer_id: bytes, expiry_mmyy: bytes,
                      serial: bytes) -> tuple[bytes, bytes, bytes]:
    """The issuer public key certificate (Book 2 table 6): returns (90, 92 remainder, 9F32).

    issuer_id is the 4-byte leftmost PAN digits padded with F (62 28 48 FF)."""
    leftmost, remainder = _split_key(issuer.modulus, ca.size - 36)
    body = (b"\x02" + issuer_id + expiry_mmyy + serial + b"\x01\x01"
            + bytes([issuer.size, len(issuer.exponent)]) + leftmost)
    return _seal(ca, body, remainder + issuer.exponent), remainder, issuer.exponent


def build_icc_cert(issuer: RsaKey, icc: RsaKey, pan: str, expiry_mmyy: bytes, serial: bytes,
                   static_data: bytes) -> tuple[bytes, bytes, bytes]:
    """The ICC public key certificate (Book 2 table 14): returns (9F46, 9F48 remainder, 9F47).
    The hash covers the static data to be authenticated as well."""
    leftmost, remainder = _split_key(icc.modulus, issuer.size - 42)
    pan_field = bytes.fromhex(pan + "F" * (20 - len(pan)))
    body = (b"\x04" + pan_field + expiry_mmyy + serial + b"\x01\x01"
            + bytes([icc.size, len(icc.exponent)]) + leftmost)
    return _seal(issuer, body, remainder + icc.exponent + static_data), remainder, icc.exponent


def build_ssad(issuer: RsaKey, static_data: bytes, dac: bytes, *,
               break_hash: bool = False) -> bytes:
    """Signed static application data 93 (Book 2 table 7), data authentication code `dac`."""
    body = b"\x03\x01" + dac + b"\xbb" * (issuer.size - 26)
    return _seal(issuer, body, static_data, break_hash=break_hash)


def build_sdad(icc: RsaKey, icc_dynamic_number: bytes, ddol_data: bytes) -> bytes:
    """Signed dynamic application data 9F4B (Book 2 table 17) over the terminal's DDOL data.
    ICC dynamic data = length || ICC dynamic number (2-8 bytes)."""
    dyn = bytes([len(icc_dynamic_number)]) + icc_dynamic_number
    body = b"\x05\x01" + bytes([len(dyn)]) + dyn + b"\xbb" * (icc.size - len(dyn) - 25)
    return _seal(icc, body, ddol_data)
