"""Message builders (firmware.host.messages): field sets per transaction and round trips."""

from __future__ import annotations

import string
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyemv import tlv

from firmware.host.codec import decode, encode, verify_mac
from firmware.host.errors import LocalProtocolError, RemoteProtocolError
from firmware.host.framing import DEFAULT_TPDU, Header
from firmware.host.mac import clear_mac
from firmware.host.messages import (
    WIRE,
    CardInput,
    FinancialParams,
    Message,
    SideTotals,
    Terminal,
    TxnKind,
    UploadItem,
    batch_upload_end,
    batch_upload_request,
    deregister_request,
    echo_request,
    financial_request,
    loggable,
    mask_pan,
    parse_settlement_field48,
    response_for,
    reversal_request,
    settlement_field48,
    settlement_request,
    signoff_request,
    signon_request,
)

MAK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
TERM = Terminal("TERM0001", "898440154110001")
PAN = "6225881234567890"
PIN_BLOCK = bytes.fromhex("1122334455667788")
SWIPE = CardInput("swipe", PAN, track2=PAN + "=2512101")
SWIPE_PIN = CardInput("swipe", PAN, track2=PAN + "=2512101", track3="99" + PAN + "=156",
                      pin_block=PIN_BLOCK)
CHIP = CardInput("chip", PAN, expiry="2512", card_seq="01", track2=PAN + "=2512101",
                 icc_data="9f2608aabbccddeeff0011", pin_block=PIN_BLOCK)
KEYED = CardInput("keyed", PAN, expiry="2512")


def params(kind: TxnKind, card: CardInput = SWIPE, **kw: str) -> FinancialParams:
    orig = {"orig_rrn": "123456789012", "orig_auth": "A1B2C3", "orig_batch": "000001",
            "orig_stan": "000077", "orig_date": "1122"}
    orig.update(kw)
    return FinancialParams(kind, "000100", "000001", TERM, 12345, card=card, **orig)


# -- the WIRE table, row by row from domain doc section 3

@pytest.mark.parametrize(("kind", "row"), [
    (TxnKind.SALE, ("0200", "000000", "00", "22", True, False, False, False, False, True)),
    (TxnKind.VOID, ("0200", "200000", "00", "23", True, False, True, True, False, True)),
    (TxnKind.REFUND, ("0220", "200000", "00", "25", False, True, True, False, True, True)),
    (TxnKind.BALANCE, ("0200", "310000", "00", "01", False, False, False, False, False, False)),
    (TxnKind.PREAUTH, ("0100", "030000", "06", "10", True, False, False, False, False, True)),
    (TxnKind.PREAUTH_VOID, ("0100", "200000", "06", "11", True, False, False, True, True, True)),
    (TxnKind.COMPLETION, ("0200", "000000", "06", "20", True, False, False, True, True, True)),
    (TxnKind.COMPLETION_VOID,
     ("0200", "200000", "06", "21", True, False, True, True, True, True)),
])
def test_wire_table(kind: TxnKind, row: tuple[object, ...]) -> None:
    w = WIRE[kind]
    assert (w.mti, w.proc, w.cond, w.type_code, w.reversible, w.advice, w.sends_orig_rrn,
            w.sends_orig_auth, w.orig_has_date, w.has_amount) == row


def test_txnkind_is_str() -> None:
    assert TxnKind("completion_void") is TxnKind.COMPLETION_VOID
    assert isinstance(TxnKind.SALE, str) and TxnKind.SALE == "sale"


BASE = {"3", "4", "11", "22", "25", "41", "42", "49", "60"}


@pytest.mark.parametrize(("kind", "extra", "f61"), [
    (TxnKind.SALE, set(), None),
    (TxnKind.VOID, {"37", "38", "61"}, "000001000077"),
    (TxnKind.REFUND, {"37", "61"}, "0000010000771122"),
    (TxnKind.PREAUTH, set(), None),
    (TxnKind.PREAUTH_VOID, {"38", "61"}, "0000010000771122"),
    (TxnKind.COMPLETION, {"38", "61"}, "0000010000771122"),
    (TxnKind.COMPLETION_VOID, {"37", "38", "61"}, "0000010000771122"),
])
def test_financial_fields_per_kind(kind: TxnKind, extra: set[str], f61: str | None) -> None:
    msg = financial_request(params(kind))
    w = WIRE[kind]
    assert msg.mti == w.mti
    assert set(msg.fields) == BASE | {"35"} | extra
    assert msg.fields["3"] == w.proc
    assert msg.fields["25"] == w.cond
    assert msg.fields["60"] == w.type_code + "000001" + "000"
    assert msg.fields["4"] == "000000012345"
    assert msg.fields["49"] == "156"
    assert msg.fields["22"] == "022"
    assert msg.fields.get("61") == f61
    assert "64" not in msg.fields
    assert msg.header == Header() and msg.tpdu == DEFAULT_TPDU


