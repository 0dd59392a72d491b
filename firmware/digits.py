"""What "a number" means wherever one is typed, received or read back: ASCII 0-9 only.

is_digits(str) and int() also take Arabic-Indic, full-width and other Unicode digits;
those would reach the wire builder, a password hash or a journal counter and be
refused (or mean something else) far from where they came in. Every check of digits
in the firmware goes through here.
"""

from __future__ import annotations

from typing import Final

ASCII_DIGITS: Final = frozenset("0123456789")


def is_digits(value: object, min_len: int = 1, max_len: int | None = None) -> bool:
    """True for a str of ASCII digits whose length is min_len..max_len (max_len=None: no cap)."""
    if not isinstance(value, str) or len(value) < min_len:
        return False
    if max_len is not None and len(value) > max_len:
        return False
    return all(ch in ASCII_DIGITS for ch in value)
