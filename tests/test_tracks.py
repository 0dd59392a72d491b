"""Track parsing (firmware/engine/tracks.py): the test cards, every refusal, and generated tracks."""

from __future__ import annotations

import re
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from board.sim.cards import TEST_CARDS
from firmware.engine.cardclass import luhn_ok
from firmware.engine.tracks import CardProblem, card_from_swipe, parse_track1, parse_track2
from firmware.ports import MagstripeRead

TODAY = date(2025, 6, 15)
NEW_KEYS = {"card_unreadable", "track_mismatch"}


def swipe_of(name: str, *, track1: bool = True) -> MagstripeRead:
    card = TEST_CARDS[name]
    return MagstripeRead(card.track1 if track1 else None, card.track2, None)


def problem(read: MagstripeRead, *, today: date = TODAY, allow_fallback: bool = False) -> CardProblem:
    with pytest.raises(CardProblem) as info:
        card_from_swipe(read, today=today, allow_fallback=allow_fallback)
    return info.value


def assert_no_card_data(exc: CardProblem, *secrets: str) -> None:
    """Neither the message nor the repr may carry a PAN or a track."""
    for text in (str(exc), repr(exc), exc.detail):
        for secret in secrets:
            # Card data is digits: a fuzz input of ten letters may be a word of the message
            # itself (Hypothesis found "CardProble", the class name in the repr).
            if len(secret) >= 10 and sum(ch.isdigit() for ch in secret) >= 6:
                assert secret not in text
        assert not re.search(r"\d{12,}", text), text


# ---- the shared test cards --------------------------------------------------------------


@pytest.mark.parametrize("name", ["cup_debit", "cup_credit", "visa", "mastercard", "jcb", "blocked"])
def test_every_magstripe_test_card_parses_to_its_fields(name):
    card = TEST_CARDS[name]
    read = card_from_swipe(swipe_of(name), today=TODAY, allow_fallback=False)
    assert (read.entry_mode, read.pan, read.expiry, read.service_code) == (
        "swipe", card.pan, card.expiry, card.service_code)
    assert read.track2 == card.track2 and read.track3 is None
    assert card.pan not in repr(read)


def test_track2_alone_is_enough_and_track3_is_carried():
    card = TEST_CARDS["cup_credit"]
    read = card_from_swipe(MagstripeRead(None, card.track2, "0123456789=99"), today=TODAY,
                           allow_fallback=False)
    assert read.pan == card.pan and read.track3 == "0123456789=99"


def test_chip_card_swiped_asks_for_the_chip_unless_fallback_is_allowed():
    card = TEST_CARDS["cup_chip"]
    exc = problem(swipe_of("cup_chip"))
    assert exc.key == "insert_chip"
    assert_no_card_data(exc, card.pan, card.track2)
    read = card_from_swipe(swipe_of("cup_chip"), today=TODAY, allow_fallback=True)
    assert read.entry_mode == "fallback" and read.pan == card.pan and read.is_chip_card


@pytest.mark.parametrize("service_code", ["201", "220", "601", "620"])
def test_both_chip_service_codes_are_recognised(service_code):
    pan = TEST_CARDS["cup_credit"].pan
    track2 = f"{pan}=3012{service_code}000"
    assert problem(MagstripeRead(None, track2)).key == "insert_chip"


def test_bad_luhn_card_is_invalid():
    card = TEST_CARDS["bad_luhn"]
    exc = problem(swipe_of("bad_luhn"))
    assert exc.key == "card_invalid"
    assert_no_card_data(exc, card.pan, card.track2, card.track1)


def test_expired_card_and_the_month_boundary():
    card = TEST_CARDS["expired"]  # YYMM 2001
    exc = problem(swipe_of("expired"))
    assert exc.key == "card_expired"
    assert_no_card_data(exc, card.pan, card.track2)
    # Good through the last day of its expiry month, refused from the first of the next.
    last_day = card_from_swipe(swipe_of("expired"), today=date(2020, 1, 31), allow_fallback=False)
    assert last_day.expiry == "2001"
    assert problem(swipe_of("expired"), today=date(2020, 2, 1)).key == "card_expired"


def test_expiry_month_out_of_range_is_invalid():
    pan = TEST_CARDS["visa"].pan
    assert problem(MagstripeRead(None, f"{pan}=3013101000")).key == "card_invalid"
    assert problem(MagstripeRead(None, f"{pan}=3000101000")).key == "card_invalid"


def test_chip_check_comes_after_expiry():
    pan = TEST_CARDS["cup_chip"].pan
    assert problem(MagstripeRead(None, f"{pan}=2001220000")).key == "card_expired"


# ---- unreadable, truncated and mismatched tracks ----------------------------------------


def test_no_usable_track_is_unreadable():
    assert problem(MagstripeRead()).key == "card_unreadable"
    assert problem(MagstripeRead(None, None, "1234=5678")).key == "card_unreadable"
    only1 = problem(MagstripeRead(TEST_CARDS["visa"].track1, None))
    assert only1.key == "card_unreadable" and "track 2" in only1.detail


@pytest.mark.parametrize("cut", [0, 5, 12, 16, 17, 18, 20, 23])
def test_track2_truncated_inside_its_fixed_fields_is_unreadable(cut):
    card = TEST_CARDS["visa"]  # 16-digit PAN: separator at 16, YYMM 17..20, service code 21..23
    exc = problem(MagstripeRead(None, card.track2[:cut]))
    assert exc.key == "card_unreadable"
    assert_no_card_data(exc, card.pan)