def test_balance_has_no_amount_and_carries_pin() -> None:
    msg = financial_request(params(TxnKind.BALANCE, SWIPE_PIN))
    assert set(msg.fields) == (BASE - {"4"}) | {"26", "35", "36", "52", "53"}
    assert msg.fields["3"] == "310000"
    assert msg.fields["22"] == "021"
    assert msg.fields["26"] == "12"
    assert msg.fields["52"] == "1122334455667788"
    assert msg.fields["53"] == "2600000000000000"


@pytest.mark.parametrize(("card", "fields", "f22"), [
    (SWIPE, {"35"}, "022"),
    (SWIPE_PIN, {"35", "36", "26", "52", "53"}, "021"),
    (CHIP, {"2", "14", "23", "35", "55", "26", "52", "53"}, "051"),
    (KEYED, {"2", "14"}, "012"),
    (CardInput("contactless", PAN, expiry="2512", icc_data="9F270180"), {"2", "14", "55"}, "072"),
])
def test_card_fields_per_entry_mode(card: CardInput, fields: set[str], f22: str) -> None:
    msg = financial_request(params(TxnKind.SALE, card))
    assert set(msg.fields) == BASE | fields
    assert msg.fields["22"] == f22


def test_a_fallback_swipe_goes_out_as_a_swipe_with_22_80x_or_the_acquirers_02x() -> None:
    """A fallback swipe (a chip card swiped after its chip could not be read) is sent as any
    swipe: track 2 in 35 and never the PAN in 2, and no swipe without its track 2. Field 22 is
    80 + 1 (PIN) or 2 (no PIN) by default; an acquirer that wants 02x gets it
    (fallback_entry_code) and then only 60.5 = 2 tells it the swipe was a fallback."""
    card = CardInput("fallback", PAN, track2=PAN + "=2512201")
    f = financial_request(replace(params(TxnKind.SALE, card), chip_capable=True)).fields
    assert set(f) == BASE | {"35"}
    assert (f["35"], f["22"], f["60"][-2:]) == (PAN + "=2512201", "802", "52")
    with_pin = financial_request(params(TxnKind.SALE, replace(card, pin_block=PIN_BLOCK)))
    assert with_pin.fields["22"] == "801"
    as_swipe = financial_request(replace(params(TxnKind.SALE, card), fallback_entry_code="02"))
    assert (as_swipe.fields["22"], as_swipe.fields["60"][-2:]) == ("022", "52")
    with pytest.raises(LocalProtocolError, match="fallback entry code"):
        financial_request(replace(params(TxnKind.SALE, card), fallback_entry_code="05"))
    with pytest.raises(LocalProtocolError, match="track 2"):
        financial_request(params(TxnKind.SALE, replace(card, track2=None)))


def test_chip_values() -> None:
    f = financial_request(params(TxnKind.SALE, CHIP)).fields
    assert (f["2"], f["14"], f["23"], f["35"]) == (PAN, "2512", "001", PAN + "=2512101")
    assert f["55"] == "9F2608AABBCCDDEEFF0011"


@pytest.mark.parametrize(("p", "needle"), [
    (params(TxnKind.VOID, orig_rrn=""), "RRN"),
    (params(TxnKind.VOID, orig_auth="12"), "auth"),
    (params(TxnKind.REFUND, orig_date="11"), "61.3"),
    (params(TxnKind.VOID, orig_stan="77"), "61.2"),
    (params(TxnKind.SALE, CardInput("swipe", PAN)), "track 2"),
    (params(TxnKind.SALE, CardInput("chip", PAN)), "ICC"),
    (params(TxnKind.SALE, CardInput("wave", PAN)), "entry mode"),
    (params(TxnKind.SALE, CardInput("keyed", "1234")), "PAN"),
    (FinancialParams(TxnKind.SALE, "100", "000001", TERM, 1, card=SWIPE), "STAN"),
    (FinancialParams(TxnKind.SALE, "000100", "1", TERM, 1, card=SWIPE), "batch"),
    (FinancialParams(TxnKind.SALE, "000100", "000001", TERM, 0, card=SWIPE), "amount"),
    (FinancialParams(TxnKind.SALE, "000100", "000001", TERM, 10**12, card=SWIPE), "amount"),
    (FinancialParams(TxnKind.SALE, "000100", "000001", TERM, 1, card=SWIPE, currency="CNY"),
     "currency"),
])
def test_financial_request_rejects(p: FinancialParams, needle: str) -> None:
    with pytest.raises(LocalProtocolError, match=needle):
        financial_request(p)


