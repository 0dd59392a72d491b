"""Message <-> bytes (firmware.host.codec): exact frames, MAC placement, malformed input, fuzz."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.host.codec import decode, encode, verify_mac
from firmware.host.errors import LocalProtocolError, RemoteProtocolError
from firmware.host.framing import Header
from firmware.host.mac import clear_mac, cup_ecb_mac
from firmware.host.messages import (
    CardInput,
    FinancialParams,
    Message,
    Terminal,
    TxnKind,
    financial_request,
    response_for,
)

MAK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
MAC = clear_mac(MAK)  # the CUP ECB MAC under MAK
TERM = Terminal("12345678", "123456789012345")

# A swiped sale, written out field by field from the domain doc (not produced by the code).
SALE_BODY_NO_MAC = (
    "0200" "3020048020C08011"  # MTI, bitmap: 3 4 11 22 25 35 41 42 49 60 64
    "000000"  # 3
    "000000001234"  # 4: 12.34 CNY
    "000123"  # 11
    "0220"  # 22: swiped, no PIN, left-justified
    "00"  # 25
    "23" "6225881234567890D2512100"  # 35: 23 digits, '=' as D, trailing pad nibble
    "3132333435363738"  # 41
    "313233343536373839303132333435"  # 42
    "313536"  # 49
    "0011" "220000010000"  # 60: 22 + batch 000001 + 000, 11 digits
)
# MAC verified step by step with openssl's DES (see test_host_mac.py): CBBB1B97.
SALE_MAC = "4342424231423937"
SALE_PAYLOAD = "6000030000" "603100000000" + SALE_BODY_NO_MAC + SALE_MAC
SALE_FRAME = bytes.fromhex(f"{len(SALE_PAYLOAD) // 2:04X}" + SALE_PAYLOAD)


def swiped_sale() -> Message:
    card = CardInput("swipe", "6225881234567890", track2="6225881234567890=251210")
    return financial_request(FinancialParams(TxnKind.SALE, "000123", "000001", TERM, 1234,
                                             card=card))


def test_sale_frame_exact_bytes() -> None:
    out = encode(swiped_sale(), MAC)
    assert out.hex().upper() == SALE_FRAME.hex().upper()
    assert out[:2] == b"\x00\x5b"


def test_chip_sale_with_pin_exact_bytes() -> None:
    card = CardInput("chip", "6225881234567890123", expiry="2512", card_seq="1",
                     track2="6225881234567890123=25122011234",
                     icc_data="9F2608AABBCCDDEEFF0011", pin_block=bytes.fromhex("1122334455667788"))
    msg = financial_request(FinancialParams(TxnKind.SALE, "000124", "000001", TERM, 10000,
                                            card=card))
    body = (
        "0200" "702406C020C09A11"  # 2 3 4 11 14 22 23 25 26 35 41 42 49 52 53 55 60 64
        "19" "62258812345678901230"  # 2
        "000000" "000000010000" "000124" "2512"  # 3 4 11 14
        "0510"  # 22: chip, PIN entered
        "0001"  # 23: right-justified
        "00" "12"  # 25 26
        "31" "6225881234567890123D251220112340"  # 35
        "3132333435363738" "313233343536373839303132333435" "313536"  # 41 42 49
        "1122334455667788" "2600000000000000"  # 52 53
        "0011" "9F2608AABBCCDDEEFF0011"  # 55: byte count
        "0013" "22000001000500"  # 60: 60.4 = 5 (chip read), 60.5 = 0, pad nibble
    )
    payload = bytes.fromhex("6000030000603100000000" + body)
    expected = payload + cup_ecb_mac(MAK, bytes.fromhex(body))
    assert encode(msg, MAC) == len(expected).to_bytes(2, "big") + expected


def test_decode_sale_frame() -> None:
    d = decode(SALE_FRAME[2:])
    assert d.message.mti == "0200"
    assert d.message.fields == {
        "3": "000000", "4": "000000001234", "11": "000123", "22": "022", "25": "00",
        "35": "6225881234567890=251210", "41": "12345678", "42": "123456789012345",
        "49": "156", "60": "22000001000", "64": SALE_MAC}
    assert d.message.header == Header()
    assert d.raw == SALE_FRAME[2:]
    assert d.mac_input == bytes.fromhex(SALE_BODY_NO_MAC)
    assert verify_mac(d, MAC)
    assert not verify_mac(d, clear_mac(bytes(16)))


def test_verify_mac_detects_tampering_and_absence() -> None:
    tampered = bytearray(SALE_FRAME[2:])
    tampered[29] ^= 0x01  # amount 1234 -> 1235
    assert not verify_mac(decode(bytes(tampered)), MAC)
    no_mac = encode(response_for(swiped_sale(), "00", {}))
    d = decode(no_mac[2:])
    assert d.mac_input == b""
    assert not verify_mac(d, MAC)


def test_encode_without_mak() -> None:
    out = encode(swiped_sale())
    assert out[2:].hex().upper() == ("6000030000603100000000" + SALE_BODY_NO_MAC
                                     ).replace("3020048020C08011", "3020048020C08010")


def test_encode_with_mak_replaces_given_64() -> None:
    msg = swiped_sale()
    with_64 = Message(msg.mti, {**msg.fields, "64": "FF" * 8})
    assert encode(with_64, MAC) == SALE_FRAME


@pytest.mark.parametrize(("fields", "mti", "needle"), [
    ({"4": "12"}, "0200", "field 4"),  # wrong fixed length
    ({"11": "00012A"}, "0200", "field 11"),  # non-digit (pyiso8583 would take A-F)
    ({"2": "1" * 20}, "0200", "field 2"),  # longer than max
    ({"5": "1"}, "0200", "field 5"),  # not in the spec
    ({"1": "00" * 8}, "0200", "field 1"),  # no secondary bitmap
    ({"70": "301"}, "0800", "field 70"),
    ({"41": "终端号码"}, "0200", "field 41"),  # not ASCII
    ({"35": "6225881234567890D2512"}, "0200", "field 35"),  # 'D' is the wire form, not ours
    ({"55": "ABC"}, "0200", "field 55"),  # odd hex
    ({"3": "000000"}, "0300", "MTI"),
    ({"3": "000000"}, "200", "MTI"),
])
def test_encode_errors_name_the_field(fields: dict[str, str], mti: str, needle: str) -> None:
    with pytest.raises(LocalProtocolError, match=needle):
        encode(Message(mti, fields))


def test_field_64_without_key() -> None:
    with pytest.raises(LocalProtocolError, match="64"):
        encode(Message("0200", {"3": "000000", "64": "00" * 8}))


def test_encode_does_not_mutate_message() -> None:
    msg = swiped_sale()
    before = dict(msg.fields)
    encode(msg, MAC)
    assert msg.fields == before


def _patched(offset: int, value: int) -> bytes:
    p = bytearray(SALE_FRAME[2:])
    p[offset] = value
    return bytes(p)


def _or(offset: int, bits: int) -> bytes:
    p = bytearray(SALE_FRAME[2:])
    p[offset] |= bits
    return bytes(p)


P = SALE_FRAME[2:]
# Payload offsets of the sale: MTI 11, bitmap 13, 3@21, 4@24, 11@30, 22@33, 25@35, 35@36,
# 41@49, 42@57, 49@72, 60@75, 64@83, end 91.
MALFORMED = [
    pytest.param(_patched(11, 0x03), "t", 11, id="unknown-mti"),
    pytest.param(_patched(12, 0x0A), "t", 11, id="non-bcd-mti"),
    pytest.param(_or(13, 0x80), "1", 13, id="secondary-bitmap"),
    pytest.param(_or(13, 0x08), "5", 13, id="field-not-in-spec"),
    pytest.param(_patched(31, 0x1A), "11", 30, id="non-bcd-stan"),
    pytest.param(_patched(29, 0x3F), "4", 24, id="non-bcd-amount"),
    pytest.param(_patched(34, 0x21), "22", 33, id="field22-pad-not-zero"),
    pytest.param(_patched(36, 0x2A), "35", 36, id="non-bcd-llvar-length"),
    pytest.param(_patched(36, 0x99), "35", 36, id="llvar-over-max"),
    pytest.param(_patched(40, 0xEE), "35", 36, id="track-bad-nibble"),
    pytest.param(_patched(48, 0x01), "35", 37, id="track-pad-not-zero"),
    pytest.param(_patched(49, 0xFF), "41", 49, id="non-ascii-tid"),
    pytest.param(_patched(76, 0x18), "60", 75, id="field60-over-max"),
    pytest.param(P + b"\x00", "64", 91, id="extra-byte"),
    pytest.param(P[:-1], "64", 83, id="truncated-mac"),
    pytest.param(P[:11], "t", 11, id="no-mti"),
    pytest.param(P[:16], "p", 13, id="short-bitmap"),
    pytest.param(_patched(0, 0x61), "tpdu", 0, id="tpdu-id"),
    pytest.param(_patched(6, 0x3C), "header", 6, id="header-non-bcd"),
]


@pytest.mark.parametrize(("payload", "field", "offset"), MALFORMED)
def test_malformed_payloads(payload: bytes, field: str, offset: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(payload)
    assert (info.value.field, info.value.offset) == (field, offset)
    assert f"field {field} at byte {offset}" in str(info.value)


@pytest.mark.parametrize("cut", range(len(P)))
def test_every_truncation_is_remote_error_with_location(cut: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(P[:cut])
    assert info.value.field is not None
    assert info.value.offset is not None


def test_reply_with_binary_and_text_fields_round_trips() -> None:
    reply = response_for(swiped_sale(), "00", {
        "12": "103000", "13": "1122", "32": "48020000", "37": "123456789012", "38": "A1B2C3",
        "44": "0102030405 0607080910", "54": "1002156C000000012345", "63": "CUP中国银行"})
    d = decode(encode(reply, MAC)[2:])
    assert d.message.fields == {**reply.fields, "64": d.message.fields["64"]}
    assert d.message.tpdu.hex() == "6000000003"
    assert verify_mac(d, MAC)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode(data)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(P) - 1), st.integers(0, 255)), min_size=1,
                max_size=4))
def test_fuzz_mutated_sale(mutations: list[tuple[int, int]]) -> None:
    p = bytearray(P)
    for offset, value in mutations:
        p[offset] = value
    try:
        d = decode(bytes(p))
    except RemoteProtocolError as exc:
        assert exc.field is not None
    else:
        # Whatever decodes must encode back to the same bytes: one spec, both ways.
        fields = dict(d.message.fields)
        expected = bytearray(p)
        if fields.pop("64", None) is not None:
            expected = expected[:-8]
            expected[20] &= 0xFE  # bitmap bit of field 64
        again = Message(d.message.mti, fields, header=d.message.header, tpdu=d.message.tpdu)
        assert encode(again)[2:] == bytes(expected)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["0110", "0210", "0410", "0510", "0810", "0830"]),
       st.binary(min_size=8, max_size=120))
def test_fuzz_after_valid_header_and_mti(mti: str, tail: bytes) -> None:
    # Random bitmaps and fields behind a plausible start reach deeper into the decoder.
    with contextlib.suppress(RemoteProtocolError):
        decode(bytes.fromhex("6000030000603100000000" + mti) + tail)
