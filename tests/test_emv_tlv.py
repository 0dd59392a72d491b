"""firmware.emv.tlv (BER-TLV on pyemv, DOLs) and firmware.emv.apdu (commands, status words)."""

from __future__ import annotations

import pytest

from firmware.emv import apdu, tlv


def _pse_record() -> bytes:
    e1 = tlv.encode([("4F", bytes.fromhex("A000000333010101")), ("50", b"DEBIT"),
                     ("87", b"\x01")])
    e2 = tlv.encode([("4F", bytes.fromhex("A000000333010102")), ("50", b"CREDIT"),
                     ("87", b"\x02")])
    return tlv.encode_one("70", tlv.encode_one("61", e1) + tlv.encode_one("61", e2))


def test_items_keeps_repeated_templates_in_order() -> None:
    record = _pse_record()
    [(tag, body)] = tlv.items(record)
    entries = [dict(tlv.items(v)) for t, v in tlv.items(body)]
    assert tag == "70" and [e["50"] for e in entries] == [b"DEBIT", b"CREDIT"]
    # pyemv's dict keeps only the last of a repeated tag: why items exists
    assert tlv.decode(record)["50"] == b"CREDIT"


def test_decode_flattens_nested_templates_and_find_searches_them() -> None:
    fci = bytes.fromhex("6F1A840E315041592E5359532E4444463031A5088801015F2D027A68")
    assert tlv.decode(fci) == {"84": b"1PAY.SYS.DDF01", "88": b"\x01", "5F2D": b"zh"}
    assert tlv.find(fci, "88") == b"\x01" and tlv.find(fci, "9F38") is None


def test_long_lengths_and_padding_between_objects() -> None:
    value = bytes(range(200))
    encoded = tlv.encode_one("90", value)
    assert encoded[:3] == bytes.fromhex("9081C8")
    assert tlv.items(b"\x00" + encoded + b"\xff\xff") == [("90", value)]
    big = tlv.encode_one("70", bytes(300))
    assert big[:4] == bytes.fromhex("7082012C") and tlv.items(big) == [("70", bytes(300))]


@pytest.mark.parametrize("bad", ["9F", "9F2608AABB", "5A85", "70039F3601"])
def test_malformed_tlv_raises(bad: str) -> None:
    with pytest.raises(tlv.TlvError):
        tlv.items(bytes.fromhex(bad))
        tlv.decode(bytes.fromhex(bad))


def test_decode_malformed_raises_tlv_error() -> None:
    with pytest.raises(tlv.TlvError):
        tlv.decode(bytes.fromhex("9F2608AABB"))


def test_dol_parse_and_build() -> None:
    dol = bytes.fromhex("9F02069F1A029F37049F4E149F660495059F7C03")
    assert tlv.parse_dol(dol) == [("9F02", 6), ("9F1A", 2), ("9F37", 4), ("9F4E", 20),
                                  ("9F66", 4), ("95", 5), ("9F7C", 3)]
    values = {"9F02": bytes.fromhex("000000001234"), "9F1A": b"\x01\x56",
              "9F37": b"\x01\x02\x03\x04", "9F4E": b"SHOP", "95": bytes.fromhex("0000008000"),
              "9F7C": bytes.fromhex("0102030405")}
    data = tlv.build_dol(dol, values)
    assert data == (bytes.fromhex("000000001234") + b"\x01\x56" + b"\x01\x02\x03\x04"
                    + b"SHOP" + bytes(16) + bytes(4) + bytes.fromhex("0000008000")
                    + bytes.fromhex("010203"))
    # numeric values are right-justified: padded and cut on the left
    assert tlv.dol_value("9F02", 6, b"\x12\x34") == bytes.fromhex("000000001234")
    assert tlv.dol_value("9F02", 2, bytes.fromhex("000000001234")) == b"\x12\x34"
    assert tlv.dol_names(dol, "9F37") and not tlv.dol_names(dol, "91")


def test_command_apdus() -> None:
    assert apdu.select(apdu.PSE_NAME).hex().upper() == "00A404000E315041592E5359532E444446303100"
    assert apdu.select(b"\xa0\x00\x00\x03\x33", next_occurrence=True)[:4] == b"\x00\xa4\x04\x02"
    assert apdu.read_record(1, 2) == bytes.fromhex("00B2020C00")
    assert apdu.read_record(11, 1) == bytes.fromhex("00B2015C00")
    assert apdu.get_processing_options(b"") == bytes.fromhex("80A80000028300" "00")
    assert apdu.get_processing_options(b"\x01\x56") == bytes.fromhex("80A800000483020156" "00")
    assert apdu.generate_ac(apdu.P1_ARQC, b"\x01") == bytes.fromhex("80AE8000010100")
    assert apdu.external_authenticate(bytes(10)) == bytes.fromhex("008200000A") + bytes(10)
    assert apdu.get_data("9F36") == bytes.fromhex("80CA9F3600")
    assert apdu.internal_authenticate(b"\x01\x02\x03\x04") == \
        bytes.fromhex("0088000004010203" "0400")


def test_status_words() -> None:
    assert apdu.ok(b"\x90\x00") and not apdu.ok(b"\x62\x83") and not apdu.ok(b"\x90")
    assert apdu.sw(b"\x01\x6a\x82") == apdu.SW_NOT_FOUND and apdu.data(b"\x01\x90\x00") == b"\x01"
    assert apdu.script_command_ok(b"\x62\x00") and apdu.script_command_ok(b"\x63\xc1")
    assert not apdu.script_command_ok(b"\x69\x88")
    with pytest.raises(apdu.ApduError):
        apdu.sw(b"\x90")
