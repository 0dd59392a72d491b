"""Card classification shared by the terminal and the acquirer simulator.

Settlement totals are split into domestic and foreign cards (field 48 of the
0500), so both sides must classify a PAN the same way: UnionPay BINs (62, and
the legacy 9-prefixed domestic debit range) are domestic, everything else is
foreign.
"""

from __future__ import annotations

from firmware.digits import is_digits

DOMESTIC_PREFIXES: tuple[str, ...] = ("62", "9")


def is_foreign(pan: str) -> bool:
    """True when the card settles on the foreign side of the batch totals."""
    return not pan.startswith(DOMESTIC_PREFIXES)


def luhn_ok(pan: str) -> bool:
    """The Luhn (mod 10) check every PAN must pass before it goes online."""
    if not is_digits(pan) or not 12 <= len(pan) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(pan)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0
