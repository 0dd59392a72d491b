"""The test chip cards of board/sim driven with raw APDUs, as a terminal would: PSE and AID
selection, GET PROCESSING OPTIONS, the records and their tags (decoded with pyemv.tlv), the
certificates recovered independently here (plain pow + SHA-1 compare, not board.sim.emvcrypto's
builders), ARQC / ARPC / TC / AAC, issuer scripts, the ATC, and each named card's behaviour."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json

import pytest
from pyemv import tlv

from board.sim import emvcrypto
from board.sim.chipcard import AID_CREDIT, AID_DEBIT, CDOL1, CDOL2, PDOL, EmvCard
from board.sim.chipcards import (
    CAPK_INDEX,
    CARD_NAMES,
    CARD_TABLE,
    PROFILES,
    RID,
    TEST_ISSUER,
    issuer_for_pan,
    magstripe_tracks,
    make_card,
    test_aid_params,
    test_capks,
)
from firmware.engine.cardclass import luhn_ok

OK = b"\x90\x00"
PSE = b"1PAY.SYS.DDF01"
UN = bytes.fromhex("11223344")
# CDOL1 values: amount 12.34, other 0, country 0156, TVR, currency 0156, date, type, UN, time,
# merchant name (20 bytes).
CDOL1_DATA = (bytes.fromhex("000000001234") + bytes(6) + b"\x01\x56" + bytes(5) + b"\x01\x56"
              + bytes.fromhex("251207") + b"\x00" + UN + bytes.fromhex("120000")
              + b"TEST MERCHANT".ljust(20))
DDA_CARDS = [n for n in CARD_NAMES if PROFILES[n].oda == "dda"]
SDA_CARDS = [n for n in CARD_NAMES if PROFILES[n].oda == "sda"]


def cmd(hexhead: str, data: bytes = b"", le: bool = True) -> bytes:
    head = bytes.fromhex(hexhead)
    body = (bytes([len(data)]) + data) if data else b""
    return head + body + (b"\x00" if le else b"")


def ok(card: EmvCard, apdu: bytes) -> bytes:
    r = card.apdu(apdu)
    assert r[-2:] == OK, f"{apdu.hex()} -> {r[-2:].hex()}"
    return r[:-2]


def select(card: EmvCard, name: bytes, nxt: bool = False) -> bytes:
    return card.apdu(cmd("00A40402" if nxt else "00A40400", name))


def gpo(card: EmvCard) -> dict:
    pdol_data = bytes.fromhex("0156") + bytes.fromhex("000000001234") + UN
    data = b"\x83" + bytes([len(pdol_data)]) + pdol_data if card.profile.pdol else b"\x83\x00"
    return tlv.decode(ok(card, cmd("80A80000", data)))["77"]


def read_all(card: EmvCard, afl: bytes) -> tuple[dict[str, bytes], bytes]:
    """Every record of the AFL flattened into one dict, and the static data to be
    authenticated (records marked for ODA, SFI 1-10: without 70 and its length)."""
    tags: dict[str, bytes] = {}
    static = b""
    for i in range(0, len(afl), 4):
        sfi, first, last, n_oda = afl[i] >> 3, afl[i + 1], afl[i + 2], afl[i + 3]
        for rec in range(first, last + 1):
            raw = ok(card, bytes([0x00, 0xB2, rec, (sfi << 3) | 4, 0x00]))
            assert raw[0] == 0x70
            tags.update(tlv.decode(raw)["70"])
            if rec < first + n_oda:
                inner = tlv.decode(raw)["70"]
                static += tlv.encode(inner)
    return tags, static


def transaction(name: str, card: EmvCard | None = None) -> tuple[EmvCard, dict, dict]:
    """Power up, select the first application, GPO, read: (card, GPO template, record tags)."""
    card = card or make_card(name)
    card.power_up()
    r = select(card, PROFILES[name].apps[0].aid)
    assert r[-2:] == OK
    g = gpo(card)
    tags, _ = read_all(card, g["94"])
    return card, g, tags


def gen_ac(card: EmvCard, p1: int, data: bytes) -> tuple[bytes, dict]:
    r = card.apdu(cmd(f"80AE{p1:02X}00", data))
    return r[-2:], (tlv.decode(r[:-2])["77"] if r[-2:] == OK else {})


def check_ac(card: EmvCard, resp: dict, dol_data: bytes, aip: bytes) -> None:
    """The cryptogram verifies with the issuer's keys (the host's computation)."""
    p = card.profile
    iad = resp["9F10"]
    assert len(iad) == 8 and iad[:3] == b"\x07\x01\x01" and iad[7] == 0
    sk = emvcrypto.session_key(TEST_ISSUER.imk_ac, p.pan, p.psn, resp["9F36"])
    assert resp["9F26"] == emvcrypto.cryptogram(sk, dol_data + aip + resp["9F36"] + iad[3:7])


def online(card: EmvCard, g: dict, arc: bytes = b"00") -> tuple[dict, bytes]:
    """GEN AC1 asking ARQC; returns its answer and the session key."""
    sw, resp = gen_ac(card, 0x80, CDOL1_DATA)
    assert sw == OK and resp["9F27"] == b"\x80"
    check_ac(card, resp, CDOL1_DATA, g["82"])
    p = card.profile
    sk = emvcrypto.session_key(TEST_ISSUER.imk_ac, p.pan, p.psn, resp["9F36"])
    return resp, sk


def cdol2(arc: bytes = b"00") -> bytes:
    return arc + UN + bytes(5)


# --- power, selection ------------------------------------------------------------------------

def test_atr_is_a_t1_atr_with_a_correct_check_byte() -> None:
    card = make_card("cup-debit")
    atr = card.power_up()
    assert atr == card.atr and atr[0] == 0x3B
    x = 0
    for b in atr[1:]:
        x ^= b
    assert x == 0, "TCK: the XOR of T0 .. TCK is 0"
    assert atr[3] & 0x0F == 1, "TD2 says T=1"


def test_pse_lists_one_application_with_its_priority() -> None:
    card = make_card("cup-debit")
    card.power_up()
    fci = tlv.decode(ok(card, cmd("00A40400", PSE)))
    assert fci["6F"]["84"] == PSE and fci["6F"]["A5"]["88"] == b"\x01"
    entry = tlv.decode(ok(card, cmd("00B2010C", le=True)))["70"]["61"]
    assert entry["4F"] == AID_DEBIT and entry["87"] == b"\x01"
    assert card.apdu(cmd("00B2020C")) == b"\x6a\x83"


def test_two_apps_lists_debit_and_credit_with_priorities_and_confirmation() -> None:
    card = make_card("two-apps")
    card.power_up()
    ok(card, cmd("00A40400", PSE))
    e1 = tlv.decode(ok(card, cmd("00B2010C")))["70"]["61"]
    e2 = tlv.decode(ok(card, cmd("00B2020C")))["70"]["61"]
    assert (e1["4F"], e1["87"]) == (AID_DEBIT, b"\x81")
    assert (e2["4F"], e2["87"]) == (AID_CREDIT, b"\x82")
    assert card.apdu(cmd("00B2030C")) == b"\x6a\x83"
    # Partial selection by the RID walks both applications, then 6A82.
    first = tlv.decode(select(card, RID)[:-2])["6F"]
    assert first["84"] == AID_DEBIT and first["A5"]["87"] == b"\x81"
    assert tlv.decode(select(card, RID, nxt=True)[:-2])["6F"]["84"] == AID_CREDIT
    assert select(card, RID, nxt=True) == b"\x6a\x82"
    # Each application has its own CVM list and ODA method.
    card, g, tags = transaction("two-apps", card)
    assert g["82"][0] & 0x20 and tags["8E"].endswith(bytes.fromhex("42031E031F00"))
    card.power_up()
    select(card, AID_CREDIT)
    g = gpo(card)
    tags, _ = read_all(card, g["94"])
    assert g["82"][0] & 0x40 and tags["8E"].endswith(bytes.fromhex("1E031F00"))
    assert "93" in tags and "9F46" not in tags


def test_no_pse_card_answers_6a82_and_is_selected_from_the_aid_list() -> None:
    card = make_card("no-pse")
    card.power_up()
    assert select(card, PSE) == b"\x6a\x82"
    fci = tlv.decode(ok(card, cmd("00A40400", AID_DEBIT[:7])))["6F"]
    assert fci["84"] == AID_DEBIT and "9F38" not in fci["A5"], "empty PDOL"
    assert select(card, AID_DEBIT[:7], nxt=True) == b"\x6a\x82"
    assert select(card, AID_CREDIT) == b"\x6a\x82"
    g = gpo(card)      # 83 00
    assert g["94"]


def test_fci_carries_the_contract_pdol_label_and_preferred_name() -> None:
    card = make_card("cup-debit")
    card.power_up()
    a5 = tlv.decode(ok(card, cmd("00A40400", AID_DEBIT)))["6F"]["A5"]
    assert a5["9F38"] == PDOL and a5["50"] == b"UnionPay Debit"
    assert a5["9F12"].decode() == "银联借记卡"


# --- records ---------------------------------------------------------------------------------

REQUIRED = {"5A", "5F24", "5F25", "57", "5F34", "5F28", "5F30", "9F07", "9F08", "9F0D", "9F0E",
            "9F0F", "8C", "8D", "8E", "8F", "90", "92", "9F32", "9F4A"}


@pytest.mark.parametrize("name", CARD_NAMES)
def test_records_carry_the_contract_tags(name: str) -> None:
    _card, g, tags = transaction(name)
    p = PROFILES[name]
    assert len(g["82"]) == 2 and g["82"][0] & 0x04, "issuer authentication supported"
    assert set(tags) >= REQUIRED
    assert tags["8C"] == CDOL1 and tags["8D"] == CDOL2 and tags["9F4A"] == b"\x82"
    pan = tags["5A"].hex().rstrip("f")
    assert pan == p.pan and len(pan) == 19 and pan.startswith("622848") and luhn_ok(pan)
    assert tags["5F30"].hex()[1] == "2", "service code 2xx: a chip card"
    track2 = tags["57"].hex().upper().rstrip("F").replace("D", "=")
    assert track2 == magstripe_tracks(name) and track2[:19] == pan
    assert magstripe_tracks(name)[24:27] in {"220", "201"}
    assert tags["5F34"] == bytes.fromhex(p.psn)
    if p.oda == "dda":
        assert g["82"][0] & 0x20 and {"9F46", "9F47", "9F48", "9F49"} <= set(tags)
        assert "93" not in tags
    else:
        assert g["82"][0] & 0x40 and "93" in tags and "9F46" not in tags


def test_every_card_has_a_distinct_pan_and_a_table_row() -> None:
    pans = [PROFILES[n].pan for n in CARD_NAMES]
    assert len(set(pans)) == len(pans)
    assert [row.name for row in CARD_TABLE] == list(CARD_NAMES)
    assert {"cup-debit", "cup-credit", "offline-decline", "bad-cert", "bad-sda", "expired",
            "two-apps", "declines-2nd", "no-pse"} <= set(CARD_NAMES)
    for pan in pans:
        assert issuer_for_pan(pan) is TEST_ISSUER
    assert issuer_for_pan("6222021000000000017") is None


def test_cvm_lists_say_online_pin_or_signature() -> None:
    _, _, debit = transaction("cup-debit")
    _, _, credit = transaction("cup-credit")
    assert debit["8E"] == bytes(8) + bytes.fromhex("42031E031F00")
    assert credit["8E"] == bytes(8) + bytes.fromhex("1E031F00")


def test_expired_card_is_past_its_date() -> None:
    _, _, tags = transaction("expired")
    assert tags["5F24"] == bytes.fromhex("240131")
    expiry = datetime.date(2024, 1, 31)
    assert expiry < datetime.date.today()
    _, _, good = transaction("cup-debit")
    assert good["5F24"] > bytes.fromhex(datetime.date.today().strftime("%y%m%d"))


# --- certificates, recovered independently -------------------------------------------------

def _recover(sig: bytes, modulus: bytes, exponent: bytes) -> bytes:
    n, e = int.from_bytes(modulus, "big"), int.from_bytes(exponent, "big")
    assert len(sig) == len(modulus)
    return pow(int.from_bytes(sig, "big"), e, n).to_bytes(len(modulus), "big")


def _issuer_key(tags: dict[str, bytes]) -> tuple[bytes, bytes]:
    """EMV Book 2 6.3 with the test CAPK: the issuer public key (modulus, exponent)."""
    capk = test_capks()[0]
    assert tags["8F"] == bytes([capk.index])
    rec = _recover(tags["90"], capk.modulus, capk.exponent)
    assert rec[0] == 0x6A and rec[1] == 0x02 and rec[-1] == 0xBC
    n_ca = len(capk.modulus)
    assert rec[11] == 0x01 and rec[12] == 0x01    # SHA-1, RSA
    length, exp_len = rec[13], rec[14]
    hashed = rec[1:n_ca - 21] + tags.get("92", b"") + tags["9F32"]
    assert hashlib.sha1(hashed).digest() == rec[n_ca - 21:n_ca - 1]
    pan_digits = tags["5A"].hex()
    issuer_id = rec[2:6].hex().rstrip("f")
    assert pan_digits.startswith(issuer_id) and len(issuer_id) >= 3
    modulus = (rec[15:n_ca - 21] + tags.get("92", b""))[:length]
    assert len(modulus) == length and exp_len == len(tags["9F32"])
    return modulus, tags["9F32"]


def _icc_key(tags: dict[str, bytes], static: bytes, issuer: tuple[bytes, bytes]) -> bytes:
    """EMV Book 2 6.4: the ICC public key modulus, or AssertionError."""
    rec = _recover(tags["9F46"], *issuer)
    n_i = len(issuer[0])
    assert rec[0] == 0x6A and rec[1] == 0x04 and rec[-1] == 0xBC, "certificate header/trailer"
    hashed = rec[1:n_i - 21] + tags.get("9F48", b"") + tags["9F47"] + static
    assert hashlib.sha1(hashed).digest() == rec[n_i - 21:n_i - 1], "certificate hash"
    assert rec[2:12].hex().rstrip("f") == tags["5A"].hex().rstrip("f")
    length = rec[19]
    return (rec[21:n_i - 21] + tags.get("9F48", b""))[:length]


def _check_ssad(tags: dict[str, bytes], static: bytes, issuer: tuple[bytes, bytes]) -> None:
    rec = _recover(tags["93"], *issuer)
    n_i = len(issuer[0])
    assert rec[0] == 0x6A and rec[1] == 0x03 and rec[-1] == 0xBC, "SSAD header/trailer"
    assert rec[2] == 0x01 and rec[5:n_i - 21] == b"\xbb" * (n_i - 26), "SHA-1, pad pattern"
    assert hashlib.sha1(rec[1:n_i - 21] + static).digest() == rec[n_i - 21:n_i - 1], "SSAD hash"


def _static(name: str) -> tuple[EmvCard, dict, dict, bytes]:
    card = make_card(name)
    card.power_up()
    select(card, PROFILES[name].apps[0].aid)
    g = gpo(card)
    tags, static = read_all(card, g["94"])
    return card, g, tags, static + g["82"]   # 9F4A = 82: the AIP ends the static data


def test_capk_check_value_is_the_sha1_of_the_key() -> None:
    (capk,) = test_capks()
    assert capk.rid == RID and capk.index == CAPK_INDEX and capk.exponent == b"\x03"
    assert len(capk.modulus) == 176
    assert capk.check_value == hashlib.sha1(
        capk.rid + bytes([capk.index]) + capk.modulus + capk.exponent).digest()
    assert {a.aid for a in test_aid_params()} == {AID_DEBIT, AID_CREDIT}


@pytest.mark.parametrize("name", [n for n in DDA_CARDS if n != "bad-cert"])
def test_dda_certificates_recover_and_the_signature_verifies(name: str) -> None:
    card, _, tags, static = _static(name)
    issuer = _issuer_key(tags)
    assert len(issuer[0]) == 144
    icc = _icc_key(tags, static, issuer)
    assert len(icc) == 128
    sdad = tlv.decode(ok(card, cmd("00880000", UN)))["77"]["9F4B"]
    rec = _recover(sdad, icc, tags["9F47"])
    assert rec[0] == 0x6A and rec[1] == 0x05 and rec[-1] == 0xBC
    assert hashlib.sha1(rec[1:128 - 21] + UN).digest() == rec[128 - 21:127]
    assert hashlib.sha1(rec[1:128 - 21] + b"\x00" * 4).digest() != rec[128 - 21:127]


@pytest.mark.parametrize("name", [n for n in SDA_CARDS if n != "bad-sda"])
def test_sda_signed_static_data_verifies(name: str) -> None:
    card, _, tags, static = _static(name)
    _check_ssad(tags, static, _issuer_key(tags))
    assert card.apdu(cmd("00880000", UN)) == b"\x6d\x00", "no INTERNAL AUTHENTICATE for SDA"


def test_bad_cert_card_icc_certificate_does_not_recover() -> None:
    _, _, tags, static = _static("bad-cert")
    issuer = _issuer_key(tags)             # the issuer certificate itself is good
    with pytest.raises(AssertionError, match="certificate"):
        _icc_key(tags, static, issuer)


def test_bad_sda_card_hash_does_not_match() -> None:
    _, _, tags, static = _static("bad-sda")
    with pytest.raises(AssertionError, match="SSAD hash"):
        _check_ssad(tags, static, _issuer_key(tags))


def test_static_data_tampering_breaks_the_icc_certificate() -> None:
    _, _, tags, static = _static("cup-debit")
    issuer = _issuer_key(tags)
    with pytest.raises(AssertionError, match="certificate hash"):
        _icc_key(tags, static[:-2] + bytes([static[-2] ^ 1]) + static[-1:], issuer)


# --- cryptograms, issuer authentication, scripts -------------------------------------------

def test_arqc_verifies_and_arpc_then_tc() -> None:
    card, g, _ = transaction("cup-debit")
    arqc, sk = online(card, g)
    cvr = arqc["9F10"][3:7]
    assert cvr[0] == 0x03 and cvr[1] & 0x30 == 0x20, "CVR: ARQC at GEN AC1"
    ok(card, cmd("00820000", emvcrypto.arpc(sk, arqc["9F26"], b"00") + b"00", le=False))
    sw, tc = gen_ac(card, 0x40, cdol2())
    assert sw == OK and tc["9F27"] == b"\x40" and tc["9F36"] == arqc["9F36"]
    check_ac(card, tc, cdol2(), g["82"])
    assert tc["9F10"][4] & 0xC0 == 0x40, "CVR: TC at GEN AC2"
    # The transaction is over: no third GENERATE AC.
    assert gen_ac(card, 0x40, cdol2())[0] == b"\x69\x85"


def test_wrong_arpc_is_refused_and_the_card_declines() -> None:
    card, g, _ = transaction("cup-debit")
    arqc, sk = online(card, g)
    wrong = bytearray(emvcrypto.arpc(sk, arqc["9F26"], b"00"))
    wrong[0] ^= 1
    assert card.apdu(cmd("00820000", bytes(wrong) + b"00", le=False)) == b"\x63\x00"
    # Only one EXTERNAL AUTHENTICATE per transaction.
    right = emvcrypto.arpc(sk, arqc["9F26"], b"00") + b"00"
    assert card.apdu(cmd("00820000", right, le=False)) == b"\x69\x85"
    sw, resp = gen_ac(card, 0x40, cdol2())
    assert sw == OK and resp["9F27"] == b"\x00"
    assert resp["9F10"][4] & 0x08, "CVR: issuer authentication failed"
    check_ac(card, resp, cdol2(), g["82"])


def test_approve_anyway_knob_gives_tc_without_issuer_authentication() -> None:
    from board.sim.emvcrypto import load_key
    profile = dataclasses.replace(PROFILES["cup-debit"], approve_without_issuer_auth=True)
    card = EmvCard(profile, TEST_ISSUER, load_key("ca_80_1408"))
    card, g, _ = transaction("cup-debit", card)
    online(card, g)
    assert gen_ac(card, 0x40, cdol2())[1]["9F27"] == b"\x40"


@pytest.mark.parametrize("case", ["no_external_auth", "arc_declined", "aac_asked"])
def test_second_gen_ac_answers_aac(case: str) -> None:
    card, g, _ = transaction("cup-debit")
    arqc, sk = online(card, g)
    arc = b"05" if case == "arc_declined" else b"00"
    if case != "no_external_auth":
        ok(card, cmd("00820000", emvcrypto.arpc(sk, arqc["9F26"], arc) + arc, le=False))
    sw, resp = gen_ac(card, 0x00 if case == "aac_asked" else 0x40, cdol2(arc))
    assert sw == OK and resp["9F27"] == b"\x00"
    check_ac(card, resp, cdol2(arc), g["82"])


def test_first_gen_ac_rules_tc_asked_gives_arqc_aac_asked_gives_aac() -> None:
    card, g, _ = transaction("cup-credit")
    sw, resp = gen_ac(card, 0x40, CDOL1_DATA)
    assert sw == OK
    assert resp["9F27"] == b"\x80", "a CUP card never approves offline"
    check_ac(card, resp, CDOL1_DATA, g["82"])
    card, g, _ = transaction("cup-credit", card)
    _sw, resp = gen_ac(card, 0x00, CDOL1_DATA)
    assert resp["9F27"] == b"\x00"
    check_ac(card, resp, CDOL1_DATA, g["82"])
    assert gen_ac(card, 0x40, cdol2())[0] == b"\x69\x85", "no GEN AC2 after an AAC"
    assert card.apdu(cmd("00820000", bytes(10), le=False)) == b"\x69\x85"


def test_offline_decline_card_answers_aac_to_an_arqc_request() -> None:
    card, g, _ = transaction("offline-decline")
    sw, resp = gen_ac(card, 0x80, CDOL1_DATA)
    assert sw == OK and resp["9F27"] == b"\x00"
    check_ac(card, resp, CDOL1_DATA, g["82"])


def test_declines_2nd_card_answers_aac_after_a_good_arpc() -> None:
    card, g, _ = transaction("declines-2nd")
    arqc, sk = online(card, g)
    ok(card, cmd("00820000", emvcrypto.arpc(sk, arqc["9F26"], b"00") + b"00", le=False))
    assert gen_ac(card, 0x40, cdol2())[1]["9F27"] == b"\x00"


def _script(kind: str, card: EmvCard, arqc: dict, *, break_mac: bool = False) -> bytes:
    p = card.profile
    sk = emvcrypto.smi_session_key(TEST_ISSUER.imk_smi, p.pan, p.psn, arqc["9F36"])
    command = bytearray(emvcrypto.script_command(kind, sk, arqc["9F36"], arqc["9F26"]))
    if break_mac:
        command[-1] ^= 1
    return card.apdu(bytes(command))


def test_script_blocks_the_application_then_aac_and_no_more_transactions(tmp_path) -> None:
    card, g, _ = transaction("cup-debit")
    arqc, sk = online(card, g)
    assert _script("block", card, arqc, break_mac=True) == b"\x69\x88"
    assert not card.is_blocked(AID_DEBIT)
    assert _script("block", card, arqc) == OK
    ok(card, cmd("00820000", emvcrypto.arpc(sk, arqc["9F26"], b"00") + b"00", le=False))
    _sw, resp = gen_ac(card, 0x40, cdol2())
    assert resp["9F27"] == b"\x00", "blocked by the 71 script: AAC although 39 = 00"
    assert resp["9F10"][6] >> 4 == 1, "CVR: one script command processed"
    assert resp["9F10"][5] & 0x10, "CVR: an earlier script command failed"
    card.power_up()
    r = select(card, AID_DEBIT)
    assert r[-2:] == b"\x62\x83", "selected file invalidated"
    assert card.apdu(cmd("80A80000", b"\x83\x0c" + bytes(12))) == b"\x69\x85"


def test_unblock_script_lifts_the_block() -> None:
    card, g, _ = transaction("cup-credit")
    arqc, sk = online(card, g)
    assert _script("block", card, arqc) == OK
    assert _script("unblock", card, arqc) == OK
    ok(card, cmd("00820000", emvcrypto.arpc(sk, arqc["9F26"], b"00") + b"00", le=False))
    assert gen_ac(card, 0x40, cdol2())[1]["9F27"] == b"\x40"


def test_script_before_any_arqc_is_refused() -> None:
    card, _, _ = transaction("cup-debit")
    assert card.apdu(bytes.fromhex("841E000004") + bytes(4)) == b"\x69\x85"


def test_atc_increases_per_first_gen_ac_and_persists(tmp_path) -> None:
    state = tmp_path / "card.json"
    card = make_card("cup-credit", state_path=state)
    seen = []
    for _ in range(3):
        card, g, _ = transaction("cup-credit", card)
        assert ok(card, cmd("80CA9F36")) == bytes.fromhex("9F3602") + len(seen).to_bytes(2, "big")
        resp, _ = online(card, g)
        seen.append(int.from_bytes(resp["9F36"], "big"))
        card.power_down()
    assert seen == [1, 2, 3]
    # A new object on the same state file (a restarted vpcd card) goes on from there.
    again = make_card("cup-credit", state_path=state)
    card, g, _ = transaction("cup-credit", again)
    assert online(card, g)[0]["9F36"] == b"\x00\x04"
    saved = state.read_text()
    assert PROFILES["cup-credit"].pan not in saved and PROFILES["cup-credit"].pin not in saved
    assert set(json.loads(saved)) == {"atc", "pin_tries", "last_online_atc", "blocked",
                                      "online_not_completed"}, "counters only"
    assert PROFILES["cup-credit"].pan not in repr(card) + repr(card.profile)


def test_get_data_and_verify_pin_try_counter() -> None:
    card, _, _ = transaction("cup-debit")
    assert ok(card, cmd("80CA9F17")) == bytes.fromhex("9F170103")
    assert ok(card, cmd("80CA9F13")) == bytes.fromhex("9F13020000")
    assert card.apdu(cmd("80CA9F99")) == b"\x6a\x88"

    def block(pin: str) -> bytes:
        return bytes.fromhex(f"2{len(pin):X}{pin}".ljust(16, "F"))
    assert card.apdu(cmd("00200080", block("1111"), le=False)) == b"\x63\xc2"
    assert ok(card, cmd("80CA9F17")) == bytes.fromhex("9F170102")
    assert card.apdu(cmd("00200080", block("123456"), le=False)) == OK
    assert ok(card, cmd("80CA9F17")) == bytes.fromhex("9F170103")
    for left in (2, 1, 0):
        assert card.apdu(cmd("00200080", block("0000"), le=False)) == bytes([0x63, 0xC0 | left])
    assert card.apdu(cmd("00200080", block("123456"), le=False)) == b"\x69\x83"


def test_error_status_words() -> None:
    card = make_card("cup-debit")
    card.power_up()
    assert card.apdu(cmd("80A80000", b"\x83\x00")) == b"\x69\x85", "GPO before SELECT"
    assert card.apdu(bytes.fromhex("00B2011C00")) == b"\x69\x85", "READ RECORD before SELECT"
    assert card.apdu(cmd("00CC0000")) == b"\x6d\x00"
    assert card.apdu(cmd("80A40400", AID_DEBIT)) == b"\x6e\x00"
    assert card.apdu(bytes.fromhex("00A4040008") + AID_DEBIT[:5]) == b"\x67\x00", "Lc too long"
    assert select(card, bytes.fromhex("A000000999")) == b"\x6a\x82"
    ok(card, cmd("00A40400", AID_DEBIT))
    assert card.apdu(cmd("80A80000", b"\x83\x02\x01\x56")) == b"\x67\x00", "PDOL data short"
    assert card.apdu(bytes.fromhex("00B2015C00")) == b"\x6a\x82", "no SFI 11"
    assert card.apdu(bytes.fromhex("00B2090C00")) == b"\x6a\x83", "no record 9"
    assert gen_ac(card, 0x80, CDOL1_DATA)[0] == b"\x69\x85", "GEN AC before GPO"
    gpo(card)
    assert card.apdu(cmd("80A80000", b"\x83\x0c" + bytes(12))) == b"\x69\x85", "GPO twice"
    assert gen_ac(card, 0x80, CDOL1_DATA[:-1])[0] == b"\x67\x00"
    assert card.apdu(cmd("00820000", bytes(10), le=False)) == b"\x69\x85", "no ARQC yet"
    assert card.atc == 0, "a refused GEN AC does not count"


def test_the_host_rebuilds_the_arqc_input_from_tags() -> None:
    """What the host simulator does with field 55: split into tags, ac_input, cryptogram."""
    card, g, _ = transaction("cup-debit")
    arqc, sk = online(card, g)
    values, pos = {}, 0
    for tag, length in emvcrypto.parse_dol(CDOL1):
        values[tag] = CDOL1_DATA[pos:pos + length]
        pos += length
    field55 = {**values, "82": g["82"], **arqc}
    assert emvcrypto.cryptogram(sk, emvcrypto.ac_input(field55)) == arqc["9F26"]
    # 9F21 and 9F4E are in CDOL1: a host without them cannot verify the ARQC.
    short = {k: v for k, v in field55.items() if k != "9F4E"}
    assert emvcrypto.cryptogram(sk, emvcrypto.ac_input(short)) != arqc["9F26"]
    with pytest.raises(ValueError, match="9F02"):
        emvcrypto.ac_input({**field55, "9F02": b"\x12\x34"})


def test_a_card_pulled_while_online_says_so_in_the_next_cvr() -> None:
    card, g, _ = transaction("cup-debit")
    first, _ = online(card, g)
    assert not first["9F10"][5] & 0x80
    card.power_down()                      # pulled between the two GENERATE ACs
    card, g, _ = transaction("cup-debit", card)
    second, _ = online(card, g)
    assert second["9F10"][5] & 0x80, "CVR: last online transaction not completed"
    assert int.from_bytes(second["9F36"], "big") == int.from_bytes(first["9F36"], "big") + 1


def test_emvcrypto_follows_the_contract_derivations() -> None:
    """The shared helpers are the contract's pyemv calls, not just self-consistent."""
    from pyemv import ac, kd, sm
    imk, pan, atc = TEST_ISSUER.imk_ac, PROFILES["cup-debit"].pan, 0x0102
    mk = kd.derive_icc_mk_a(imk, pan, "01")
    sk = kd.derive_common_sk(mk, b"\x01\x02" + bytes(6))
    assert emvcrypto.session_key(imk, pan, "01", atc) == sk
    assert emvcrypto.session_key(imk, pan, "001", b"\x01\x02") == sk, "field 23 form"
    assert emvcrypto.cryptogram(sk, b"data") == ac.generate_ac(sk, b"data", ac.PaddingType.EMV)
    arqc = bytes(range(8))
    assert emvcrypto.arpc(sk, arqc, b"00") == ac.generate_arpc_1(sk, arqc, b"00")
    smi = emvcrypto.smi_session_key(TEST_ISSUER.imk_smi, pan, "01", atc)
    assert smi == kd.derive_common_sk(kd.derive_icc_mk_a(TEST_ISSUER.imk_smi, pan, "01"),
                                      b"\x01\x02" + bytes(6))
    header = bytes.fromhex("841E000004")
    mac = sm.generate_command_mac(smi, header + b"\x01\x02" + arqc, length=4)
    assert emvcrypto.script_command("block", smi, atc, arqc) == header + mac
    assert emvcrypto.script_command("unblock", smi, atc, arqc)[:5] == bytes.fromhex("8418000004")