@pytest.mark.parametrize("cut", [1, 10, 17, 18, 25, 33, 34])
def test_track1_truncated_is_unreadable(cut):
    card = TEST_CARDS["visa"]
    exc = problem(MagstripeRead(card.track1[:cut], card.track2))
    assert exc.key == "card_unreadable"
    assert_no_card_data(exc, card.pan)


@pytest.mark.parametrize("track2", [
    "4000000000000002 3012101",  # no separator
    "40000000000=3012101",  # 11-digit PAN
    "40000000000000000000=3012101",  # 20-digit PAN
    "4000000000000002=30A2101",  # letter in the expiry
    "4000000000000002=3012101" + "0" * 20,  # longer than a track 2 can be
])
def test_malformed_track2_is_unreadable(track2):
    assert problem(MagstripeRead(None, track2)).key == "card_unreadable"


@pytest.mark.parametrize("track1", [
    "A4000000000000002^VISA/TEST^3012101",  # format code A
    "B4000000000000002^X^3012101",  # name too short
    "B4000000000000002^" + "N" * 27 + "^3012101",  # name too long
    "B4000000000000002^VISA#TEST^3012101",  # '#' is no name character
])
def test_malformed_track1_is_unreadable(track1):
    assert problem(MagstripeRead(track1, TEST_CARDS["visa"].track2)).key == "card_unreadable"


def test_tracks_of_different_cards_mismatch():
    exc = problem(MagstripeRead(TEST_CARDS["visa"].track1, TEST_CARDS["mastercard"].track2))
    assert exc.key == "track_mismatch" and "card number" in exc.detail
    assert_no_card_data(exc, TEST_CARDS["visa"].pan, TEST_CARDS["mastercard"].pan)


@pytest.mark.parametrize(("t1_tail", "what"), [("3011101", "expiry"), ("3012201", "service code")])
def test_tracks_differing_in_expiry_or_service_code_mismatch(t1_tail, what):
    card = TEST_CARDS["visa"]
    track1 = f"B{card.pan}^{card.holder}^{t1_tail}0000000000000"
    exc = problem(MagstripeRead(track1, card.track2))
    assert exc.key == "track_mismatch" and exc.detail.endswith(what)


def test_the_track_parsers_keep_card_data_out_of_their_reprs():
    card = TEST_CARDS["visa"]
    assert card.pan not in repr(parse_track2(card.track2))
    t1 = parse_track1(card.track1)
    assert card.pan not in repr(t1) and card.holder not in repr(t1)


# ---- generated tracks -------------------------------------------------------------------


def luhn_complete(body: str) -> str:
    """body + the check digit that makes it pass Luhn."""
    for digit in "0123456789":
        if luhn_ok(body + digit):
            return body + digit
    raise AssertionError("no Luhn digit")  # pragma: no cover - one digit always fits


pans = st.integers(11, 18).flatmap(
    lambda n: st.text("0123456789", min_size=n, max_size=n)).map(luhn_complete)
expiries = st.builds(lambda y, m: f"{y:02d}{m:02d}", st.integers(26, 99), st.integers(1, 12))
magstripe_service = st.sampled_from("1579").flatmap(
    lambda d: st.text("0123456789", min_size=2, max_size=2).map(lambda r: d + r))
chip_service = st.sampled_from("26").flatmap(
    lambda d: st.text("0123456789", min_size=2, max_size=2).map(lambda r: d + r))
names = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ /.", min_size=2, max_size=26)


def make_tracks(pan: str, expiry: str, service: str, name: str, disc: str) -> MagstripeRead:
    track2 = f"{pan}={expiry}{service}{disc}"[:37]
    track1 = f"B{pan}^{name}^{expiry}{service}{disc}"[:76]
    return MagstripeRead(track1, track2)


@settings(max_examples=300, deadline=None)
@given(pans, expiries, magstripe_service, names, st.text("0123456789", max_size=20))
def test_generated_valid_tracks_round_trip(pan, expiry, service, name, disc):
    read = make_tracks(pan, expiry, service, name, disc)
    card = card_from_swipe(read, today=TODAY, allow_fallback=False)
    assert (card.entry_mode, card.pan, card.expiry, card.service_code, card.track2) == (
        "swipe", pan, expiry, service, read.track2)
    # Track 2 alone gives the same card.
    alone = card_from_swipe(MagstripeRead(None, read.track2), today=TODAY, allow_fallback=False)
    assert alone == card


@settings(max_examples=100, deadline=None)
@given(pans, expiries, chip_service, names)
def test_generated_chip_tracks_need_fallback(pan, expiry, service, name):
    read = make_tracks(pan, expiry, service, name, "")
    assert problem(read).key == "insert_chip"
    assert card_from_swipe(read, today=TODAY, allow_fallback=True).entry_mode == "fallback"


@settings(max_examples=200, deadline=None)
@given(pans, expiries, magstripe_service, st.integers(1, 9))
def test_generated_pans_with_a_wrong_check_digit_are_invalid(pan, expiry, service, shift):
    bad = pan[:-1] + str((int(pan[-1]) + shift) % 10)
    exc = problem(MagstripeRead(None, f"{bad}={expiry}{service}"))
    assert exc.key == "card_invalid"
    assert_no_card_data(exc, bad)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=90)), st.one_of(st.none(), st.text(max_size=45)))
def test_any_input_gives_a_card_or_a_catalogued_problem_without_card_data(track1, track2):
    try:
        card_from_swipe(MagstripeRead(track1, track2), today=TODAY, allow_fallback=False)
    except CardProblem as exc:
        assert exc.key in {"card_invalid", "card_expired", "insert_chip"} | NEW_KEYS
        assert_no_card_data(exc, track1 or "", track2 or "")
