"""Field 55 (ICC system related data) per message type, in the CUP tag order, and the tags a
chip receipt prints (the CUP dialect lists, as open CUP terminal code uses them).

Only tags present are sent, each once, in the listed order. Tags 57 (track 2 equivalent), 5A
(PAN) and 5F20 (cardholder name) are never put in field 55, whatever the caller passes.
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
# what a CUP chip slip prints, tag -> the slip's label, in print order
RECEIPT_TAGS: dict[str, str] = {
    "50": "APP LABEL", "9F12": "APP NAME", "84": "AID", "9F26": "AC", "9F27": "CID",
    "95": "TVR", "9B": "TSI", "9F36": "ATC", "9F37": "UNPR NUM", "82": "AIP", "9F33": "TERM CAP",
    "9F10": "IAD",
}
NEVER_SENT: frozenset[str] = frozenset({"57", "5A", "5F20"})


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
