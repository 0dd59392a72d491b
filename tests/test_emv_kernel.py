"""firmware.emv.kernel against a hand-built card (responses written here, not the simulator's):
response formats 1 and 2, 91 in CDOL2, velocity GET DATA, GPO 6985, missing data, denial codes,
the cryptogram types asked and the abort rules."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from firmware.emv import apdu, tlv
from firmware.emv import kernel as K
from firmware.emv.params import AidParams, EmvParams
from firmware.emv.tvr import Tsi, Tvr

AID = bytes.fromhex("A000000333010101")
OK = b"\x90\x00"
CDOL1 = bytes.fromhex("9F02069F03069F1A0295055F2A029A039C019F37049F21039F4E14")
CDOL2 = bytes.fromhex("8A029F37049505")
CONFIG = K.KernelConfig(ifd_serial="POS00001", merchant_name="SHOP")
TXN = K.TxnData(amount=1234, date="260315", time="101500", unpredictable_number=b"\x01\x02\x03\x04")


@dataclass
class Card:
    """A scripted card: AIP without ODA, records of one SFI, answers per command."""

    aip: bytes = b"\x1c\x00"  # CVM, terminal risk, issuer auth; no ODA
    record: dict[str, bytes] = field(default_factory=lambda: {
        "5A": bytes.fromhex("6228480000000000011F"), "5F24": bytes.fromhex("301231"),
        "5F34": b"\x01", "57": bytes.fromhex("6228480000000000011D30122010000000000F"),
        "8C": CDOL1, "8D": CDOL2, "8E": bytes(8) + bytes.fromhex("1F00"), "9F07": b"\xff\x00",
        "5F28": b"\x01\x56"})
    gpo_format1: bool = False
    ac_format1: bool = False
    gpo_sw: bytes = OK
    ac1: int = 0x80
    ac2: int = 0x40
    ext_auth_sw: bytes = OK
    sent: list[bytes] = field(default_factory=list)

    def apdu(self, c: bytes) -> bytes:
        self.sent.append(c)
        ins = c[1]
        if ins == 0xA4 and c[5:-1] == apdu.PSE_NAME:
            return b"\x6a\x82"
        if ins == 0xA4:
            if c[5:-1] != AID:
                return b"\x6a\x82"
            return tlv.encode_one("6F", tlv.encode_one("84", AID) + tlv.encode_one(
                "A5", tlv.encode([("50", b"DEBIT"), ("87", b"\x01")]))) + OK
        if ins == 0xA8:
            if self.gpo_sw != OK:
                return self.gpo_sw
            afl = b"\x08\x01\x01\x00"
            if self.gpo_format1:
                return tlv.encode_one("80", self.aip + afl) + OK
            return tlv.encode_one("77", tlv.encode([("82", self.aip), ("94", afl)])) + OK
        if ins == 0xB2:
            return tlv.encode_one("70", tlv.encode(self.record)) + OK
        if ins == 0xCA:
            tag = c[2:4].hex().upper()
            return tlv.encode_one(tag, {"9F36": b"\x00\x09", "9F13": b"\x00\x00"}[tag]) + OK
        if ins == 0xAE:
            first = sum(1 for s in self.sent if s[1] == 0xAE) == 1
            cid = self.ac1 if first else self.ac2
            atc, ac, iad = b"\x00\x09", bytes(range(8)), bytes.fromhex("0701010360000000")
            if self.ac_format1:
                return tlv.encode_one("80", bytes([cid]) + atc + ac + iad) + OK
            return tlv.encode_one("77", tlv.encode([("9F27", bytes([cid])), ("9F36", atc),
                                                    ("9F26", ac), ("9F10", iad)])) + OK
        if ins == 0x82:
            return self.ext_auth_sw
        return b"\x6d\x00"


def drive(card: Card, *, online: K.OnlineResult | None = None,
          params: EmvParams | None = None) -> K.Finished:
    params = params or EmvParams(aids=(AidParams(aid=AID),))
    k = K.ChipKernel(CONFIG, params, TXN)
    action = k.start()
    for _ in range(60):
        if isinstance(action, K.Finished):
            with pytest.raises(RuntimeError):
                k.handle(K.ApduResponse(OK))
            return action
        if isinstance(action, K.SendApdu):
            action = k.handle(K.ApduResponse(card.apdu(action.apdu)))
        elif isinstance(action, K.GoOnline):
            action = k.handle(online or K.OnlineResult("00", tlv.encode_one(
                "91", bytes(8) + b"00")))
        elif isinstance(action, K.AskOnlinePin):
            action = k.handle(K.PinResult(True))
        else:
            action = k.handle(K.Chosen(0))
    raise AssertionError("no end")


@pytest.mark.parametrize(("gpo1", "ac1"), [(False, False), (True, True), (True, False)])
def test_response_formats_1_and_2(gpo1: bool, ac1: bool) -> None:
    card = Card(gpo_format1=gpo1, ac_format1=ac1)
    f = drive(card)
    assert f.outcome == "approved"
    assert f.tags["9F26"] == bytes(range(8)) and f.tags["9F10"][3:7] == bytes.fromhex("03600000")
    assert [c[1] for c in card.sent] == [0xA4, 0xA4, 0xA4, 0xA8, 0xB2, 0xAE, 0x82, 0xAE]
    assert card.sent[5][2] == apdu.P1_ARQC and card.sent[7][2] == apdu.P1_TC
    assert f.cvm == "none" and f.tags["9F34"] == bytes.fromhex("1F0002")
    assert Tvr.ODA_NOT_PERFORMED in Tvr.from_bytes5(f.tags["95"])


def test_the_cdol1_data_carries_the_terminal_values() -> None:
    card = Card()
    drive(card)
    data = card.sent[5][5:-1]
    assert data[:6] == bytes.fromhex("000000001234") and data[12:14] == b"\x01\x56"
    assert data[14:19] == Tvr.from_bytes5(data[14:19]).to_bytes5()  # the TVR as analysed
    assert data[25:29] == b"\x01\x02\x03\x04" and data[32:52] == b"SHOP" + bytes(16)


def test_91_named_in_cdol2_goes_into_the_second_ac_without_external_authenticate() -> None:
    card = Card()
    card.record["8D"] = CDOL2 + bytes.fromhex("910A")
    arpc = bytes(range(10, 18)) + b"00"
    f = drive(card, online=K.OnlineResult("00", tlv.encode_one("91", arpc)))
    assert f.outcome == "approved"
    assert not any(c[1] == 0x82 for c in card.sent)
    assert card.sent[-1][5:-1].endswith(arpc) and card.sent[-1][5:7] == b"00"


def test_external_authenticate_failure_sets_its_tvr_bit() -> None:
    card = Card(ext_auth_sw=b"\x63\x00", ac2=0x00)
    f = drive(card)
    assert f.outcome == "declined_by_card"
    assert Tvr.ISSUER_AUTH_FAILED in Tvr.from_bytes5(f.tags["95"])
    assert Tsi.ISSUER_AUTH_PERFORMED in Tsi(int.from_bytes(f.tags["9B"], "big"))
    assert card.sent[-1][5:-1][6:11] == f.tags["95"]  # CDOL2 carries the updated TVR


def test_velocity_uses_get_data_only_when_the_card_has_limits() -> None:
    plain = Card()
    drive(plain)
    assert not any(c[1] == 0xCA for c in plain.sent)
    card = Card()
    card.record.update({"9F14": b"\x03", "9F23": b"\x05"})
    f = drive(card)
    assert [c[2:4] for c in card.sent if c[1] == 0xCA] == [b"\x9f\x36", b"\x9f\x13"]
    tvr = Tvr.from_bytes5(f.tags["95"])
    assert Tvr.UPPER_OFFLINE_LIMIT_EXCEEDED in tvr and Tvr.NEW_CARD in tvr


def test_gpo_conditions_not_satisfied_drops_the_application() -> None:
    f = drive(Card(gpo_sw=b"\x69\x85"))
    assert f.outcome == "not_accepted"
    assert "no application" in f.reason and any("conditions" in n for n in f.notes)


def test_a_gpo_error_is_a_card_error() -> None:
    assert drive(Card(gpo_sw=b"\x6f\x00")).outcome == "card_error"


def test_missing_mandatory_data_is_a_card_error() -> None:
    card = Card()
    del card.record["8C"]
    f = drive(card)
    assert f.outcome == "card_error" and "8C" in f.reason


def test_denial_codes_ask_an_aac() -> None:
    card = Card(ac1=0x00)
    params = EmvParams(aids=(AidParams(aid=AID, tac_denial=Tvr.ODA_NOT_PERFORMED.to_bytes5()),))
    f = drive(card, params=params)
    assert f.outcome == "offline_declined"
    assert card.sent[-1][2] == apdu.P1_AAC


def test_tc_to_an_arqc_request_is_a_card_error() -> None:
    assert drive(Card(ac1=0x40)).outcome == "card_error"


def test_finished_tags_never_carry_the_sensitive_ones() -> None:
    f = drive(Card())
    assert not {"57", "5A", "5F20"} & f.tags.keys()
    assert f.card is not None and "6228480000000000011" not in repr(f)


def test_abort_before_the_first_ac_finishes_at_once() -> None:
    k = K.ChipKernel(CONFIG, EmvParams(aids=(AidParams(aid=AID),)), TXN)
    assert isinstance(k.start(), K.SendApdu)
    f = k.abort()
    assert isinstance(f, K.Finished) and f.outcome == "cancelled" and f.apdu_count == 1
    with pytest.raises(RuntimeError):
        k.abort()


def test_abort_while_online_asks_an_aac_unless_the_card_is_gone() -> None:
    for present in (True, False):
        card = Card()
        k = K.ChipKernel(CONFIG, EmvParams(aids=(AidParams(aid=AID),)), TXN)
        action = k.start()
        while not isinstance(action, K.GoOnline):
            action = k.handle(K.ApduResponse(card.apdu(action.apdu)))  # type: ignore[union-attr]
        action = k.abort(card_present=present)
        if not present:
            assert isinstance(action, K.Finished) and action.outcome == "cancelled"
            continue
        assert isinstance(action, K.SendApdu) and action.apdu[:3] == b"\x80\xae\x00"
        assert action.apdu[5:7] == b"Z3"
        done = k.handle(K.ApduResponse(card.apdu(action.apdu)))
        assert isinstance(done, K.Finished) and done.outcome == "cancelled"
