"""The test card list shared by the tests, `make run` and the simulated card source.

Owns the cards (PAN, expiry, service code, PIN, card organisation, balance) and
their track images; the acquirer simulator decides approvals from the same list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "BLOCKED_PANS",
    "TEST_CARDS",
    "TestCard",
    "card_by_pan",
    "mask",
    "org_for_pan",
]

# Track 2 holds at most 37 characters; the discretionary data fills what the
# PAN, separator, expiry and service code leave, so every card's track is full
# length, like a real one.
_TRACK2_MAX: Final = 37
# Track 1 discretionary data: a fixed, obviously fake PVKI/PVV/CVV pattern.
_TRACK1_DISCRETIONARY: Final = "0000000000000"


def mask(pan: str) -> str:
    """First 6 and last 4 digits, the rest as '*' (what logs and receipts show)."""
    if len(pan) <= 10:
        return "*" * len(pan)
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def org_for_pan(pan: str) -> str:
    """Card organisation code for field 63 of a reply, from the BIN.

    Used for cards that are not in TEST_CARDS; listed cards carry their own.
    """
    if pan.startswith(("62", "9")):
        return "CUP"
    if pan.startswith("4"):
        return "VIS"
    if pan[:2] in {"51", "52", "53", "54", "55"} or "2221" <= pan[:4] <= "2720":
        return "MCC"
    if pan.startswith("35"):
        return "JCB"
    if pan.startswith(("34", "37")):
        return "AEX"
    return "000"


@dataclass(frozen=True, repr=False)
class TestCard:
    """One test card. Money is in fen; expiry is YYMM; pin None = no PIN needed."""

    # Not a pytest test class, despite the name.
    __test__ = False

    name: str
    pan: str
    expiry: str
    service_code: str
    pin: str | None
    org: str
    balance: int

    @property
    def track2(self) -> str:
        """Track 2 without sentinels or LRC: 'PAN=YYMMSSS' + discretionary digits.

        '=' is the field separator as the application sees it; the wire spec
        (firmware.host.spec) turns it into nibble D.
        """
        head = f"{self.pan}={self.expiry}{self.service_code}"
        return head + "0" * (_TRACK2_MAX - len(head))

    @property
    def track1(self) -> str:
        """Track 1 without sentinels: 'B' PAN '^' NAME/TEST '^' YYMM SSS discretionary."""
        return (f"B{self.pan}^{self.holder}^{self.expiry}{self.service_code}"
                f"{_TRACK1_DISCRETIONARY}")

    @property
    def track1_framed(self) -> str:
        """Track 1 as a magstripe reader outputs it: with the '%' and '?' sentinels."""
        return f"%{self.track1}?"

    @property
    def holder(self) -> str:
        """Cardholder name as embossed: SURNAME/GIVEN."""
        return f"{self.name.upper().replace('_', ' ')}/TEST"

    @property
    def masked_pan(self) -> str:
        return mask(self.pan)

    @property
    def is_chip(self) -> bool:
        """Service code 2xx or 6xx: the card has a chip and must be inserted."""
        return self.service_code[:1] in {"2", "6"}

    def __repr__(self) -> str:
        # The PAN never appears in clear in a repr (it ends up in logs and test output).
        return (f"TestCard(name={self.name!r}, pan={self.masked_pan!r}, "
                f"expiry={self.expiry!r}, service_code={self.service_code!r}, "
                f"pin={'set' if self.pin else None!r}, org={self.org!r}, "
                f"balance={self.balance})")

    __str__ = __repr__


_FAR_FUTURE: Final = "3012"

TEST_CARDS: Final[dict[str, TestCard]] = {
    card.name: card
    for card in (
        # UnionPay debit, magstripe, online PIN 123456 (service code digit 3 = 0: PIN required).
        TestCard("cup_debit", "6222021000000000017", _FAR_FUTURE, "120", "123456", "CUP",
                 1_000_000_00),
        # UnionPay credit, magstripe, no PIN (signature).
        TestCard("cup_credit", "6225880000000001", _FAR_FUTURE, "101", None, "CUP",
                 50_000_00),
        # UnionPay chip card (service code 2xx: insert the chip), no online PIN.
        TestCard("cup_chip", "6217000000000000129", _FAR_FUTURE, "220", None, "CUP",
                 200_000_00),
        # Foreign cards (settle on the foreign side), no PIN.
        TestCard("visa", "4000000000000002", _FAR_FUTURE, "101", None, "VIS", 30_000_00),
        TestCard("mastercard", "5222220000000005", _FAR_FUTURE, "101", None, "MCC",
                 30_000_00),
        TestCard("jcb", "3566000000000000", _FAR_FUTURE, "101", None, "JCB", 30_000_00),
        # Domestic card on the simulator's decline list: response 14.
        TestCard("blocked", "6222021000000009992", _FAR_FUTURE, "101", None, "CUP",
                 10_000_00),
        # Expired January 2020: response 54.
        TestCard("expired", "6228480033000000001", "2001", "101", None, "CUP", 10_000_00),
        # The only PAN failing the Luhn check: the terminal must refuse it locally
        # (the simulator answers 14 should it ever arrive).
        TestCard("bad_luhn", "6222021000000000554", _FAR_FUTURE, "101", None, "CUP",
                 10_000_00),
    )
}

_BY_PAN: Final[dict[str, TestCard]] = {card.pan: card for card in TEST_CARDS.values()}

# PANs the simulator declines with 14 (invalid card number) whatever the request.
BLOCKED_PANS: Final[frozenset[str]] = frozenset({TEST_CARDS["blocked"].pan})


def card_by_pan(pan: str) -> TestCard | None:
    """The test card with this PAN, or None for a PAN not in the list."""
    return _BY_PAN.get(pan)
