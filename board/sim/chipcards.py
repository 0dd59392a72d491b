"""The test chip cards (issue 16): their profiles, the test issuer's keys, the test CA public key
and AID parameters the terminal is given, and `make_card(name)` that personalises one
(board.sim.chipcard.EmvCard, a ChipCardApp).

Every card is TEST ONLY: its keys are the public PEM files of board/sim/emvkeys and the issuer
master keys below. The host simulator finds a card's issuer keys with `issuer_for_pan(pan)`;
docs and tests read `CARD_TABLE` (PAN, PIN, CVM, ODA, what each card does); `magstripe_tracks`
gives each card's magstripe twin (service code 2xx) for the fallback tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from board.sim import emvcrypto
from board.sim.chipcard import (
    AID_CREDIT,
    AID_DEBIT,
    AppSpec,
    CardProfile,
    EmvCard,
    IssuerKeys,
)
from firmware.emv.params import AidParams, Capk
from firmware.engine.cardclass import luhn_ok

__all__ = [
    "CAPK_INDEX",
    "CARD_NAMES",
    "CARD_TABLE",
    "PROFILES",
    "RID",
    "TEST_ISSUER",
    "CardInfo",
    "card_for_pan",
    "card_table_markdown",
    "issuer_for_pan",
    "magstripe_tracks",
    "make_card",
    "test_aid_params",
    "test_capks",
]

RID: Final = bytes.fromhex("A000000333")
CAPK_INDEX: Final = 0x80
_CA_KEY: Final = "ca_80_1408"

# The test issuer ("622848" test bank): IMK-AC and IMK-SMI, double-length 3DES, TEST values.
TEST_ISSUER: Final = IssuerKeys(
    name="test-bank-622848",
    imk_ac=bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"),
    imk_smi=bytes.fromhex("89ABCDEF01234567FEDCBA9801234567"),
)


def _pan(serial: int) -> str:
    """A Luhn-valid 19-digit test PAN 622848 0000000 SSSS C, distinct per card."""
    base = f"6228480000000{serial:05d}"
    return next(base + d for d in "0123456789" if luhn_ok(base + d))


_DEBIT: Final = AppSpec(AID_DEBIT, "UnionPay Debit", "银联借记卡", priority=1)
_CREDIT: Final = AppSpec(AID_CREDIT, "UnionPay Credit", "银联贷记卡", priority=1)

PROFILES: Final[dict[str, CardProfile]] = {p.name: p for p in (
    CardProfile("cup-debit", _pan(11), (_DEBIT,), icc_key="icc_cup-debit",
                holder="CUP DEBIT/TEST", cvm="online_pin", oda="dda",
                what="approved online with the online PIN; DDA"),
    CardProfile("cup-credit", _pan(21), (_CREDIT,), service_code="201",
                holder="CUP CREDIT/TEST", cvm="signature", oda="sda",
                what="approved online, signature; SDA"),
    CardProfile("offline-decline", _pan(31), (_DEBIT,), icc_key="icc_offline-decline",
                holder="OFFLINE DECLINE/TEST", cvm="signature", declines_first=True,
                what="declines offline: AAC at the first GENERATE AC, nothing goes online"),
    CardProfile("bad-cert", _pan(41), (_DEBIT,), icc_key="icc_bad-cert",
                holder="BAD CERT/TEST", cvm="signature", bad_cert=True,
                what="DDA fails: its ICC certificate is signed with the wrong issuer key"),
    CardProfile("bad-sda", _pan(51), (_CREDIT,), service_code="201",
                holder="BAD SDA/TEST", cvm="signature", oda="sda", bad_sda=True,
                what="SDA fails: the hash in its signed static data is broken"),
    CardProfile("expired", _pan(61), (_DEBIT,), icc_key="icc_expired", expiry="240131",
                holder="EXPIRED/TEST", cvm="online_pin",
                what="expired January 2024 (5F24 240131): not accepted"),
    CardProfile("two-apps", _pan(71), (
        AppSpec(AID_DEBIT, "UnionPay Debit", "银联借记卡", priority=1, confirm=True,
                cvm="online_pin", oda="dda"),
        AppSpec(AID_CREDIT, "UnionPay Credit", "银联贷记卡", priority=2, confirm=True,
                cvm="signature", oda="sda"),
    ), icc_key="icc_two-apps", holder="TWO APPS/TEST",
        what="PSE lists debit (priority 1, online PIN, DDA) and credit (priority 2, "
             "signature, SDA), both asking cardholder confirmation"),
    CardProfile("declines-2nd", _pan(81), (_DEBIT,), icc_key="icc_declines-2nd",
                holder="DECLINES 2ND/TEST", cvm="signature", declines_second=True,
                what="the host approves, the card answers AAC at the second GENERATE AC: "
                     "reversal"),
    CardProfile("no-pse", _pan(91), (_DEBIT,), holder="NO PSE/TEST", cvm="online_pin",
                oda="sda", pse=False, pdol=False,
                what="no PSE (6A82): the terminal selects from its AID list; empty PDOL; SDA"),
)}

CARD_NAMES: Final[tuple[str, ...]] = tuple(PROFILES)
_BY_PAN: Final[dict[str, CardProfile]] = {p.pan: p for p in PROFILES.values()}


def make_card(name: str, *, atc: int = 0, state_path: Path | None = None) -> EmvCard:
    """A freshly personalised test card. Its counters (ATC, PIN tries, blocked applications)
    live in the object; keep the object for the card's life (or give state_path, a JSON file
    with counters only, so a restarted vpcd process continues the ATC): a new object from ATC
    0 would replay ATCs the host has booked."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise KeyError(f"no test chip card {name!r}; known: {', '.join(CARD_NAMES)}") from None
    return EmvCard(profile, TEST_ISSUER, emvcrypto.load_key(_CA_KEY), atc=atc,
                   state_path=state_path)


