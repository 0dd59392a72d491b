"""The chip's record of a transaction as the journal keeps it (txn.chip_tags: hex TLV) and as the
slip, the till and the review read it.

Only the tags in KEPT_TAGS are ever written: none is sensitive (no 57 track 2 equivalent, no 5A
PAN, no 5F20 cardholder name). Encoding and decoding are pyemv.tlv's (imported at the first
record that has chip tags: firmware/emv/tlv.py pyemv_tlv).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from firmware.emv.field55 import NEVER_SENT
from firmware.emv.tlv import pyemv_tlv

# What the journal keeps of a chip transaction, in this order: the application (AID, label,
# preferred name), the cryptogram and its type, the verification results (TVR, TSI, CVM
# results), the counter, the issuer application data, the IFD serial number, the card
# sequence number, the unpredictable number and the script results. The reversal's and the
# script advice's field 55 are built from these (firmware/emv/field55.py).
KEPT_TAGS: tuple[str, ...] = (
    "4F", "84", "50", "9F12", "9F26", "9F27", "95", "9B", "9F34", "9F36", "9F10", "9F1E",
    "5F34", "9F37", "DF31", "9F33", "9F1A", "9A", "82", "9F02", "5F2A", "9C",
)

# 9F27 bits 8-7: what the card's cryptogram says (EMV Book 3, C5).
CRYPTOGRAM_NAMES = {0x00: "AAC", 0x40: "TC", 0x80: "ARQC"}


def receipt_tags_hex(tags: Mapping[str, bytes]) -> str:
    """The kept tags found in `tags` (a kernel's tag store: tag name -> value), as hex TLV."""
    kept = {tag: tags[tag] for tag in KEPT_TAGS if tag in tags and tag not in NEVER_SENT}
    return pyemv_tlv().encode(kept).hex().upper() if kept else ""


def decode_kept(chip_tags: str | None) -> dict[str, bytes]:
    """A journal's chip_tags back into tag -> value ({} for none or an unreadable value)."""
    if not chip_tags:
        return {}
    tlv = pyemv_tlv()
    try:
        decoded = tlv.decode(bytes.fromhex(chip_tags), simple=True)
    except (ValueError, tlv.DecodeError):
        return {}
    return {tag: value for tag, value in decoded.items() if isinstance(value, bytes)}


@dataclass(frozen=True)
class ChipSummary:
    """What a CUP chip slip prints (and the till's result carries): the application and the
    card's cryptogram with its verification results. Hex strings, uppercase."""

    aid: str
    label: str
    cryptogram_name: str  # "TC", "ARQC", "AAC" or "" when the card gave none
    cryptogram: str
    tvr: str
    tsi: str
    atc: str


def summary(chip_tags: str | None) -> ChipSummary | None:
    """The slip's chip lines from a journal record's chip_tags (None: not a chip transaction)."""
    tags = decode_kept(chip_tags)
    if not tags:
        return None
    aid = (tags.get("4F") or tags.get("84") or b"").hex().upper()
    # 50, the application label, is ASCII by definition (EMV Book 1, 4.3); 9F12, the preferred
    # name, is in the issuer's code table (GBK on CUP cards) and only stands in for a missing 50.
    label = tags.get("50", b"").decode("ascii", errors="replace").strip()
    if not label and "9F12" in tags:
        label = tags["9F12"].decode("gbk", errors="replace").strip()
    cid = tags.get("9F27", b"")
    name = CRYPTOGRAM_NAMES.get(cid[0] & 0xC0, "") if cid else ""
    return ChipSummary(aid=aid, label=label, cryptogram_name=name,
                       cryptogram=tags.get("9F26", b"").hex().upper(),
                       tvr=tags.get("95", b"").hex().upper(), tsi=tags.get("9B", b"").hex().upper(),
                       atc=tags.get("9F36", b"").hex().upper())
