"""The CUP field table (firmware.host.spec): exact wire bytes of each field encoding."""

from __future__ import annotations

import iso8583
import pytest

from firmware.host.spec import FIELD_NAMES, SPEC, from_wire, to_wire


def field_bytes(field: str, value: str) -> str:
    """Hex of one field as it follows MTI and bitmap on the wire."""
    body, _ = iso8583.encode({"t": "0800", field: to_wire(field, value)}, SPEC)
    return bytes(body[10:]).hex().upper()


def decode_one(field: str, wire_hex: str) -> str:
    bitmap = bytearray(8)
    n = int(field) - 1
    bitmap[n // 8] |= 0x80 >> (n % 8)
    doc, _ = iso8583.decode(bytes.fromhex("0800") + bytes(bitmap) + bytes.fromhex(wire_hex),
                            SPEC)
    return from_wire(field, doc[field])


VECTORS = [
    # field, value, wire hex (length prefix + data)
    ("2", "6225881234567890", "16" + "6225881234567890"),
    ("2", "6225881234567890123", "19" + "62258812345678901230"),  # odd: trailing pad nibble
    ("3", "000000", "000000"),
    ("3", "310000", "310000"),
    ("4", "000000001234", "000000001234"),
    ("11", "000123", "000123"),
    ("12", "235959", "235959"),
    ("13", "1231", "1231"),
    ("14", "2512", "2512"),
    ("15", "0101", "0101"),
    ("22", "021", "0210"),  # n3 left-justified: trailing 0 nibble
    ("22", "051", "0510"),
    ("22", "072", "0720"),
    ("23", "001", "0001"),  # other fixed odd n: right-justified, pad nibble first
    ("25", "06", "06"),
    ("26", "12", "12"),
    ("32", "12345678901", "11" + "123456789010"),
    ("32", "4800", "04" + "4800"),
    ("35", "6225881234567890=251210", "23" + "6225881234567890D2512100"),  # '=' is nibble D
    ("35", "6225881234567890=2512101", "24" + "6225881234567890D2512101"),
    ("36", "996225881234567890=1561560000", "0029" + "996225881234567890D15615600000"),
    ("37", "123456789012", "313233343536373839303132"),
    ("38", "A1B2C3", "413142324333"),
    ("39", "00", "3030"),
    ("39", "A0", "4130"),
    ("41", "TERM0001", "5445524D30303031"),
    ("42", "123456789012345", "313233343536373839303132333435"),
    ("44", "0001  ", "06" + "303030312020"),
    ("48", "0012", "0004" + "0012"),
    ("48", "0" * 61 + "1", "0062" + "0" * 61 + "1"),
    ("49", "156", "313536"),
    ("52", "0123456789ABCDEF", "0123456789ABCDEF"),
    ("53", "2600000000000000", "2600000000000000"),
    ("54", "1002156C000000012345", "0020" + "31303032313536433030303030303031323334" + "35"),
    ("55", "9F2608AABBCCDDEEFF0011", "0011" + "9F2608AABBCCDDEEFF0011"),  # byte count
    ("60", "22000001000", "0011" + "220000010000"),
    ("60", "2200000100050", "0013" + "22000001000500"),
    ("61", "000001000123", "0012" + "000001000123"),
    ("61", "0000010001231225", "0016" + "0000010001231225"),
    ("62", "AB" * 40, "0040" + "AB" * 40),
    ("63", "01 ", "0003" + "303120"),
    ("63", "CUP", "0003" + "435550"),
    ("64", "4342424231423937", "4342424231423937"),
]


@pytest.mark.parametrize(("field", "value", "wire"), VECTORS)
def test_field_encoding(field: str, value: str, wire: str) -> None:
    assert field_bytes(field, value) == wire.upper()


@pytest.mark.parametrize(("field", "value", "wire"), VECTORS)
def test_field_decoding(field: str, value: str, wire: str) -> None:
    # Binary fields come back as uppercase hex; everything else exactly as sent.
    assert decode_one(field, wire) == (value.upper() if field in ("52", "55", "62", "64")
                                       else value)


def test_binary_fields_decode_as_uppercase_hex() -> None:
    assert field_bytes("55", "9f2608aa") == "0004" + "9F2608AA"
    assert decode_one("55", "0004" + "9F2608AA") == "9F2608AA"


def test_field_63_takes_chinese_text_from_host() -> None:
    # Hosts put the issuer name in GBK after the card organisation code.
    raw = "CUP中国银行".encode("gbk")
    wire = f"{len(raw):04d}" + raw.hex()
    assert decode_one("63", wire) == "CUP中国银行"


def test_mti_and_bitmap_are_binary() -> None:
    body, _ = iso8583.encode({"t": "0200", "3": "000000", "64": "00" * 8}, SPEC)
    assert bytes(body[:10]).hex().upper() == "0200" + "2000000000000001"


def test_no_secondary_bitmap_in_spec() -> None:
    assert "1" not in SPEC
    assert all(1 < int(k) <= 64 for k in SPEC if k.isdigit())


@pytest.mark.parametrize("field", ["2", "3", "4", "11", "12", "13", "14", "15", "22", "23",
                                   "25", "26", "32", "35", "36", "37", "38", "39", "41", "42",
                                   "44", "48", "49", "52", "53", "54", "55", "60", "61", "62",
                                   "63", "64"])
def test_required_fields_present_and_named(field: str) -> None:
    assert field in SPEC
    assert FIELD_NAMES[field]


@pytest.mark.parametrize(("field", "max_len", "len_type"), [
    ("2", 19, 1), ("32", 11, 1), ("35", 37, 1), ("36", 104, 2), ("44", 25, 1),
    ("48", 322, 2), ("54", 20, 2), ("55", 255, 2), ("60", 17, 2), ("61", 29, 2),
    ("62", 512, 2), ("63", 163, 2), ("37", 12, 0), ("38", 6, 0), ("39", 2, 0), ("41", 8, 0),
    ("42", 15, 0), ("49", 3, 0), ("53", 16, 0), ("23", 3, 0), ("52", 8, 0), ("64", 8, 0),
])
def test_cup_sizes(field: str, max_len: int, len_type: int) -> None:
    assert SPEC[field]["max_len"] == max_len
    assert SPEC[field]["len_type"] == len_type


@pytest.mark.parametrize(("field", "value"), [
    ("4", "00000000123A"), ("11", "12345 "), ("2", "6225-88"), ("35", "6225881234567890D2512"),
    ("35", "6225?"), ("52", "012"), ("55", "XYZ0"),
])
def test_to_wire_rejects(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        to_wire(field, value)


@pytest.mark.parametrize(("field", "value"), [("4", "00000000123A"), ("35", "1234=5"),
                                              ("2", "62258F")])
def test_from_wire_rejects(field: str, value: str) -> None:
    with pytest.raises(ValueError):
        from_wire(field, value)