def test_bad_pan_is_not_echoed_in_the_error() -> None:
    with pytest.raises(LocalProtocolError) as info:
        financial_request(params(TxnKind.SALE, CardInput("keyed", "62258812345X7890")))
    assert "62258812345" not in str(info.value)


def test_a_bad_expiry_is_not_echoed_in_the_error() -> None:
    """The expiry is card data: a malformed one is refused without showing it."""
    with pytest.raises(LocalProtocolError, match="expiry") as info:
        financial_request(params(TxnKind.SALE, replace(KEYED, expiry="25x2")))
    assert "25x2" not in str(info.value)


@pytest.mark.parametrize(("p", "shown"), [
    (FinancialParams(TxnKind.SALE, "12a456", "000001", TERM, 1, card=SWIPE), "'12a456'"),
    (FinancialParams(TxnKind.SALE, "000100", "00000b", TERM, 1, card=SWIPE), "'00000b'"),
    (FinancialParams(TxnKind.SALE, "000100", "000001", TERM, 1, card=SWIPE, currency="CNY"),
     "'CNY'"),
], ids=["stan", "batch", "currency"])
def test_a_refused_value_that_is_no_card_data_is_shown_in_the_error(p: FinancialParams,
                                                                     shown: str) -> None:
    """A STAN, a batch or a currency that is not digits is named in the refusal as it was
    given, so the log says what to fix; only card data (PAN, expiry) is hidden."""
    with pytest.raises(LocalProtocolError) as info:
        financial_request(p)
    assert shown in str(info.value)
    assert "hidden" not in str(info.value)


def test_terminal_validation() -> None:
    with pytest.raises(LocalProtocolError):
        Terminal("1234567", "123456789012345")
    with pytest.raises(LocalProtocolError):
        Terminal("12345678", "12345678901234")


# -- reversal (section 5)

def test_reversal_of_chip_sale() -> None:
    """The 0400 copies the original's fields but not its whole 55: only the reversal's tags
    (CHIP's 55 holds 9F26 alone, so none); tests/test_host_chip_messages.py has the rest."""
    p = params(TxnKind.SALE, CHIP)
    orig = financial_request(p)
    rev = reversal_request(p, "98", None)
    assert rev.mti == "0400"
    assert set(rev.fields) == {"2", "3", "4", "11", "22", "23", "25", "39", "41", "42", "49",
                               "60"}
    for k in ("3", "4", "11", "22", "23", "25", "49", "60"):
        assert rev.fields[k] == orig.fields[k]
    assert rev.fields["2"] == PAN
    assert rev.fields["39"] == "98"


def test_reversal_of_swiped_void_with_auth_code() -> None:
    p = params(TxnKind.VOID, SWIPE_PIN)
    rev = reversal_request(p, "A0", "654321")
    assert set(rev.fields) == {"2", "3", "4", "11", "22", "25", "38", "39", "41", "42", "49",
                               "60", "61"}
    assert rev.fields["38"] == "654321"
    assert rev.fields["61"] == "000001000077"
    assert rev.fields["2"] == PAN  # swiped: the PAN comes from the journal, not from 35


@pytest.mark.parametrize("kind", [TxnKind.VOID, TxnKind.PREAUTH_VOID, TxnKind.COMPLETION,
                                  TxnKind.COMPLETION_VOID])
def test_reversal_copies_61_and_38_of_the_original(kind: TxnKind) -> None:
    """B21: a completion's reversal (like every void's) copies the original's 61 and, when
    the reply named no auth code, the original's 38 (the authorisation it refers to)."""
    p = params(kind)
    orig = financial_request(p).fields
    rev = reversal_request(p, "06", None).fields
    assert (rev["61"], rev["38"]) == (orig["61"], orig["38"]) == (orig["61"], "A1B2C3")
    assert reversal_request(p, "A0", "654321").fields["38"] == "654321"


