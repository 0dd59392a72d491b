"""The kernel against every test chip card of board.sim.chipcards, with a host in the test that
checks the ARQC as the acquirer simulator does (board.sim.emvcrypto): outcome, TVR, TSI, CVM,
DF31, ATC, and the APDU count per transaction."""

from __future__ import annotations

import pytest

from board.sim import chipcards, emvcrypto
from firmware.emv import field55, tlv
from firmware.emv import kernel as K
from firmware.emv.tvr import Tsi, Tvr
from tests.emvkit import Host, run

# name -> (outcome, cvm, TVR bits that must be set, TVR bits that must not be)
ODA_BITS = Tvr.ODA_NOT_PERFORMED | Tvr.SDA_FAILED | Tvr.DDA_FAILED | Tvr.ICC_DATA_MISSING
EXPECTED: dict[str, tuple[str, str | None, Tvr, Tvr]] = {
    "cup-debit": ("approved", "online_pin", Tvr.ONLINE_PIN_ENTERED | Tvr.FLOOR_LIMIT_EXCEEDED,
                  ODA_BITS),
    "cup-credit": ("approved", "signature", Tvr.FLOOR_LIMIT_EXCEEDED, ODA_BITS),
    "offline-decline": ("offline_declined", "signature", Tvr(0), Tvr.ISSUER_AUTH_FAILED),
    "bad-cert": ("approved", "signature", Tvr.DDA_FAILED, Tvr.SDA_FAILED),
    "bad-sda": ("approved", "signature", Tvr.SDA_FAILED, Tvr.DDA_FAILED),
    "expired": ("not_accepted", None, Tvr.EXPIRED_APPLICATION, Tvr(0)),
    "two-apps": ("approved", "online_pin", Tvr.ONLINE_PIN_ENTERED, ODA_BITS),
    "declines-2nd": ("declined_by_card", "signature", Tvr(0), Tvr.ISSUER_AUTH_FAILED),
    "no-pse": ("approved", "online_pin", Tvr.ONLINE_PIN_ENTERED, ODA_BITS),
}
APDU_COUNTS: dict[str, int] = {}


def test_every_card_has_an_expectation() -> None:
    assert set(EXPECTED) == set(chipcards.CARD_NAMES)


@pytest.mark.parametrize("name", chipcards.CARD_NAMES)
def test_a_sale_with_each_test_card(name: str) -> None:
    outcome, method, must, must_not = EXPECTED[name]
    host = Host()
    card = chipcards.make_card(name)
    r = run(card, host=host)
    f = r.finished
    assert (f.outcome, f.cvm) == (outcome, method), f
    tvr = Tvr.from_bytes5(f.tags["95"])
    assert tvr & must == must and not tvr & must_not, f"TVR {f.tags['95'].hex()}"
    assert "DF31" not in f.tags
    assert not {"57", "5A", "5F20"} & f.tags.keys()
    APDU_COUNTS[name] = f.apdu_count
    assert f.apdu_count == len(r.apdus)
    print(f"{name}: {f.outcome}, {f.apdu_count} APDUs, TVR {f.tags['95'].hex()}, "
          f"TSI {f.tags['9B'].hex()}")
    if outcome == "not_accepted":
        assert r.went_online is None and not any(a[1] == 0xAE for a in r.apdus)
        return
    assert f.tags["9F36"] == b"\x00\x01" and card.atc == 1  # a fresh card's first cryptogram
    tsi = Tsi(int.from_bytes(f.tags["9B"], "big"))
    assert Tsi.CARD_RISK_PERFORMED in tsi and Tsi.TERMINAL_RISK_PERFORMED in tsi
    if outcome == "offline_declined":
        assert r.went_online is None and f.tags["9F27"][0] & 0xC0 == 0x00
        return
    assert r.went_online is not None
    assert host.arqc_ok is True  # the host's check of the ARQC in request_55
    assert Tsi.ISSUER_AUTH_PERFORMED in tsi
    if outcome == "approved":
        assert f.tags["9F27"][0] & 0xC0 == 0x40
    else:
        assert f.tags["9F27"][0] & 0xC0 == 0x00 and f.tags["8A"] == b"00"
        assert "9F36" in dict(tlv.items(field55.reversal_55(f.tags)))


