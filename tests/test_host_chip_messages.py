"""Chip on the wire: every builder that carries field 55 (sale, reversal, script advice, chip
batch upload) and the chip fields around it (22, 23, 60.4/60.5), through the real codec.

Field 55 is decoded here with a small BER-TLV reader of the test's own (`ber_tlv` below), not
with pyemv, which the builders use: a bug shared by builder and decoder cannot hide. (No
ber-tlv package is in the locks, and adding one for thirty lines was not worth a relock.)
"""

from __future__ import annotations

import pytest

from firmware.host.codec import decode, encode, verify_mac
from firmware.host.errors import LocalProtocolError
from firmware.host.mac import clear_mac
from firmware.host.messages import (
    CHIP_UPLOAD_NETWORK,
    REVERSAL_55_TAGS,
    SCRIPT_ADVICE_NETWORK,
    CardInput,
    ChipUploadItem,
    FinancialParams,
    ScriptAdviceParams,
    Terminal,
    TxnKind,
    chip_upload_request,
    financial_request,
    reply_needs_mac,
    reversal_request,
    script_advice,
)

TERM = Terminal("12345678", "123456789012345")
PAN = "6228480000000000018"
MAK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
MAC = clear_mac(MAK)  # the CUP ECB MAC under MAK


def ber_tlv(data: bytes) -> list[tuple[str, bytes]]:
    """(tag hex, value) of each top-level TLV, per ISO 7816-4 / EMV Book 3 annex B: a tag's
    first byte with low bits 11111 continues while the next byte has bit 8 set; a length byte
    81/82 is followed by 1/2 length bytes. Raises ValueError on anything malformed."""
    out: list[tuple[str, bytes]] = []
    i = 0
    while i < len(data):
        start = i
        i += 1
        if data[start] & 0x1F == 0x1F:
            while True:
                if i >= len(data):
                    raise ValueError("tag runs past the end")
                i += 1
                if not data[i - 1] & 0x80:
                    break
        tag = data[start:i].hex().upper()
        if i >= len(data):
            raise ValueError("no length")
        length = data[i]
        i += 1
        if length & 0x80:
            n = length & 0x7F
            if n not in (1, 2) or i + n > len(data):
                raise ValueError("bad long length")
            length = int.from_bytes(data[i:i + n], "big")
            i += n
        if i + length > len(data):
            raise ValueError("value runs past the end")
        out.append((tag, data[i:i + length]))
        i += length
    return out


REQUEST_TAGS = {
    "9F26": bytes.fromhex("1122334455667788"), "9F27": b"\x80",
    "9F10": bytes.fromhex("0701010380000000"), "9F37": bytes.fromhex("CAFEBABE"),
    "9F36": b"\x00\x2a", "95": bytes.fromhex("0000008000"), "9A": bytes.fromhex("261207"),
    "9C": b"\x00", "9F02": bytes.fromhex("000000001234"), "5F2A": b"\x01\x56",
    "82": b"\x7c\x00", "9F1A": b"\x01\x56", "9F03": bytes(6), "9F33": bytes.fromhex("E0F0C8"),
    "9F34": bytes.fromhex("420300"), "9F35": b"\x22", "9F1E": b"POS00001",
    "84": bytes.fromhex("A000000333010101"), "9F09": b"\x00\x30",
    "9F41": b"\x00\x00\x00\x01",
}


def _tlv(tags: dict[str, bytes]) -> bytes:
    # Built by hand too (all values here are < 128 bytes): short form length.
    return b"".join(bytes.fromhex(t) + bytes([len(v)]) + v for t, v in tags.items())


REQUEST_55 = _tlv(REQUEST_TAGS)


def chip_card(**kw: object) -> CardInput:
    base: dict[str, object] = {"expiry": "2912", "card_seq": "1",
                               "track2": PAN + "=29122010000000000", "icc_data": REQUEST_55.hex()}
    base.update(kw)
    return CardInput("chip", PAN, **base)  # type: ignore[arg-type]


