"""The acquirer simulator's issuer side for chip cards: ARQC check, ARPC, issuer scripts.

Owns what a CUP issuer does with field 55 of a 0100/0200: decode it, rebuild the cryptogram
input the card signed (the chip contract: CDOL1 values || AIP || ATC || CVR), verify the ARQC
with the issuer's keys (board.sim.chipcards.issuer_for_pan, board.sim.emvcrypto), and build the
reply's 55: 91 = ARPC || ARC, and on a fault knob a wrong ARPC, a 71 script that blocks the
application or a harmless 72 script (APPLICATION UNBLOCK of an unblocked application).
No I/O and no ledger: acquirer.py books what this decides.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from pyemv import tlv

from . import chipcards, emvcrypto
from .chipcard import IssuerKeys

__all__ = ["CDOL1", "ChipCheck", "IssuerLookup", "card_key", "decode_55", "default_lookup", "reply_55",
           "verify_arqc"]

IssuerLookup = Callable[[str], IssuerKeys | None]

# The test cards' CDOL1 (tag, length): the card signs these values in this order.
CDOL1: Final[tuple[tuple[str, int], ...]] = tuple(emvcrypto.parse_dol(emvcrypto.CDOL1))
# Script ids the simulator's scripts carry (9F18): the card reports them back in DF31.
BLOCK_SCRIPT_ID: Final = bytes.fromhex("00000071")
HARMLESS_SCRIPT_ID: Final = bytes.fromhex("00000072")


@dataclass(frozen=True)
class ChipCheck:
    """What the issuer made of one request's 55. ok=False: `why` says it in words."""

    ok: bool
    why: str
    atc: int | None = None
    arqc: bytes | None = None
    tvr: bytes | None = None
    session_key: bytes | None = None
    smi_key: bytes | None = None

    def __repr__(self) -> str:  # keys stay out of logs
        return f"ChipCheck(ok={self.ok}, why={self.why!r}, atc={self.atc})"


def decode_55(field55: str) -> dict[str, bytes]:
    """Field 55 (hex, as the Message holds it) as {tag: value}; ValueError when malformed."""
    try:
        return tlv.decode(bytes.fromhex(field55), flatten=True)
    except (tlv.DecodeError, ValueError) as exc:
        raise ValueError(f"field 55 is not TLV ({type(exc).__name__})") from None


def card_key(pan: str, psn: str) -> str:
    """What the ledger remembers a card by for ATC replay checks: a hash, never the PAN."""
    return hashlib.sha256(f"{pan}/{psn[-2:]}".encode()).hexdigest()[:32]


def default_lookup(pan: str) -> IssuerKeys | None:
    """The test chip cards' issuer (board.sim.chipcards)."""
    return chipcards.issuer_for_pan(pan)


def verify_arqc(field55: str, pan: str, card_seq: str | None,
                lookup: IssuerLookup = default_lookup) -> ChipCheck:
    """Check the ARQC a 0100/0200 carries (the replay check is the ledger's: acquirer.py)."""
    try:
        tags = decode_55(field55)
    except ValueError as exc:
        return ChipCheck(False, str(exc))
    keys = lookup(pan)
    if keys is None:
        return ChipCheck(False, "no issuer keys for this card")
    missing = [t for t in ("9F26", "9F27", "9F36", "82", "9F10") if t not in tags]
    missing += [t for t, _ in CDOL1 if t not in tags and t != "9F03"]
    if missing:
        return ChipCheck(False, f"55 lacks {', '.join(missing)} (the cryptogram's input)")
    atc_bytes, iad = tags["9F36"], tags["9F10"]
    if len(atc_bytes) != 2 or len(iad) < 7:
        return ChipCheck(False, "9F36 or 9F10 has the wrong length")
    cdol = b""
    for tag, length in CDOL1:
        value = tags.get(tag, bytes(length))  # 9F03 other amount: absent means zero
        if len(value) != length:
            return ChipCheck(False, f"{tag} is {len(value)} bytes, CDOL1 says {length}")
        cdol += value
    psn = (card_seq or "00")[-2:]
    atc = int.from_bytes(atc_bytes, "big")
    sk = emvcrypto.session_key(keys.imk_ac, pan, psn, atc)
    expected = emvcrypto.cryptogram(sk, cdol + tags["82"] + atc_bytes + iad[3:7])
    common = {"atc": atc, "arqc": tags["9F26"], "tvr": tags["95"]}
    if tags["9F27"][:1] != b"\x80":
        return ChipCheck(False, f"9F27 {tags['9F27'].hex()} is not an ARQC", **common)
    if not secrets.compare_digest(expected, tags["9F26"]):
        return ChipCheck(False, "ARQC does not verify", **common)
    smi = emvcrypto.smi_session_key(keys.imk_smi, pan, psn, atc)
    return ChipCheck(True, "ARQC verified", session_key=sk, smi_key=smi, **common)


def reply_55(check: ChipCheck, code: str, *, wrong_arpc: bool = False,
             block_script: bool = False, harmless_script: bool = False) -> str:
    """The reply's 55 (hex) for a verified ARQC: 91 = ARPC || ARC (ARC = field 39's two ASCII
    bytes), then a 71 and/or 72 script on the knobs. `wrong_arpc` flips one ARPC bit."""
    assert check.ok and check.session_key and check.smi_key and check.arqc is not None
    arc = code.encode("ascii")
    arpc = emvcrypto.arpc(check.session_key, check.arqc, arc)
    if wrong_arpc:
        arpc = bytes([arpc[0] ^ 0x01]) + arpc[1:]
    out = tlv.encode({"91": arpc + arc})
    atc = check.atc or 0
    if block_script:
        command = emvcrypto.script_command("block", check.smi_key, atc, check.arqc)
        out += tlv.encode({"71": {"9F18": BLOCK_SCRIPT_ID, "86": command}})
    if harmless_script:
        command = emvcrypto.script_command("unblock", check.smi_key, atc, check.arqc)
        out += tlv.encode({"72": {"9F18": HARMLESS_SCRIPT_ID, "86": command}})
    return out.hex().upper()
