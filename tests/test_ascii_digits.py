"""Only ASCII 0-9 count as digits, wherever a number is typed, received or read back.

str.isdigit() also accepts Arabic-Indic (٠١٢), full-width (０１２) and superscript digits;
each of the places below took them before firmware/digits.py (issue 12, item 16).
"""

from __future__ import annotations

import pytest

from firmware.digits import is_digits
from firmware.ecr.protocol import EcrError, parse_request
from firmware.engine.cardclass import luhn_ok
from firmware.engine.tracks import CardProblem, parse_track2
from firmware.ui.entry import valid_mmdd

ARABIC_INDIC = "٠١٢٣٤٥٦٧٨٩"
FULL_WIDTH = "０１２３４５６７８９"
NOT_ASCII = [ARABIC_INDIC[:6], FULL_WIDTH[:6], "12³456", "１2３4５6"]


def to_unicode(ascii_digits: str, table: str) -> str:
    return "".join(table[int(c)] for c in ascii_digits)


@pytest.mark.parametrize("value", NOT_ASCII)
def test_is_digits_refuses_other_scripts(value: str) -> None:
    assert value.isdigit() or value.isnumeric()  # what the old checks let through
    assert not is_digits(value)


@pytest.mark.parametrize(("value", "lo", "hi", "ok"), [
    ("0", 1, None, True), ("", 1, None, False), ("", 0, None, True), ("123456", 6, 6, True),
    ("12345", 6, 6, False), ("1234567", 6, 6, False), ("12a4", 1, None, False),
    (" 123", 1, None, False), ("-12", 1, None, False), (123, 1, None, False), (None, 1, None, False),
])
def test_is_digits_lengths_and_types(value: object, lo: int, hi: int | None, ok: bool) -> None:
    assert is_digits(value, lo, hi) is ok


@pytest.mark.parametrize("table", [ARABIC_INDIC, FULL_WIDTH])
@pytest.mark.parametrize(("name", "value", "op", "extra"), [
    ("voucher", "000012", "void", {"password": "246810"}),
    ("orig_voucher", "000012", "refund", {"amount": 1, "orig_rrn": "000000000001",
                                        "orig_date": "1201", "password": "246810"}),
    ("orig_batch", "000001", "refund", {"amount": 1, "orig_rrn": "000000000001",
                                        "orig_date": "1201", "password": "246810"}),
    ("orig_date", "1201", "refund", {"amount": 1, "orig_rrn": "000000000001", "password": "246810"}),
    ("batch", "000001", "lookup", {"voucher": "000001"}),
])
def test_ecr_number_fields_refuse_unicode_digits(table: str, name: str, value: str, op: str,
                                                  extra: dict[str, object]) -> None:
    import json

    good = {"op": op, **extra, name: value}
    parse_request(json.dumps(good).encode())  # the ASCII form is fine
    bad = {**good, name: to_unicode(value, table)}
    with pytest.raises(EcrError, match=name):
        parse_request(json.dumps(bad, ensure_ascii=False).encode())


@pytest.mark.parametrize("table", [ARABIC_INDIC, FULL_WIDTH])
def test_dates_cards_and_tracks_refuse_unicode_digits(table: str) -> None:
    assert valid_mmdd("1201")
    assert not valid_mmdd(to_unicode("1201", table))
    pan = "6222021234567890128"
    assert luhn_ok(pan)
    assert not luhn_ok(to_unicode(pan, table))
    parse_track2(f"{pan}=3012101")
    with pytest.raises(CardProblem):
        parse_track2(f"{to_unicode(pan, table)}=3012101")
