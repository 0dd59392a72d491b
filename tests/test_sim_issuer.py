"""The acquirer simulator's issuer side: a real test chip card (board.sim.chipcards) makes the
ARQC from raw APDUs, the simulator checks it over loopback TCP and answers 91 (+ scripts),
and the card itself judges the answer (EXTERNAL AUTHENTICATE, the script commands, GEN AC2).
The ARPC is also recomputed here with pyemv directly, not through board.sim.emvcrypto.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyemv import ac, kd, tlv

from board.sim.acquirer import SimulatorThread
from board.sim.chipcard import EmvCard
from board.sim.chipcards import PROFILES, TEST_ISSUER, make_card
from board.sim.testkit import TEST_MID, TEST_TID, TEST_TMK, SimTerminal
from firmware.host.codec import Decoded
from firmware.host.messages import (
    CardInput,
    ChipUploadItem,
    FinancialParams,
    ScriptAdviceParams,
    TxnKind,
    chip_upload_request,
    financial_request,
    reversal_request,
    script_advice,
)

OK = b"\x90\x00"
UN = bytes.fromhex("11223344")
AMOUNT = 1234
TAGS_CDOL1 = {
    "9F02": bytes.fromhex(f"{AMOUNT:012d}"),
    "9F03": bytes(6), "9F1A": b"\x01\x56", "95": bytes(5), "5F2A": b"\x01\x56",
    "9A": bytes.fromhex("261207"), "9C": b"\x00", "9F37": UN,
}


def cmd(head: str, data: bytes = b"") -> bytes:
    return bytes.fromhex(head) + (bytes([len(data)]) + data if data else b"") + b"\x00"


def ok(card: EmvCard, apdu: bytes) -> bytes:
    r = card.apdu(apdu)
    assert r[-2:] == OK, f"{apdu[:4].hex()} -> {r[-2:].hex()}"
    return r[:-2]


@dataclass
class Online:
    """One chip transaction up to the first GENERATE AC: the card and its 55."""

    card: EmvCard
    field55: bytes
    arqc: bytes
    atc: bytes


def first_ac(card: EmvCard) -> Online:
    """SELECT, GPO, GENERATE AC asking ARQC: what a kernel does, by hand."""
    card.power_up()
    ok(card, cmd("00A40400", card.profile.apps[0].aid))
    pdol = b"\x01\x56" + bytes.fromhex(f"{AMOUNT:012d}") + UN
    g = tlv.decode(ok(card, cmd("80A80000", b"\x83" + bytes([len(pdol)]) + pdol)))["77"]
    cdol1 = b"".join(TAGS_CDOL1.values())
    r = tlv.decode(ok(card, cmd("80AE8000", cdol1)))["77"]
    assert r["9F27"] == b"\x80"
    tags = {"9F26": r["9F26"], "9F27": r["9F27"], "9F10": r["9F10"], "9F36": r["9F36"],
            "82": g["82"], **TAGS_CDOL1, "84": card.profile.apps[0].aid}
    return Online(card, tlv.encode(tags), r["9F26"], r["9F36"])


def params(t: SimTerminal, o: Online, **card_kw: object) -> FinancialParams:
    p = o.card.profile
    card = CardInput("chip", p.pan, expiry=p.expiry[:4], card_seq=p.psn,
                     icc_data=o.field55.hex(), **card_kw)  # type: ignore[arg-type]
    return FinancialParams(TxnKind.SALE, t.next_stan(), t.batch, t.term, AMOUNT, card=card)


def reply55(reply: Decoded) -> dict[str, object]:
    return tlv.decode(bytes.fromhex(reply.fields["55"]))


def our_arpc(o: Online, arc: bytes) -> bytes:
    p = o.card.profile
    mk = kd.derive_icc_mk_a(TEST_ISSUER.imk_ac, p.pan, p.psn)
    sk = kd.derive_common_sk(mk, o.atc + bytes(6))
    return ac.generate_arpc_1(sk, o.arqc, arc)


def second_ac(card: EmvCard, arc: bytes = b"00") -> bytes:
    """GEN AC2 asking TC; the card's 9F27 (40 TC, 00 AAC)."""
    r = tlv.decode(ok(card, cmd("80AE4000", arc + UN + bytes(5))))["77"]
    return r["9F27"]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorThread]:
    with SimulatorThread(tmp_path / "acquirer.db",
                         terminals=[(TEST_TID, TEST_MID, TEST_TMK)]) as s:
        yield s