def test_the_request_55_is_the_cup_list_in_order_without_sensitive_tags() -> None:
    r = run(chipcards.make_card("cup-debit"))
    assert r.went_online is not None
    tags = [t for t, _ in tlv.items(r.went_online.field55)]
    assert tags == [t for t in field55.REQUEST_TAGS if t in tags]
    assert {"9F26", "9F27", "9F10", "9F37", "9F36", "95", "9A", "9C", "9F02", "5F2A", "82",
            "9F1A", "9F03", "9F33", "9F34", "9F35", "9F1E", "84", "9F09"} <= set(tags)
    assert not {"57", "5A", "5F20"} & set(tags)
    card = r.went_online
    profile = chipcards.PROFILES["cup-debit"]
    assert (card.pan, card.card_seq, card.cvm) == (profile.pan, "001", "online_pin")
    assert card.track2.startswith(profile.pan + "=") and len(card.service_code) == 3
    assert profile.pan not in repr(card) and card.track2 not in repr(card)


def test_two_applications_are_offered_in_priority_order_and_either_can_be_chosen() -> None:
    r = run(chipcards.make_card("two-apps"), choose=1)
    offer = next(a for a in r.actions if isinstance(a, K.ChooseApplication))
    assert [c.aid_hex for c in offer.candidates] == ["A000000333010101", "A000000333010102"]
    assert [c.priority for c in offer.candidates] == [1, 2]
    assert all(c.confirm for c in offer.candidates)
    assert r.finished.outcome == "approved" and r.finished.cvm == "signature"
    assert r.finished.tags["84"].hex().upper() == "A000000333010102"


def test_a_single_application_is_selected_without_asking() -> None:
    r = run(chipcards.make_card("cup-credit"))
    assert not any(isinstance(a, K.ChooseApplication) for a in r.actions)


def test_a_wrong_arpc_fails_issuer_authentication_and_the_card_declines() -> None:
    r = run(chipcards.make_card("cup-credit"), host=Host(wrong_arpc=True))
    f = r.finished
    assert f.outcome == "declined_by_card"
    assert Tvr.ISSUER_AUTH_FAILED in Tvr.from_bytes5(f.tags["95"])
    assert Tsi.ISSUER_AUTH_PERFORMED in Tsi(int.from_bytes(f.tags["9B"], "big"))


def _script(template: str, kind: str, script_id: bytes, *, bad_mac: bool = False):
    def build(sk_smi: bytes, atc: bytes, arqc: bytes) -> bytes:
        command = emvcrypto.script_command(kind, sk_smi, atc, arqc)  # type: ignore[arg-type]
        if bad_mac:
            command = command[:-1] + bytes([command[-1] ^ 1])
        return tlv.encode_one(template, tlv.encode([("9F18", script_id), ("86", command)]))
    return build


def test_a_71_block_script_runs_before_the_second_ac_and_the_card_then_declines() -> None:
    card = chipcards.make_card("cup-credit")
    r = run(card, host=Host(scripts=_script("71", "block", b"\x00\x00\x00\x07")))
    f = r.finished
    assert f.outcome == "declined_by_card"
    assert f.tags["DF31"] == b"\x20\x00\x00\x00\x07"
    assert Tsi.SCRIPT_PERFORMED in Tsi(int.from_bytes(f.tags["9B"], "big"))
    block = next(i for i, a in enumerate(r.apdus) if a[:2] == b"\x84\x1e")
    assert r.apdus[block + 1][:2] == b"\x80\xae"  # the second GEN AC after the script
    # next time: the blocked application is skipped, the card is not accepted in words
    again = run(card)
    assert again.finished.outcome == "not_accepted"
    assert "blocked" in again.finished.reason