@pytest.mark.parametrize("kind", [TxnKind.SALE, TxnKind.PREAUTH])
def test_reversal_of_an_original_without_61_has_none(kind: TxnKind) -> None:
    rev = reversal_request(params(kind), "06", None).fields
    assert "61" not in rev and "38" not in rev


@pytest.mark.parametrize(("pos_entry", "read_cap"), [("021", ""), ("022", "50"), ("022", "52"),
                                                     ("012", "")])
def test_reversal_from_the_journal_copies_22_and_60_tail(pos_entry: str, read_cap: str) -> None:
    """B19: rebuilt from the journal the card is 'keyed' (only the PAN is kept), yet the 0400
    says what the original said of the card read: its 22 and its 60.4/60.5."""
    p = replace(params(TxnKind.SALE, CardInput("keyed", PAN)), pos_entry=pos_entry,
                read_cap=read_cap)
    rev = reversal_request(p, "98", None).fields
    assert rev["22"] == pos_entry
    assert rev["60"] == "22" + "000001" + "000" + read_cap
    assert rev["2"] == PAN and "14" not in rev


@pytest.mark.parametrize(("card", "chip_capable", "tail"), [
    (SWIPE, True, "50"), (SWIPE, False, ""), (CardInput("fallback", PAN, track2=PAN + "=2512201"),
                                              True, "52"), (KEYED, True, "50"), (KEYED, False, ""),
])
def test_60_4_and_60_5(card: CardInput, chip_capable: bool, tail: str) -> None:
    """B21: a terminal with a chip slot says so (60.4 = 5) on every financial message, with
    60.5 = 2 for a fallback swipe and 0 otherwise."""
    p = replace(params(TxnKind.SALE, card), chip_capable=chip_capable)
    assert financial_request(p).fields["60"] == "22" + "000001" + "000" + tail


def test_refund_carries_the_original_card_organisation() -> None:
    """B21: a refund sends back in 63 the card organisation its original's reply named."""
    assert financial_request(params(TxnKind.REFUND, orig_card_org="VIS")).fields["63"] == "VIS"
    assert "63" not in financial_request(params(TxnKind.REFUND)).fields
    with pytest.raises(LocalProtocolError, match="63"):
        financial_request(params(TxnKind.REFUND, orig_card_org="V I S"))


@pytest.mark.parametrize(("pos_entry", "read_cap", "needle"), [
    ("02", "", "22"), ("0a1", "", "22"), ("021", "5", "60.4"), ("021", "5x", "60.4")])
def test_kept_card_read_is_checked(pos_entry: str, read_cap: str, needle: str) -> None:
    p = replace(params(TxnKind.SALE, KEYED), pos_entry=pos_entry, read_cap=read_cap)
    with pytest.raises(LocalProtocolError, match=needle):
        financial_request(p)


@pytest.mark.parametrize("kind", [TxnKind.REFUND, TxnKind.BALANCE])
def test_non_reversible_kinds(kind: TxnKind) -> None:
    with pytest.raises(LocalProtocolError, match="not reversible"):
        reversal_request(params(kind), "06", None)


def test_reversal_reason_checked() -> None:
    with pytest.raises(LocalProtocolError, match="reason"):
        reversal_request(params(TxnKind.SALE), "00", None)


# -- management messages

def test_signon() -> None:
    m = signon_request("000005", TERM, "000001", "01", with_tdk=False)
    assert m.mti == "0800"
    assert m.fields == {"11": "000005", "41": "TERM0001", "42": "898440154110001",
                        "60": "00000001003", "63": "01 "}
    assert signon_request("000005", TERM, "000001", "001", True).fields["60"] == "00000001004"


def test_signoff_and_echo() -> None:
    off = signoff_request("000006", TERM, "000002")
    assert (off.mti, off.fields["60"], set(off.fields)) == ("0820", "00000002002",
                                                            {"11", "41", "42", "60"})
    echo = echo_request(TERM, "000002")
    assert (echo.mti, echo.fields["60"], set(echo.fields)) == ("0820", "00000002301",
                                                               {"41", "42", "60"})


