"""firmware.emv.field55: the tag list and order per message type, decoded with an independent
decoder (pyemv's), and the sensitive tags never sent."""

from __future__ import annotations

from pyemv import tlv as pyemv_tlv

from firmware.emv import field55

TAGS: dict[str, bytes] = {
    "9F26": bytes(8), "9F27": b"\x80", "9F10": bytes.fromhex("0701010360000000"),
    "9F37": b"\x01\x02\x03\x04", "9F36": b"\x00\x07", "95": bytes.fromhex("0000008000"),
    "9A": b"\x26\x03\x15", "9C": b"\x00", "9F02": bytes.fromhex("000000001234"),
    "5F2A": b"\x01\x56", "82": b"\x7c\x00", "9F1A": b"\x01\x56", "9F03": bytes(6),
    "9F33": bytes.fromhex("E0E1C8"), "9F34": bytes.fromhex("420300"), "9F35": b"\x22",
    "9F1E": b"POS00001", "84": bytes.fromhex("A000000333010101"), "9F09": b"\x00\x30",
    "DF31": bytes.fromhex("2000000007"), "9B": b"\xf8\x00", "8A": b"00",
    "57": bytes.fromhex("6228480000000000011D28122010"), "5A": bytes.fromhex("6228480000000000011F"),
    "5F20": b"TEST/CARD",
}


def _tags(data: bytes) -> list[str]:
    return list(pyemv_tlv.decode(data))


def test_request_55_is_the_cup_list_in_order_of_what_is_present() -> None:
    data = field55.request_55(TAGS)
    assert _tags(data) == [t for t in field55.REQUEST_TAGS if t in TAGS]
    assert "9F41" not in _tags(data) and "DF31" not in _tags(data)
    assert pyemv_tlv.decode(data)["9F10"] == TAGS["9F10"]


def test_sensitive_tags_are_never_sent() -> None:
    hostile = ("57", "5A", "5F20")
    for build in (field55.request_55, field55.reversal_55, field55.script_advice_55):
        assert not set(hostile) & set(_tags(build(TAGS)))
    # even a caller's list that names them cannot send them
    assert field55._build(TAGS, hostile) == b""


def test_reversal_55_adds_9f36_only_when_the_card_declined_after_approval() -> None:
    approved_then_tc = dict(TAGS, **{"9F27": b"\x40"})
    assert _tags(field55.reversal_55(approved_then_tc)) == ["95", "9F10", "9F1E", "DF31"]
    declined = dict(TAGS, **{"9F27": b"\x00"})
    assert _tags(field55.reversal_55(declined)) == ["95", "9F10", "9F1E", "DF31", "9F36"]
    host_declined = dict(declined, **{"8A": b"51"})
    assert "9F36" not in _tags(field55.reversal_55(host_declined))
    assert "9F36" in _tags(field55.reversal_55(host_declined, card_declined=True))


def test_script_advice_55() -> None:
    assert _tags(field55.script_advice_55(TAGS)) == list(field55.SCRIPT_ADVICE_TAGS)