def card_for_pan(pan: str) -> CardProfile | None:
    """The test chip card with this PAN, or None."""
    return _BY_PAN.get(pan)


def issuer_for_pan(pan: str) -> IssuerKeys | None:
    """The issuer keys (IMK-AC, IMK-SMI) the host simulator verifies this PAN's ARQC with, or
    None for a PAN that is no test chip card."""
    return TEST_ISSUER if pan in _BY_PAN else None


def magstripe_tracks(name: str) -> str:
    """Track 2 of the card's magstripe twin ('PAN=YYMMSSS...', service code 220 or 201): what a
    swipe of this chip card reads, for the fallback tests."""
    return PROFILES[name].track2


def test_capks() -> list[Capk]:
    """The test CA public key (RID A000000333, index 80, 1408 bits, e = 3), check value filled."""
    ca = emvcrypto.load_key(_CA_KEY)
    return [Capk(rid=RID, index=CAPK_INDEX, modulus=ca.modulus, exponent=ca.exponent,
                 check_value=emvcrypto.capk_check_value(RID, CAPK_INDEX, ca.modulus,
                                                        ca.exponent))]


def test_aid_params() -> list[AidParams]:
    """The terminal's AID list for the test cards: CUP debit and credit, partial match on,
    floor limit 0 (every transaction online), the usual CUP terminal action codes."""
    return [AidParams(aid=aid, tac_default=bytes.fromhex("D84000A800"),
                      tac_denial=bytes.fromhex("0010000000"),
                      tac_online=bytes.fromhex("D84004F800"))
            for aid in (AID_DEBIT, AID_CREDIT)]


# Not pytest test functions, despite the names.
test_capks.__test__ = False  # type: ignore[attr-defined]
test_aid_params.__test__ = False  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CardInfo:
    """One row of the test card table (docs, tests, the console's card list)."""

    name: str
    pan: str
    pin: str | None
    cvm: str
    oda: str
    aids: tuple[str, ...]
    what: str


def _info(p: CardProfile) -> CardInfo:
    cvms = {a.cvm or p.cvm for a in p.apps}
    odas = {a.oda or p.oda for a in p.apps}
    return CardInfo(p.name, p.pan, p.pin if "online_pin" in cvms else None,
                    " / ".join(sorted(cvms)), " / ".join(sorted(odas)),
                    tuple(a.aid.hex().upper() for a in p.apps), p.what)


CARD_TABLE: Final[tuple[CardInfo, ...]] = tuple(_info(p) for p in PROFILES.values())


def card_table_markdown() -> str:
    """The test card table as Markdown (docs)."""
    rows = ["| card | PAN | PIN | CVM | ODA | what it does |", "|---|---|---|---|---|---|"]
    rows += [f"| `{c.name}` | {c.pan} | {c.pin or '-'} | {c.cvm} | {c.oda} | {c.what} |"
             for c in CARD_TABLE]
    return "\n".join(rows) + "\n"