def test_settlement() -> None:
    f48 = settlement_field48(SideTotals(123456, 3, 1000, 1), SideTotals(0, 0, 0, 0))
    assert f48 == ("000000123456" "003" "000000001000" "001" "0"
                   "000000000000" "000" "000000000000" "000" "0")
    m = settlement_request("000010", TERM, "000001", "01", f48, "156")
    assert m.mti == "0500"
    assert m.fields == {"11": "000010", "41": "TERM0001", "42": "898440154110001", "48": f48,
                        "49": "156", "60": "00000001201", "63": "01 "}
    with pytest.raises(LocalProtocolError):
        settlement_request("000010", TERM, "000001", "01", f48[:-1])
    with pytest.raises(LocalProtocolError):
        settlement_field48(SideTotals(1, 1000, 0, 0), SideTotals(0, 0, 0, 0))


def test_a_settlement_that_names_no_currency_is_in_yuan() -> None:
    """Field 49 of a 0500 is the currency it is given; given none, 156 (yuan), the same
    default as a financial request's 49 and as the terminal's currency setting."""
    f48 = settlement_field48(SideTotals(100, 1, 0, 0), SideTotals(0, 0, 0, 0))
    assert settlement_request("000010", TERM, "000001", "01", f48).fields["49"] == "156"
    assert financial_request(FinancialParams(TxnKind.SALE, "000100", "000001", TERM, 1,
                                             card=SWIPE)).fields["49"] == "156"
    assert settlement_request("000010", TERM, "000001", "01", f48, "344").fields["49"] == "344"


def test_parse_settlement_field48() -> None:
    dom, foreign = SideTotals(5, 1, 6, 2), SideTotals(7, 3, 8, 4)
    reply = settlement_field48(dom, foreign)
    reply = reply[:30] + "1" + reply[31:61] + "2"
    assert parse_settlement_field48(reply) == (dom, "1", foreign, "2")


@pytest.mark.parametrize("bad", ["0" * 61, "0" * 63, "0" * 30 + "A" + "0" * 31,
                                 "0" * 30 + "7" + "0" * 31])