def sale(card: CardInput | None = None, **kw: object) -> FinancialParams:
    return FinancialParams(TxnKind.SALE, "000042", "000007", TERM, 1234,
                           card=card or chip_card(), **kw)  # type: ignore[arg-type]


def roundtrip(msg):  # type: ignore[no-untyped-def]
    """Encode with a MAC and decode again: the message as the host sees it."""
    decoded = decode(encode(msg, MAC)[2:])
    assert verify_mac(decoded, MAC)
    return decoded.message


def field55(msg) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
    return ber_tlv(bytes.fromhex(msg.fields["55"]))


# ---- 0200 / 0100 ---------------------------------------------------------------------

@pytest.mark.parametrize(("pin", "f22"), [(None, "052"), (bytes(8), "051")])
def test_a_chip_sale_says_chip_in_22_23_and_60_and_carries_55_byte_for_byte(pin, f22) -> None:
    msg = roundtrip(financial_request(sale(chip_card(pin_block=pin))))
    f = msg.fields
    assert (msg.mti, f["22"], f["23"]) == ("0200", f22, "001")
    assert f["60"][-2:] == "50"  # 60.4 = 5 chip capable, 60.5 = 0 normal
    assert field55(msg) == list(REQUEST_TAGS.items())


def test_a_chip_preauth_carries_55_too() -> None:
    p = FinancialParams(TxnKind.PREAUTH, "000043", "000007", TERM, 500, card=chip_card())
    msg = roundtrip(financial_request(p))
    assert msg.mti == "0100" and dict(field55(msg)) == REQUEST_TAGS


def test_55_may_be_given_as_bytes() -> None:
    f = financial_request(sale(chip_card(icc_data=REQUEST_55))).fields
    assert f["55"] == REQUEST_55.hex().upper()


@pytest.mark.parametrize(("icc", "words"), [
    ("9F2608AABB", "not well-formed TLV"),        # value shorter than its length
    ("9F26", "not well-formed TLV"),              # no length
    ("ZZ", "hex"),
    (bytes.fromhex("DF31") + b"\x81\xfc" + bytes(252), "256 bytes"),  # over LLLVAR 255
])
def test_a_malformed_or_oversized_55_is_refused_before_the_wire(icc, words) -> None:
    with pytest.raises(LocalProtocolError, match=words) as info:
        financial_request(sale(chip_card(icc_data=icc)))
    assert "AABB" not in str(info.value)  # the bytes themselves never reach the words


def test_a_chip_card_without_5f34_sends_no_23() -> None:
    f = financial_request(sale(chip_card(card_seq=None))).fields
    assert "23" not in f and f["22"] == "052"


# ---- 0400 ----------------------------------------------------------------------------

REVERSAL_TAGS = {"95": bytes.fromhex("0000008000"), "9F10": REQUEST_TAGS["9F10"],
                 "9F1E": b"POS00001", "DF31": bytes.fromhex("2000000001"),
                 "9F36": b"\x00\x2a"}


def test_a_chip_reversal_carries_the_55_it_is_given() -> None:
    rev = roundtrip(reversal_request(sale(), "06", "123456", icc_data=_tlv(REVERSAL_TAGS)))
    assert rev.mti == "0400"
    assert field55(rev) == list(REVERSAL_TAGS.items())
    assert (rev.fields["22"], rev.fields["23"], rev.fields["38"]) == ("052", "001", "123456")


def test_without_its_own_55_a_chip_reversal_keeps_the_reversal_tags_of_the_original() -> None:
    rev = roundtrip(reversal_request(sale(), "98", None))
    tags = [t for t, _ in field55(rev)]
    assert tags == [t for t in REVERSAL_55_TAGS if t in REQUEST_TAGS]
    assert "9F26" not in tags and dict(field55(rev))["9F36"] == b"\x00\x2a"


def test_a_reversal_rebuilt_from_the_journal_gets_55_only_from_the_caller() -> None:
    keyed = CardInput("keyed", PAN)  # the journal keeps the PAN alone
    p = sale(keyed, pos_entry="051", read_cap="50")
    assert "55" not in reversal_request(p, "98", None).fields
    rev = reversal_request(p, "98", None, icc_data=_tlv(REVERSAL_TAGS))
    assert (rev.fields["22"], rev.fields["60"][-2:]) == ("051", "50")
    assert dict(field55(rev)) == REVERSAL_TAGS


