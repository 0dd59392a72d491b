"""The shared test card list and the simulator's rule data model."""

from __future__ import annotations

import pytest

from board.sim.cards import TEST_CARDS, card_by_pan, mask, org_for_pan
from board.sim.faults import Rule, RuleBook
from firmware.engine.cardclass import is_foreign, luhn_ok

REQUIRED = {"cup_debit", "cup_credit", "cup_chip", "visa", "mastercard", "blocked",
            "expired", "bad_luhn"}


def test_required_cards_exist() -> None:
    assert set(TEST_CARDS) >= REQUIRED
    assert all(name == card.name for name, card in TEST_CARDS.items())


@pytest.mark.parametrize("name", sorted(TEST_CARDS))
def test_luhn_only_bad_luhn_fails(name: str) -> None:
    assert luhn_ok(TEST_CARDS[name].pan) is (name != "bad_luhn")


def test_card_properties() -> None:
    debit = TEST_CARDS["cup_debit"]
    assert debit.pin == "123456" and debit.service_code == "120" and not debit.is_chip
    assert TEST_CARDS["cup_credit"].pin is None
    assert TEST_CARDS["cup_chip"].service_code == "220" and TEST_CARDS["cup_chip"].is_chip
    assert TEST_CARDS["expired"].expiry == "2001"
    assert not is_foreign(TEST_CARDS["blocked"].pan)
    for name, org in (("visa", "VIS"), ("mastercard", "MCC"), ("jcb", "JCB")):
        card = TEST_CARDS[name]
        assert card.org == org == org_for_pan(card.pan) and is_foreign(card.pan)
        assert card.pin is None
    for card in TEST_CARDS.values():
        assert card.org == org_for_pan(card.pan)
        assert card.balance > 0 and isinstance(card.balance, int)


@pytest.mark.parametrize("name", sorted(TEST_CARDS))
def test_tracks(name: str) -> None:
    card = TEST_CARDS[name]
    t2 = card.track2
    assert t2.startswith(f"{card.pan}={card.expiry}{card.service_code}")
    assert len(t2) == 37 and set(t2) <= set("0123456789=")
    t1 = card.track1
    assert t1.startswith(f"B{card.pan}^")
    _, holder, rest = t1.split("^")
    assert holder.endswith("/TEST") and rest.startswith(card.expiry + card.service_code)
    assert len(t1) <= 76 and card.track1_framed == f"%{t1}?"


@pytest.mark.parametrize("name", sorted(TEST_CARDS))
def test_repr_masks_the_pan(name: str) -> None:
    card = TEST_CARDS[name]
    text = repr(card) + str(card)
    assert card.pan not in text and mask(card.pan) in text
    if card.pin:
        assert card.pin not in text


def test_card_by_pan() -> None:
    assert card_by_pan(TEST_CARDS["visa"].pan) is TEST_CARDS["visa"]
    assert card_by_pan("6200000000000000") is None


def test_rule_matching_and_count() -> None:
    book = RuleBook()
    book.add(Rule("05", kind="sale", amount_mod100=7, count=1))
    book.add(Rule("14", pan="4000000000000002"))
    args = {"mti": "0200", "pan": "6225880000000001", "tid": "10000001"}
    assert book.decide(txn_kind="sale", amount=107, **args) == "05"
    assert book.decide(txn_kind="sale", amount=107, **args) is None  # used up
    assert book.decide(txn_kind="sale", amount=1, mti="0200", pan="4000000000000002",
                       tid="x") == "14"
    with pytest.raises(ValueError):
        Rule("123")
    assert Rule.from_json({"code": "51", "kind": "preauth"}).to_json()["kind"] == "preauth"


def test_settlement_messages_follow_only_rules_that_name_their_mti() -> None:
    """A rule for any request never refuses a 0500 or 0320; one naming 0320 may, narrowed by
    60.3 (201 an upload, 202/207 its end)."""
    book = RuleBook()
    book.add(Rule("05"))  # every financial request
    book.add(Rule("96", mti="0320", network="207", count=1))
    book.add(Rule("30", mti="0500"))
    args = {"txn_kind": None, "amount": None, "pan": None, "tid": "10000001"}
    assert book.decide(mti="0200", **args) == "05"
    assert book.decide(mti="0320", network="201", **args) is None
    assert book.decide(mti="0320", network="207", **args) == "96"
    assert book.decide(mti="0320", network="207", **args) is None  # used up
    assert book.decide(mti="0500", network="201", **args) == "30"
