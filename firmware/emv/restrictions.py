"""Processing restrictions (EMV 4.3 Book 3 10.4): application version, dates, usage control.

Pure: the card's tags and the transaction in, TVR bits and words out. What the kernel does with
them is its choice (firmware/emv/__init__.py): an expired or not yet effective application, or a service the
card's AUC forbids here, is refused ("not accepted"); a version mismatch only sets its bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from firmware.emv.tvr import Tvr

# Application Usage Control (9F07) byte 1 / byte 2 (Book 3 C2)
AUC_DOMESTIC_CASH = 0x8000
AUC_INTERNATIONAL_CASH = 0x4000
AUC_DOMESTIC_GOODS = 0x2000
AUC_INTERNATIONAL_GOODS = 0x1000
AUC_DOMESTIC_SERVICES = 0x0800
AUC_INTERNATIONAL_SERVICES = 0x0400
AUC_ATM = 0x0200
AUC_NOT_ATM = 0x0100
AUC_DOMESTIC_CASHBACK = 0x0080
AUC_INTERNATIONAL_CASHBACK = 0x0040

TXN_GOODS_SERVICES = 0x00
TXN_CASH = 0x01
TXN_CASHBACK = 0x09


@dataclass(frozen=True)
class RestrictionResult:
    tvr: Tvr
    refusal: str | None  # words, when the kernel refuses the card


def _yymmdd(value: bytes) -> str:
    return value.hex()[:6]


def _date_key(yymmdd: str) -> str:
    # EMV dates are YYMMDD; YY < 50 is 20YY (Book 4 6.7.3)
    return ("19" if int(yymmdd[:2]) >= 50 else "20") + yymmdd


def check(card: Mapping[str, bytes], *, today: str, country: bytes, txn_type: int,
          terminal_version: bytes, atm: bool = False) -> RestrictionResult:
    """today: YYMMDD; country: 9F1A (2 bytes)."""
    tvr = Tvr(0)
    refusal: str | None = None
    card_version = card.get("9F08")
    if card_version is not None and card_version != terminal_version:
        tvr |= Tvr.DIFFERENT_APP_VERSIONS
    effective = card.get("5F25")
    if effective is not None and _date_key(_yymmdd(effective)) > _date_key(today):
        tvr |= Tvr.APP_NOT_YET_EFFECTIVE
        refusal = "the card's application is not yet effective"
    expiry = card.get("5F24")
    if expiry is not None and _date_key(_yymmdd(expiry)) < _date_key(today):
        tvr |= Tvr.EXPIRED_APPLICATION
        refusal = "the card has expired"
    auc_raw = card.get("9F07")
    issuer_country = card.get("5F28")
    if auc_raw is not None and len(auc_raw) >= 2:
        auc = int.from_bytes(auc_raw[:2], "big")
        allowed = True
        if not auc & (AUC_ATM if atm else AUC_NOT_ATM):
            allowed = False
        if issuer_country is not None:
            domestic = issuer_country == country
            if txn_type == TXN_CASH:
                allowed &= bool(auc & (AUC_DOMESTIC_CASH if domestic else AUC_INTERNATIONAL_CASH))
            elif txn_type in (TXN_GOODS_SERVICES, TXN_CASHBACK):
                # a purchase is goods or services: either allows it (Book 3 10.4.3)
                mask = (AUC_DOMESTIC_GOODS | AUC_DOMESTIC_SERVICES) if domestic else \
                    (AUC_INTERNATIONAL_GOODS | AUC_INTERNATIONAL_SERVICES)
                allowed &= bool(auc & mask)
                if txn_type == TXN_CASHBACK:
                    allowed &= bool(auc & (AUC_DOMESTIC_CASHBACK if domestic
                                           else AUC_INTERNATIONAL_CASHBACK))
        if not allowed:
            tvr |= Tvr.SERVICE_NOT_ALLOWED
            refusal = refusal or "the card does not allow this service here"
    return RestrictionResult(tvr, refusal)