def test_a_72_script_runs_after_the_second_ac() -> None:
    r = run(chipcards.make_card("cup-credit"),
            host=Host(scripts=_script("72", "unblock", b"\x00\x00\x00\x09")))
    f = r.finished
    assert f.outcome == "approved" and f.tags["DF31"] == b"\x20\x00\x00\x00\x09"
    assert r.apdus[-1][:2] == b"\x84\x18" and r.apdus[-2][:2] == b"\x80\xae"
    assert "9F36" not in dict(tlv.items(field55.reversal_55(f.tags)))
    assert "DF31" in dict(tlv.items(field55.script_advice_55(f.tags)))


@pytest.mark.parametrize(("template", "bit"), [("71", Tvr.SCRIPT_FAILED_BEFORE_FINAL_AC),
                                                ("72", Tvr.SCRIPT_FAILED_AFTER_FINAL_AC)])
def test_a_failing_script_command_is_reported_1n(template: str, bit: Tvr) -> None:
    r = run(chipcards.make_card("cup-credit"),
            host=Host(scripts=_script(template, "block", b"\x00\x00\x00\x05", bad_mac=True)))
    f = r.finished
    assert f.tags["DF31"] == b"\x11\x00\x00\x00\x05"
    assert bit in Tvr.from_bytes5(f.tags["95"])
    assert f.outcome == "approved"  # the block did not happen


def test_unable_to_go_online_asks_aac_with_z3() -> None:
    r = run(chipcards.make_card("cup-credit"), host=Host(unreachable=True))
    f = r.finished
    assert (f.outcome, f.reason) == ("declined", "unable to go online")
    assert f.tags["8A"] == b"Z3" and r.apdus[-1][2] == 0x00  # GEN AC2 P1 = AAC


def test_a_host_decline_asks_aac() -> None:
    r = run(chipcards.make_card("cup-debit"), host=Host(code="51"))
    f = r.finished
    assert f.outcome == "declined" and "51" in f.reason
    assert r.apdus[-1][:3] == b"\x80\xae\x00"


def test_pin_bypass_falls_to_the_next_rule() -> None:
    r = run(chipcards.make_card("cup-debit"), pin=False)
    f = r.finished
    tvr = Tvr.from_bytes5(f.tags["95"])
    assert f.cvm == "signature" and Tvr.PIN_NOT_ENTERED in tvr
    assert Tvr.ONLINE_PIN_ENTERED not in tvr
    assert f.tags["9F34"][:2] == b"\x1e\x03"


def test_cancel_while_online_asks_the_card_for_an_aac() -> None:
    card = chipcards.make_card("cup-credit")
    r = run(card, abort_at="GoOnline")
    assert r.finished.outcome == "cancelled"
    assert r.apdus[-1][:3] == b"\x80\xae\x00"
    assert r.finished.tags["9F27"][0] & 0xC0 == 0x00


@pytest.mark.parametrize("step", ["select", "gpo", "read_record", "internal_authenticate"])
def test_cancel_before_the_first_ac_sends_nothing_more(step: str) -> None:
    r = run(chipcards.make_card("cup-debit"), abort_at=step)
    assert r.finished.outcome == "cancelled"
    assert not any(a[1] == 0xAE for a in r.apdus)


@pytest.mark.parametrize(("step", "outcome"), [
    ("select", "cancelled"), ("final_select", "cancelled"), ("gpo", "cancelled"),
    ("read_record", "cancelled"), ("generate_ac1", "cancelled"),
    ("external_authenticate", "declined_by_card"), ("generate_ac2", "declined_by_card"),
])
def test_the_card_pulled_at_each_step(step: str, outcome: str) -> None:
    r = run(chipcards.make_card("cup-credit"), pull_at=step)
    assert r.finished.outcome == outcome
    assert "card gone" in r.finished.reason


def test_apdu_counts_per_transaction() -> None:
    for name in chipcards.CARD_NAMES:
        if name not in APDU_COUNTS:
            APDU_COUNTS[name] = run(chipcards.make_card(name)).finished.apdu_count
    # PSE + directory + final SELECT + GPO + records + (INTERNAL AUTH) + 2 GEN AC (+ EXT AUTH)
    assert all(8 <= n <= 16 for n in APDU_COUNTS.values()), APDU_COUNTS
    print("APDUs per transaction:", APDU_COUNTS)
