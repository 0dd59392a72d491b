"""Field 55 (ICC system related data) per message type, in the CUP tag order (the CUP dialect
lists, as open CUP terminal code uses them). What a chip slip prints is record.py's.

Only tags present are sent, each once, in the listed order. The card data of NEVER_SENT (track 2
equivalent, PAN, cardholder name, track data) is never put in field 55, whatever the caller
passes.
"""

from __future__ import annotations

from collections.abc import Mapping

from firmware.emv import tlv

# 0200 / 0100 (sale, pre-authorisation, balance): the CUP list
REQUEST_TAGS: tuple[str, ...] = (
    "9F26", "9F27", "9F10", "9F37", "9F36", "95", "9A", "9C", "9F02", "5F2A", "82", "9F1A",
    "9F03", "9F33", "9F34", "9F35", "9F1E", "84", "9F09", "9F41", "9F63",
)
# 0400: 95, 9F10, 9F1E, DF31, plus 9F36 when the card declined after a host approval
REVERSAL_TAGS: tuple[str, ...] = ("95", "9F10", "9F1E", "DF31")
# the issuer script result advice
SCRIPT_ADVICE_TAGS: tuple[str, ...] = (
    "9F33", "95", "9F37", "9F1E", "9F10", "9F26", "9F36", "82", "DF31", "9F1A", "9A",
)
# Card data that never leaves the kernel: track 2 equivalent (57), PAN (5A), cardholder name
# (5F20), track 1 and its discretionary data (56, 9F1F), track 2 data (9F6B). Field 55 and the
# journal's chip record (record.py) both leave them out.
NEVER_SENT: frozenset[str] = frozenset({"57", "5A", "5F20", "56", "9F1F", "9F6B"})


def _build(tags: Mapping[str, bytes], order: tuple[str, ...]) -> bytes:
    return tlv.encode([(tag, tags[tag]) for tag in order
                       if tag in tags and tag not in NEVER_SENT])


def request_55(tags: Mapping[str, bytes]) -> bytes:
    return _build(tags, REQUEST_TAGS)


def card_declined_after_approval(tags: Mapping[str, bytes]) -> bool:
    """The host approved (ARC 8A "00") and the card's final cryptogram is an AAC."""
    cid = tags.get("9F27", b"\x80")
    return tags.get("8A") == b"00" and bool(cid) and cid[0] & 0xC0 == 0x00


def reversal_55(tags: Mapping[str, bytes], *, card_declined: bool | None = None) -> bytes:
    """card_declined: add 9F36; None works it out from the tags (8A "00" and a final AAC)."""
    if card_declined is None:
        card_declined = card_declined_after_approval(tags)
    return _build(tags, REVERSAL_TAGS + (("9F36",) if card_declined else ()))


def script_advice_55(tags: Mapping[str, bytes]) -> bytes:
    return _build(tags, SCRIPT_ADVICE_TAGS)