@pytest.fixture
def term(sim: SimulatorThread) -> Iterator[SimTerminal]:
    with SimTerminal(sim.port) as t:
        assert t.sign_on().fields["39"] == "00"
        yield t


def chip_log(sim: SimulatorThread) -> list[dict]:
    return sim.call(sim._sim.control, {"cmd": "chip_log", "tid": TEST_TID})["chip_log"]


def test_a_good_arqc_is_approved_with_an_arpc_the_card_accepts(sim, term) -> None:
    o = first_ac(make_card("cup-credit"))
    reply = term.request(params(term, o))
    assert reply.fields["39"] == "00" and term.mac_ok(reply)
    issuer_auth = reply55(reply)["91"]
    assert issuer_auth == our_arpc(o, b"00") + b"00"
    assert ok(o.card, bytes.fromhex("008200000A") + issuer_auth) == b""
    assert second_ac(o.card) == b"\x40"  # TC
    [row] = chip_log(sim)
    assert (row["event"], row["result"], row["atc"]) == ("auth", "ok",
                                                         int.from_bytes(o.atc, "big"))
    assert row["cryptogram"] == o.arqc.hex().upper() and row["tvr"] == "0000000000"
    assert "622848" not in str(row)  # the ledger keeps no PAN for chip rows


def test_a_host_decline_still_carries_91_with_its_own_arc(sim, term) -> None:
    sim.add_rule("51", kind="sale")
    o = first_ac(make_card("cup-credit"))
    reply = term.request(params(term, o))
    assert reply.fields["39"] == "51"
    assert reply55(reply)["91"] == our_arpc(o, b"51") + b"51"


def test_an_arqc_that_does_not_verify_gets_05_no_91_and_the_ledger_says_why(sim, term) -> None:
    o = first_ac(make_card("cup-credit"))
    tags = tlv.decode(o.field55)
    tags["9F02"] = bytes.fromhex("000000009999")  # the amount the card did not sign
    reply = term.request(params(term, Online(o.card, tlv.encode(tags), o.arqc, o.atc)))
    assert reply.fields["39"] == "05" and "55" not in reply.fields
    [row] = chip_log(sim)
    assert (row["result"], row["why"]) == ("refused", "ARQC does not verify")
    assert sim.ledger.rows(TEST_TID)[0].response_code == "05"


def test_a_replayed_atc_gets_05(sim, term) -> None:
    o = first_ac(make_card("cup-credit"))
    assert term.request(params(term, o)).fields["39"] == "00"
    again = term.request(params(term, o))  # same 55 under a new STAN: a replay
    assert again.fields["39"] == "05" and "55" not in again.fields
    assert "replayed" in chip_log(sim)[-1]["why"]


def test_a_55_without_a_cdol1_value_cannot_be_verified(sim, term) -> None:
    o = first_ac(make_card("cup-credit"))
    tags = {k: v for k, v in tlv.decode(o.field55).items() if k not in ("9F37", "9A")}
    reply = term.request(params(term, Online(o.card, tlv.encode(tags), o.arqc, o.atc)))
    assert reply.fields["39"] == "05"
    assert "9A, 9F37" in chip_log(sim)[0]["why"]


def test_wrong_arpc_knob_makes_the_card_refuse_issuer_authentication(sim, term) -> None:
    sim.add_fault("wrong_arpc", mti="0200")
    o = first_ac(make_card("cup-credit"))
    reply = term.request(params(term, o))
    assert reply.fields["39"] == "00"
    issuer_auth = reply55(reply)["91"]
    assert issuer_auth != our_arpc(o, b"00") + b"00"
    assert o.card.apdu(bytes.fromhex("008200000A") + issuer_auth) == b"\x63\x00"
    assert second_ac(o.card) == b"\x00"  # AAC: issuer authentication failed


def test_block_script_knob_approves_while_the_card_will_decline(sim, term) -> None:
    sim.add_fault("script_block", mti="0200")
    o = first_ac(make_card("cup-credit"))
    reply = term.request(params(term, o))
    assert reply.fields["39"] == "00"
    found = reply55(reply)
    ok(o.card, bytes.fromhex("008200000A") + found["91"])  # type: ignore[operator]
    script = found["71"]
    assert script["9F18"] == bytes.fromhex("00000071")  # type: ignore[index]
    ok(o.card, script["86"])  # type: ignore[index]  # APPLICATION BLOCK, MAC accepted
    assert second_ac(o.card) == b"\x00"
    assert o.card.is_blocked(o.card.profile.apps[0].aid)


