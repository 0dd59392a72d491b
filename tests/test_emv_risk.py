"""firmware.emv.risk (floor limit, random selection, velocity, action analysis) and
firmware.emv.restrictions (versions, dates, AUC)."""

from __future__ import annotations

from firmware.emv import restrictions, risk
from firmware.emv.params import AidParams
from firmware.emv.tvr import Tvr

AID = AidParams(aid=b"\xa0", floor_limit=10000, random_threshold=2000,
                random_target_percent=20, random_max_percent=60)


def test_floor_limit() -> None:
    assert risk.floor_limit(10000, AID) == Tvr.FLOOR_LIMIT_EXCEEDED
    assert risk.floor_limit(9999, AID) == Tvr(0)
    assert risk.floor_limit(0, AidParams(aid=b"\xa0")) == Tvr.FLOOR_LIMIT_EXCEEDED


def test_random_selection_below_and_above_the_threshold() -> None:
    assert risk.random_selection(1000, AID, 20) == Tvr.RANDOMLY_SELECTED_ONLINE
    assert risk.random_selection(1000, AID, 21) == Tvr(0)
    # half way from threshold to floor limit: 20 + (60 - 20) / 2 = 40
    assert risk.random_selection(6000, AID, 40) == Tvr.RANDOMLY_SELECTED_ONLINE
    assert risk.random_selection(6000, AID, 41) == Tvr(0)
    assert risk.random_selection(10000, AID, 1) == Tvr(0)  # at the floor limit: not random


def test_velocity() -> None:
    limits = risk.Velocity(2, 5)
    assert risk.velocity(risk.Velocity(None, None), None, None) == Tvr(0)
    both = Tvr.LOWER_OFFLINE_LIMIT_EXCEEDED | Tvr.UPPER_OFFLINE_LIMIT_EXCEEDED
    assert risk.velocity(limits, None, b"\x00\x01") == both
    assert risk.velocity(limits, b"\x00\x03", b"\x00\x01") == Tvr(0)
    assert risk.velocity(limits, b"\x00\x04", b"\x00\x01") == Tvr.LOWER_OFFLINE_LIMIT_EXCEEDED
    assert risk.velocity(limits, b"\x00\x07", b"\x00\x01") == both
    assert Tvr.NEW_CARD in risk.velocity(limits, b"\x00\x01", b"\x00\x00")


def test_action_analysis() -> None:
    params = AidParams(aid=b"\xa0", tac_denial=bytes.fromhex("0010000000"),
                       tac_online=bytes.fromhex("D84004F800"))
    assert risk.action_analysis(Tvr.FLOOR_LIMIT_EXCEEDED, params, {}) == risk.ARQC
    # online-only: ARQC even when no online code matches (no TC offline)
    assert risk.action_analysis(Tvr(0), params, {"9F0F": bytes(5)}) == risk.ARQC
    assert risk.action_analysis(Tvr.SERVICE_NOT_ALLOWED, params, {}) == risk.AAC
    # the card's IAC denial counts too
    iac = {"9F0E": Tvr.EXPIRED_APPLICATION.to_bytes5()}
    assert risk.action_analysis(Tvr.EXPIRED_APPLICATION, params, iac) == risk.AAC
    # offline-capable: online codes decide between ARQC and TC
    offline = dict(online_only=False, online_capable=True)
    none_online = {"9F0F": bytes(5)}
    assert risk.action_analysis(Tvr(0), params, none_online, **offline) == risk.TC
    assert risk.action_analysis(Tvr.FLOOR_LIMIT_EXCEEDED, params, none_online,
                                **offline) == risk.ARQC
    assert risk.default_action(Tvr(0), params, {"9F0D": bytes(5)}) == risk.TC


CARD = {"9F08": b"\x00\x30", "5F25": bytes.fromhex("200101"), "5F24": bytes.fromhex("301231"),
        "9F07": bytes.fromhex("FF00"), "5F28": b"\x01\x56"}


def check(card: dict[str, bytes], today: str = "260315", txn_type: int = 0,
          country: bytes = b"\x01\x56") -> restrictions.RestrictionResult:
    return restrictions.check(card, today=today, country=country, txn_type=txn_type,
                              terminal_version=b"\x00\x30")


def test_a_good_card_passes() -> None:
    assert check(CARD) == restrictions.RestrictionResult(Tvr(0), None)


def test_dates() -> None:
    expired = check(dict(CARD, **{"5F24": bytes.fromhex("260314")}))
    assert expired.tvr == Tvr.EXPIRED_APPLICATION and "expired" in (expired.refusal or "")
    assert check(dict(CARD, **{"5F24": bytes.fromhex("260315")})).refusal is None
    early = check(dict(CARD, **{"5F25": bytes.fromhex("260316")}))
    assert early.tvr == Tvr.APP_NOT_YET_EFFECTIVE and early.refusal
    # YY >= 50 is 19YY
    assert check(dict(CARD, **{"5F24": bytes.fromhex("991231")})).refusal


def test_version_mismatch_only_sets_its_bit() -> None:
    result = check(dict(CARD, **{"9F08": b"\x00\x20"}))
    assert result == restrictions.RestrictionResult(Tvr.DIFFERENT_APP_VERSIONS, None)


def test_auc() -> None:
    domestic_goods_only = dict(CARD, **{"9F07": bytes.fromhex("2100")})
    assert check(domestic_goods_only).refusal is None
    assert check(domestic_goods_only, txn_type=0x01).tvr == Tvr.SERVICE_NOT_ALLOWED
    abroad = check(domestic_goods_only, country=b"\x08\x40")
    assert abroad.tvr == Tvr.SERVICE_NOT_ALLOWED and abroad.refusal
    assert check(dict(CARD, **{"9F07": bytes.fromhex("FE00")})).tvr == Tvr.SERVICE_NOT_ALLOWED
