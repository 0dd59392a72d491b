"""Magstripe track parsing: ISO 7813 track 1 and track 2 into a CardRead, or a CardProblem.

Pure (no I/O): checks the format, cross-checks track 1 against track 2, the PAN's
Luhn digit, the expiry against a given date and the chip service code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date

from firmware.digits import is_digits
from firmware.engine.cardclass import luhn_ok
from firmware.engine.model import CardRead
from firmware.ports import MagstripeRead

__all__ = ["CardProblem", "Track1", "Track2", "card_from_swipe", "parse_track1", "parse_track2"]

# Data characters without sentinels and LRC (ISO 7813: 79 and 40 with them).
TRACK1_MAX = 76
TRACK2_MAX = 37
NAME_MIN, NAME_MAX = 2, 26

# Track 2: PAN '=' YYMM SSS discretionary digits. re.ASCII: \d is 0-9 only (firmware/digits.py).
_TRACK2 = re.compile(r"(?P<pan>\d{12,19})=(?P<expiry>\d{4})(?P<service>\d{3})(?P<disc>\d*)", re.ASCII)
# Track 1, format code B: 'B' PAN '^' NAME '^' YYMM SSS discretionary.
_TRACK1 = re.compile(r"B(?P<pan>\d{12,19})\^(?P<name>[^^]*)\^(?P<expiry>\d{4})(?P<service>\d{3})"
                     r"(?P<disc>[\x20-\x5d\x5f]*)", re.ASCII)
_NAME_CHARS = re.compile(r"[A-Z0-9 /.\-']*")


class CardProblem(Exception):
    """A swipe that cannot be used. key is an i18n catalog key; detail is words for the log.

    Neither ever holds track data or a full PAN.
    """

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"{key}: {detail}")
        self.key = key
        self.detail = detail


@dataclass(frozen=True)
class Track2:
    pan: str = field(repr=False)
    expiry: str  # YYMM
    service_code: str


@dataclass(frozen=True)
class Track1:
    pan: str = field(repr=False)
    name: str = field(repr=False)
    expiry: str
    service_code: str


def parse_track2(track: str) -> Track2:
    """Track 2 without sentinels; CardProblem("card_unreadable") if it is not PAN=YYMMSSS..."""
    if len(track) > TRACK2_MAX:
        raise CardProblem("card_unreadable", f"track 2 has {len(track)} characters; at most {TRACK2_MAX}")
    match = _TRACK2.fullmatch(track)
    if match is None:
        raise CardProblem("card_unreadable", _track2_fault(track))
    return Track2(match["pan"], match["expiry"], match["service"])


def _track2_fault(track: str) -> str:
    """Says what is wrong with a track 2 without quoting any of it."""
    if "=" not in track:
        return f"track 2 ({len(track)} characters) has no '=' separator"
    pan, _, rest = track.partition("=")
    if not is_digits(pan) or not 12 <= len(pan) <= 19:
        return f"track 2's card number is {len(pan)} characters, not 12..19 digits"
    if len(rest) < 7:
        return (f"track 2 ends {len(rest)} characters after the separator "
                "(truncated: YYMM and the service code need 7)")
    return "track 2 has characters other than digits after the separator"


def parse_track1(track: str) -> Track1:
    """Track 1 (format B) without sentinels; CardProblem("card_unreadable") if malformed."""
    if len(track) > TRACK1_MAX:
        raise CardProblem("card_unreadable", f"track 1 has {len(track)} characters; at most {TRACK1_MAX}")
    match = _TRACK1.fullmatch(track)
    if match is None:
        raise CardProblem("card_unreadable", _track1_fault(track))
    name = match["name"]
    if not NAME_MIN <= len(name) <= NAME_MAX or not _NAME_CHARS.fullmatch(name):
        raise CardProblem("card_unreadable",
                          f"track 1's name field is {len(name)} characters or holds characters a name cannot")
    return Track1(match["pan"], name, match["expiry"], match["service"])


def _track1_fault(track: str) -> str:
    if not track.startswith("B"):
        return "track 1 does not start with format code B"
    fields = track[1:].split("^")
    if len(fields) < 3:
        return f"track 1 has {len(fields) - 1} '^' separators, not 2 (truncated?)"
    pan, _name, rest = fields[0], fields[1], "^".join(fields[2:])
    if not is_digits(pan) or not 12 <= len(pan) <= 19:
        return f"track 1's card number is {len(pan)} characters, not 12..19 digits"
    if len(rest) < 7 or not is_digits(rest[:7]):
        return "track 1's expiry and service code are missing or not digits (truncated?)"
    return "track 1 has characters outside its character set"


def card_from_swipe(read: MagstripeRead, *, today: date, allow_fallback: bool) -> CardRead:
    """The card a swipe carries, checked; raises CardProblem with an i18n key.

    Track 2 is required (it is what goes online); track 1, when present, must agree
    with it. A chip card (service code 2xx/6xx) is refused with "insert_chip" unless
    fallback is allowed, when entry_mode becomes "fallback".
    """
    if not read.track2:
        if read.track1:
            raise CardProblem("card_unreadable", "track 2 was not read (track 1 alone cannot go online)")
        raise CardProblem("card_unreadable", "neither track 1 nor track 2 was read")
    t2 = parse_track2(read.track2)
    if read.track1:
        t1 = parse_track1(read.track1)
        differing = [name for name, a, b in (("card number", t1.pan, t2.pan),
                                             ("expiry", t1.expiry, t2.expiry),
                                             ("service code", t1.service_code, t2.service_code))
                     if a != b]
        if differing:
            raise CardProblem("track_mismatch", f"track 1 and track 2 differ in {', '.join(differing)}")
    if not luhn_ok(t2.pan):
        raise CardProblem("card_invalid", "the card number fails its check digit")
    month = int(t2.expiry[2:])
    if not 1 <= month <= 12:
        raise CardProblem("card_invalid", f"the expiry month {month:02d} is not 01..12")
    today_yymm = f"{today.year % 100:02d}{today.month:02d}"
    if t2.expiry < today_yymm:
        # A card is good through the last day of its expiry month.
        raise CardProblem("card_expired", f"the card expired (YYMM {t2.expiry})")
    entry_mode = "swipe"
    if t2.service_code[0] in "26":
        if not allow_fallback:
            raise CardProblem("insert_chip", "this is a chip card (service code 2xx/6xx): insert it")
        entry_mode = "fallback"
    return CardRead(entry_mode=entry_mode, pan=t2.pan, expiry=t2.expiry, service_code=t2.service_code,
                    track2=read.track2, track3=read.track3)