# ---- 0620 script result advice ------------------------------------------------------

ADVICE_TAGS = {"9F33": REQUEST_TAGS["9F33"], "95": REQUEST_TAGS["95"],
               "9F37": REQUEST_TAGS["9F37"], "9F1E": b"POS00001",
               "9F10": REQUEST_TAGS["9F10"], "9F26": REQUEST_TAGS["9F26"],
               "9F36": b"\x00\x2a", "82": b"\x7c\x00", "DF31": bytes.fromhex("2000000001"),
               "9F1A": b"\x01\x56", "9A": bytes.fromhex("261207")}


def advice(**kw: object) -> ScriptAdviceParams:
    base: dict[str, object] = {
        "stan": "000044", "batch": "000007", "term": TERM, "pan": PAN, "amount": 1234,
        "pos_entry": "051", "icc_data": _tlv(ADVICE_TAGS), "orig_batch": "000007",
        "orig_stan": "000042", "orig_date": "1207", "card_seq": "001",
        "orig_rrn": "000000000101", "orig_auth": "654321"}
    base.update(kw)
    return ScriptAdviceParams(**base)  # type: ignore[arg-type]


def test_the_script_advice_is_a_maced_0620_naming_its_original() -> None:
    msg = roundtrip(script_advice(advice()))
    f = msg.fields
    assert msg.mti == "0620"
    assert set(f) == {"2", "3", "4", "11", "22", "23", "37", "38", "41", "42", "49", "55",
                      "60", "61", "64"}
    assert f["60"] == "00000007" + SCRIPT_ADVICE_NETWORK
    assert f["61"] == "000007" + "000042" + "1207"
    assert field55(msg) == list(ADVICE_TAGS.items())
    assert reply_needs_mac("0630", "00") and reply_needs_mac("0630", "96")


def test_a_script_advice_without_rrn_or_auth_leaves_37_38_out() -> None:
    f = script_advice(advice(orig_rrn=None, orig_auth=None, card_seq=None)).fields
    assert not {"23", "37", "38"} & set(f)
    with pytest.raises(LocalProtocolError, match=r"61\.3"):
        script_advice(advice(orig_date="12"))


# ---- 0320 chip batch upload ----------------------------------------------------------

def test_a_chip_upload_is_one_0320_with_the_transactions_55() -> None:
    item = ChipUploadItem(trace="000042", pan=PAN, amount=1234, pos_entry="051",
                          icc_data=REQUEST_55, card_seq="001")
    msg = roundtrip(chip_upload_request("000050", TERM, "000007", item))
    f = msg.fields
    assert msg.mti == "0320"
    assert (f["2"], f["4"], f["11"], f["22"], f["23"]) == (PAN, "000000001234", "000050",
                                                          "051", "001")
    assert f["60"] == "00000007" + CHIP_UPLOAD_NETWORK
    assert f["61"] == "000007000042"
    assert dict(field55(msg)) == REQUEST_TAGS


def test_the_test_decoder_is_itself_right() -> None:
    """The independent reader against hand-made edge cases (2-byte length, 3-byte tag)."""
    assert ber_tlv(bytes.fromhex("DF8101020102") + b"\x9f\x26\x81\x01\xaa") == [
        ("DF8101", b"\x01\x02"), ("9F26", b"\xaa")]
    with pytest.raises(ValueError):
        ber_tlv(bytes.fromhex("9F2605AA"))


def test_an_ic_terminal_signs_on_with_application_type_61() -> None:
    from firmware.host.messages import signon_request

    assert signon_request("000001", TERM, "000001", "01", False).header.app_type == "60"
    ic = roundtrip_plain(signon_request("000001", TERM, "000001", "01", False, ic=True))
    assert ic.header.app_type == "61"


def roundtrip_plain(msg):  # type: ignore[no-untyped-def]
    return decode(encode(msg, None)[2:]).message