def test_parse_settlement_field48_rejects(bad: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_settlement_field48(bad)
    assert info.value.field == "48"


def test_batch_upload() -> None:
    items = [UploadItem(False, "000101", PAN, 12345), UploadItem(True, "000102",
                                                                 "4761739001010010", 1)]
    m = batch_upload_request("000011", TERM, "000001", items)
    assert m.mti == "0320"
    assert m.fields["60"] == "00000001201"
    assert m.fields["48"] == ("02"
                              "00" "000101" "0000" + PAN + "000000012345"
                              "01" "000102" "0000" "4761739001010010" "000000000001")
    assert len(batch_upload_request("000011", TERM, "000001", items * 4).fields["48"]) == 322
    with pytest.raises(LocalProtocolError):
        batch_upload_request("000011", TERM, "000001", items * 5)
    with pytest.raises(LocalProtocolError):
        batch_upload_request("000011", TERM, "000001", [])


def test_batch_upload_end() -> None:
    m = batch_upload_end("000012", TERM, "000001", 17, balanced=True)
    assert (m.mti, m.fields["48"], m.fields["60"]) == ("0320", "0017", "00000001207")
    assert batch_upload_end("000012", TERM, "000001", 0, False).fields["60"] == "00000001202"


def test_response_for() -> None:
    req = financial_request(params(TxnKind.VOID, CHIP))
    rep = response_for(req, "00", {"37": "999999999999", "38": "ABCDEF"})
    assert rep.mti == "0210"
    assert rep.tpdu.hex() == "6000000003"
    for k in ("2", "3", "4", "11", "25", "41", "42", "49", "60", "61"):
        assert rep.fields[k] == req.fields[k]
    assert rep.fields["39"] == "00"
    assert rep.fields["37"] == "999999999999"
    assert "52" not in rep.fields and "35" not in rep.fields
    assert response_for(signon_request("000001", TERM, "000001", "01", False), "00",
                        {}).mti == "0810"
    with pytest.raises(LocalProtocolError):
        response_for(rep, "00", {})


@pytest.mark.parametrize(("pan", "masked"), [
    ("6225881234567890", "622588******7890"),
    ("6225881234567890123", "622588*********0123"),
    ("12345678901", "123456*8901"),
    ("1234567890", "******7890"),
    ("12345", "*2345"),
    ("1234", "****"),
    ("", ""),
])
def test_mask_pan(pan: str, masked: str) -> None:
    assert mask_pan(pan) == masked


def test_reprs_hide_card_data() -> None:
    text = repr(CHIP) + str(CHIP) + repr(params(TxnKind.SALE, CHIP))
    text += repr(financial_request(params(TxnKind.SALE, CHIP)))
    assert PAN not in text
    assert "2512101" not in text
    assert "1122334455667788" not in text and "AABBCCDDEEFF" not in text.upper()
    assert "622588******7890" in text
    assert loggable({"2": PAN, "35": "x", "4": "1"}) == {"2": "622588******7890",
                                                        "35": "<1 chars hidden>", "4": "1"}


# -- round trips: every builder's output survives encode -> decode unchanged

def roundtrip(msg: Message, mak: bytes | None = None) -> None:
    d = decode(encode(msg, clear_mac(mak) if mak is not None else None)[2:])
    got = dict(d.message.fields)
    if mak is not None:
        got.pop("64")
        assert verify_mac(d, clear_mac(mak))
    assert (d.message.mti, d.message.header, d.message.tpdu) == (msg.mti, msg.header, msg.tpdu)
    assert got == msg.fields


def digits(n: int, m: int | None = None) -> st.SearchStrategy[str]:
    return st.text("0123456789", min_size=n, max_size=n if m is None else m)


printable = st.characters(min_codepoint=32, max_codepoint=126)
terminals = st.builds(Terminal, st.text(printable, min_size=8, max_size=8),
                      st.text(printable, min_size=15, max_size=15))


@st.composite
def cards(draw: st.DrawFn) -> CardInput:
    mode = draw(st.sampled_from(["swipe", "chip", "keyed", "contactless"]))
    pan = draw(digits(13, 19))
    track2 = pan + "=" + draw(digits(0, 36 - len(pan)))
    chip = mode in ("chip", "contactless")
    return CardInput(
        mode, pan,
        expiry=draw(st.none() | digits(4)),
        track2=track2 if mode == "swipe" else draw(st.none() | st.just(track2)),
        track3=draw(st.none() | st.just("99" + pan + "=" + draw(digits(0, 80)))),
        card_seq=draw(st.none() | digits(1, 3)) if chip else None,
        # Well-formed TLV (the builders refuse anything else): an ARQC and a TVR-sized value.
        icc_data=tlv.encode({"9F26": draw(st.binary(min_size=1, max_size=200)),
                             "95": draw(st.binary(min_size=0, max_size=40))}).hex()
        if chip else None,
        pin_block=draw(st.none() | st.binary(min_size=8, max_size=8)),
    )


@st.composite
def fin_params(draw: st.DrawFn, kinds: list[TxnKind] | None = None) -> FinancialParams:
    return FinancialParams(
        draw(st.sampled_from(kinds or list(TxnKind))), draw(digits(6)), draw(digits(6)),
        draw(terminals), draw(st.integers(1, 10**12 - 1)), card=draw(cards()),
        currency=draw(digits(3)),
        orig_rrn=draw(st.text(string.ascii_uppercase + string.digits, min_size=12,
                              max_size=12)),
        orig_auth=draw(st.text(string.ascii_uppercase + string.digits, min_size=6, max_size=6)),
        orig_batch=draw(digits(6)), orig_stan=draw(digits(6)), orig_date=draw(digits(4)))


@settings(max_examples=150, deadline=None)
@given(fin_params())
def test_roundtrip_financial(p: FinancialParams) -> None:
    roundtrip(financial_request(p), MAK)


@settings(max_examples=100, deadline=None)
@given(fin_params([k for k, w in WIRE.items() if w.reversible]),
       st.sampled_from(["06", "98", "A0"]), st.none() | st.text("ABC123", min_size=6, max_size=6))
def test_roundtrip_reversal(p: FinancialParams, reason: str, auth: str | None) -> None:
    roundtrip(reversal_request(p, reason, auth), MAK)


@settings(deadline=None)
@given(digits(6), terminals, digits(6), st.text(printable, min_size=1, max_size=3),
       st.booleans())
def test_roundtrip_management(stan: str, term: Terminal, batch: str, op: str,
                              tdk: bool) -> None:
    roundtrip(signon_request(stan, term, batch, op, tdk))
    roundtrip(signoff_request(stan, term, batch))
    roundtrip(echo_request(term, batch))


totals = st.builds(SideTotals, st.integers(0, 10**12 - 1), st.integers(0, 999),
                   st.integers(0, 10**12 - 1), st.integers(0, 999))


@settings(deadline=None)
@given(digits(6), terminals, digits(6), totals, totals, digits(3))
def test_roundtrip_settlement(stan: str, term: Terminal, batch: str, dom: SideTotals,
                              foreign: SideTotals, currency: str) -> None:
    f48 = settlement_field48(dom, foreign)
    assert parse_settlement_field48(f48) == (dom, "0", foreign, "0")
    roundtrip(settlement_request(stan, term, batch, "01", f48, currency))


items = st.builds(UploadItem, st.booleans(), digits(6), digits(12, 19),
                  st.integers(0, 10**12 - 1))


@settings(deadline=None)
@given(digits(6), terminals, digits(6), st.lists(items, min_size=1, max_size=8),
       st.integers(0, 9999), st.booleans())
def test_roundtrip_batch_upload(stan: str, term: Terminal, batch: str, its: list[UploadItem],
                                count: int, balanced: bool) -> None:
    roundtrip(batch_upload_request(stan, term, batch, its))
    roundtrip(batch_upload_end(stan, term, batch, count, balanced))


@settings(max_examples=50, deadline=None)
@given(fin_params(), st.sampled_from(["00", "05", "51", "A0"]))
def test_roundtrip_response(p: FinancialParams, code: str) -> None:
    rep = response_for(financial_request(p), code, {"37": "123456789012", "12": "120000"})
    roundtrip(rep, MAK)


# -- the limits of each field as the dialect sets them (issue 14: messages.py mutants)

@pytest.mark.parametrize(("pan", "ok"), [("1" * 11, False), ("1" * 12, True), ("1" * 19, True),
                                         ("1" * 20, False)])
def test_a_pan_is_12_to_19_digits(pan: str, ok: bool) -> None:
    """Field 2 holds 12 to 19 digits: a keyed PAN outside that is refused before anything is
    sent, and the refusal does not show it."""
    p = params(TxnKind.SALE, CardInput("keyed", pan))
    if ok:
        assert financial_request(p).fields["2"] == pan
    else:
        with pytest.raises(LocalProtocolError, match="12-19 digits") as info:
            financial_request(p)
        assert pan not in str(info.value)


@pytest.mark.parametrize(("tid", "mid"), [
    ("TERM000", "898440154110001"), ("TERM00001", "898440154110001"),
    ("TERM0001", "89844015411000"), ("TERM0001", "8984401541100012"),
    ("TERM000\n", "898440154110001"), ("TERM0001", "89844015411000\x7f"),
    ("TERM000é", "898440154110001"), ("TERM0001", "89844015411000é"),
])
def test_terminal_and_merchant_ids_are_8_and_15_printable_ascii(tid: str, mid: str) -> None:
    """Field 41 is exactly 8 and field 42 exactly 15 printable ASCII characters; anything else
    is refused when the terminal is set up, not by the host."""
    with pytest.raises(LocalProtocolError, match="printable ASCII"):
        Terminal(tid, mid)


def test_operator_code_is_1_to_3_printable_characters_space_padded() -> None:
    """Field 63 of a sign-on or settlement is the operator code: 1-3 printable ASCII
    characters, padded with spaces to 3."""
    assert signon_request("000005", TERM, "000001", "7", False).fields["63"] == "7  "
    assert signon_request("000005", TERM, "000001", "007", False).fields["63"] == "007"
    for bad in ("", "0001", "0\t1", "é"):
        with pytest.raises(LocalProtocolError, match="operator"):
            signon_request("000005", TERM, "000001", bad, False)


def test_refund_card_organisation_is_1_to_3_letters_or_digits_space_padded() -> None:
    """Field 63 of a refund names the original's card organisation in 1-3 letters or digits
    (padded with spaces to 3); anything else is refused."""
    assert financial_request(params(TxnKind.REFUND, orig_card_org="V")).fields["63"] == "V  "
    for bad in ("", "VISA", "V-S", "VÍS"):
        with pytest.raises(LocalProtocolError, match="card organisation"):
            financial_request(params(TxnKind.REFUND, orig_card_org=bad))


def test_card_sequence_is_at_most_3_digits_and_pin_block_8_bytes() -> None:
    """Field 23 carries a card sequence of 1-3 digits (zero padded to 3); field 52 a PIN block
    of exactly 8 bytes. A chip read outside these is refused before anything is sent."""
    assert financial_request(params(TxnKind.SALE, replace(CHIP, card_seq="123"))) \
        .fields["23"] == "123"
    with pytest.raises(LocalProtocolError, match="at most 3 digits"):
        financial_request(params(TxnKind.SALE, replace(CHIP, card_seq="0001")))
    for block in (bytes(7), bytes(9)):
        with pytest.raises(LocalProtocolError, match="8 bytes"):
            financial_request(params(TxnKind.SALE, replace(CHIP, pin_block=block)))


def test_an_original_rrn_is_12_characters_and_an_auth_code_6() -> None:
    """A void names its original by RRN (field 37, 12 characters) and auth code (field 38,
    6 characters); an A0 reversal's auth code is 6 characters too. Other lengths are refused."""
    for rrn in ("12345678901", "1234567890123"):
        with pytest.raises(LocalProtocolError, match="RRN"):
            financial_request(params(TxnKind.VOID, orig_rrn=rrn))
    for auth in ("A1B2C", "A1B2C3D"):
        with pytest.raises(LocalProtocolError, match="auth code"):
            financial_request(params(TxnKind.VOID, orig_auth=auth))
        with pytest.raises(LocalProtocolError, match="auth code"):
            reversal_request(params(TxnKind.SALE), "A0", auth)


def test_deregistration_is_an_0820_with_60_3_009_and_no_card_or_mac() -> None:
    """Deregistration (注销) is an 0820 carrying 11, 41, 42 and 60 = 00 + batch + "009"; nothing
    else (its keys are wiped first, so no MAC)."""
    m = deregister_request("000007", TERM, "000003")
    assert (m.mti, m.fields) == ("0820", {"11": "000007", "41": "TERM0001",
                                          "42": "898440154110001", "60": "00000003009"})


def test_a_host_reply_echoes_exactly_the_fields_cup_copies() -> None:
    """The simulator's reply copies exactly 2, 3, 4, 11, 14, 25, 41, 42, 49, 60 and 61 from the
    request (whichever it carried), never card secrets (35, 52, 55...), then 39 and the extras;
    never a field 64 (the encoder adds the reply's own); only a request MTI (four digits, the
    third even) can be answered."""
    req = financial_request(params(TxnKind.VOID, CHIP))
    # An extra 64 is dropped too: the encoder computes the reply's own MAC.
    rep = response_for(req, "00", {"37": "999999999999", "64": "0123456789ABCDEF"})
    echoed = {"2", "3", "4", "11", "14", "25", "41", "42", "49", "60", "61"}
    assert rep.fields == {**{k: req.fields[k] for k in echoed}, "39": "00", "37": "999999999999"}
    assert response_for(Message("0400", {}), "00", {}).mti == "0410"
    for mti in ("0210", "0230", "021", "02000", "02a0"):
        with pytest.raises(LocalProtocolError, match="not a request MTI"):
            response_for(Message(mti, {}), "00", {})


def test_a_chip_cards_repr_counts_its_icc_bytes() -> None:
    """A CardInput in a log shows how many bytes of ICC data it holds, never the data."""
    assert "icc_data=<11 bytes>" in repr(CHIP)
    assert "icc_data=None" in repr(KEYED)


@pytest.mark.parametrize(("amount", "ok"), [(1, True), (10**12 - 1, True), (True, False),
                                            (False, False), (1.0, False), (-1, False),
                                            (10**12, False)])
def test_an_amount_is_a_whole_number_of_1_to_12_digits_fen(amount: object, ok: bool) -> None:
    """Field 4 is 1 to 999999999999 fen, a true integer: a bool (refused as no integer, even
    False), a float, a negative amount or one of 13 digits is refused before anything is
    sent."""
    p = FinancialParams(TxnKind.SALE, "000100", "000001", TERM, amount, card=SWIPE)  # type: ignore[arg-type]
    if ok:
        assert financial_request(p).fields["4"] == f"{amount:012d}"
    else:
        words = "an integer" if isinstance(amount, bool | float) else "amount"
        with pytest.raises(LocalProtocolError, match=words):
            financial_request(p)


def test_an_empty_card_sequence_is_refused() -> None:
    """A chip card's sequence (field 23) is 1-3 digits: an empty one is refused, not sent as
    000."""
    with pytest.raises(LocalProtocolError, match="card sequence"):
        financial_request(params(TxnKind.SALE, replace(CHIP, card_seq="")))


def test_a_batch_upload_carries_1_to_8_transactions() -> None:
    """One 0320 carries from 1 to 8 transactions in field 48: one is sent as "01" + its
    detail, nine are refused (the caller splits them)."""
    one = UploadItem(False, "000101", PAN, 5)
    assert batch_upload_request("000011", TERM, "000001", [one]).fields["48"].startswith("0100")
    with pytest.raises(LocalProtocolError, match="1-8 items"):
        batch_upload_request("000011", TERM, "000001", [one] * 9)