def test_harmless_script_knob_sends_a_72_the_card_runs_without_effect(sim, term) -> None:
    sim.add_fault("script_harmless", mti="0200")
    o = first_ac(make_card("cup-credit"))
    found = reply55(term.request(params(term, o)))
    ok(o.card, bytes.fromhex("008200000A") + found["91"])  # type: ignore[operator]
    assert "71" not in found
    assert second_ac(o.card) == b"\x40"
    ok(o.card, found["72"]["86"])  # type: ignore[index]  # after GEN AC2, as 72 says
    assert not o.card.is_blocked(o.card.profile.apps[0].aid)


def test_chip_knobs_wait_for_a_chip_request(sim, term) -> None:
    sim.add_fault("wrong_arpc")
    swiped = CardInput("swipe", "6225880000000001", track2="6225880000000001=30122010000")
    p = FinancialParams(TxnKind.SALE, term.next_stan(), term.batch, term.term, 100, card=swiped)
    assert term.request(p).fields["39"] == "00"
    o = first_ac(make_card("cup-credit"))
    assert reply55(term.request(params(term, o)))["91"] != our_arpc(o, b"00") + b"00"


def test_a_chip_reversal_books_the_atc_it_names(sim, term) -> None:
    o = first_ac(make_card("cup-credit"))
    p = params(term, o)
    assert term.request(p).fields["39"] == "00"
    rev_tags = {"95": bytes(5), "9F10": tlv.decode(o.field55)["9F10"], "9F1E": b"POS00001",
                "9F36": o.atc}
    reply = term.exchange(reversal_request(p, "06", None, icc_data=tlv.encode(rev_tags)))
    assert reply.message.mti == "0410" and reply.fields["39"] == "00"
    row = chip_log(sim)[-1]
    assert (row["event"], row["atc"]) == ("reversal", int.from_bytes(o.atc, "big"))
    assert sim.ledger.rows(TEST_TID)[0].state == "reversed"


def test_the_script_result_advice_is_acknowledged_and_booked(sim, term) -> None:
    o = first_ac(make_card("cup-credit"))
    p = params(term, o)
    approved = term.request(p)
    advice_tags = {"95": bytes(5), "9F36": o.atc, "9F26": o.arqc,
                   "DF31": bytes.fromhex("2000000071")}
    advice = ScriptAdviceParams(
        term.next_stan(), term.batch, term.term, o.card.profile.pan, AMOUNT, "052",
        tlv.encode(advice_tags), p.batch, p.stan, approved.fields["13"],
        orig_rrn=approved.fields["37"], orig_auth=approved.fields["38"])
    reply = term.exchange(script_advice(advice))
    assert (reply.message.mti, reply.fields["39"]) == ("0630", "00") and term.mac_ok(reply)
    row = chip_log(sim)[-1]
    assert (row["event"], row["detail"]) == ("script_result", "DF31=2000000071")


def test_a_chip_batch_upload_is_booked_with_its_atc(sim, term) -> None:
    o = first_ac(make_card("cup-credit"))
    p = params(term, o)
    assert term.request(p).fields["39"] == "00"
    item = ChipUploadItem(trace=p.stan, pan=o.card.profile.pan, amount=AMOUNT, pos_entry="052",
                          icc_data=o.field55, card_seq="001")
    reply = term.exchange(chip_upload_request(term.next_stan(), term.term, term.batch, item),
                          mac=False)
    assert reply.fields["39"] == "00"
    assert [u["trace"] for u in sim.ledger.uploads(TEST_TID, int(term.batch))] == [int(p.stan)]
    assert chip_log(sim)[-1]["event"] == "upload"


def test_the_test_cards_psn_reaches_field_23() -> None:
    assert all(len(p.psn) == 2 for p in PROFILES.values())
    o_params = FinancialParams(TxnKind.SALE, "000001", "000001", SimTerminal(0).term, 1,
                               card=CardInput("chip", PROFILES["cup-credit"].pan,
                                              card_seq="01", icc_data="9F360101"))
    assert financial_request(o_params).fields["23"] == "001"
