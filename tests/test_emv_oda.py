"""firmware.emv.oda: issuer and ICC certificate recovery, SSAD and SDAD, each Book 2 check
failing once. Certificates are built here by hand from the Book 2 layouts (not with the card
simulator's builders), signed with the TEST ONLY keys of board/sim/emvkeys."""

from __future__ import annotations

import hashlib

import pytest

from board.sim.emvcrypto import RsaKey, load_key
from firmware.emv import oda
from firmware.emv.params import Capk
from firmware.emv.tvr import Tvr

CA = load_key("ca_80_1408")
ISSUER = load_key("issuer_1152")
ICC = load_key("icc_cup-debit")
ROGUE = load_key("rogue_issuer_1152")
CAPK = Capk(rid=bytes.fromhex("A000000333"), index=0x80, modulus=CA.modulus, exponent=CA.exponent)
PAN = "6228480000000000011"
TODAY = "260315"
STATIC = b"\x5a\x0a" + bytes.fromhex(PAN + "F") + b"\x82\x02\x7c\x00"


def sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def seal(key: RsaKey, body: bytes, tail: bytes, *, header: int = 0x6A, trailer: int = 0xBC,
         break_hash: bool = False) -> bytes:
    digest = sha1(body + tail)
    if break_hash:
        digest = bytes([digest[0] ^ 1]) + digest[1:]
    return key.sign(bytes([header]) + body + digest + bytes([trailer]))


def issuer_cert(*, signer: RsaKey = CA, fmt: int = 2, issuer_id: str = "622848FF",
                expiry: str = "1230", algo: int = 1, **seal_kw: object) -> dict[str, bytes]:
    room = CA.size - 36
    modulus = ISSUER.modulus
    body = (bytes([fmt]) + bytes.fromhex(issuer_id) + bytes.fromhex(expiry) + b"\x00\x00\x01"
            + bytes([algo, 1, ISSUER.size, len(ISSUER.exponent)]) + modulus[:room])
    remainder = modulus[room:]
    return {"90": seal(signer, body, remainder + ISSUER.exponent, **seal_kw),  # type: ignore[arg-type]
            "92": remainder, "9F32": ISSUER.exponent, "5A": bytes.fromhex(PAN + "F")}


def icc_cert(*, signer: RsaKey = ISSUER, pan: str = PAN, expiry: str = "1230",
             static: bytes = STATIC, **seal_kw: object) -> dict[str, bytes]:
    room = ISSUER.size - 42
    body = (b"\x04" + bytes.fromhex((pan + "F" * 20)[:20]) + bytes.fromhex(expiry)
            + b"\x00\x00\x02" + bytes([1, 1, ICC.size, len(ICC.exponent)]) + ICC.modulus[:room])
    remainder = ICC.modulus[room:]
    return {"9F46": seal(signer, body, remainder + ICC.exponent + static, **seal_kw),  # type: ignore[arg-type]
            "9F48": remainder, "9F47": ICC.exponent}


def ssad(static: bytes = STATIC, **seal_kw: object) -> bytes:
    body = b"\x03\x01\xda\xc1" + b"\xbb" * (ISSUER.size - 26)
    return seal(ISSUER, body, static, **seal_kw)  # type: ignore[arg-type]


def sdad(ddol_data: bytes, number: bytes = b"\x01\x02\x03\x04", **seal_kw: object) -> bytes:
    dynamic = bytes([len(number)]) + number
    body = b"\x05\x01" + bytes([len(dynamic)]) + dynamic + b"\xbb" * (ICC.size - len(dynamic) - 25)
    return seal(ICC, body, ddol_data, **seal_kw)  # type: ignore[arg-type]


def test_the_issuer_key_is_recovered() -> None:
    key = oda.recover_issuer_key(CAPK, issuer_cert(), today=TODAY)
    assert key == oda.RecoveredKey(ISSUER.modulus, ISSUER.exponent)


@pytest.mark.parametrize(("card", "words"), [
    (issuer_cert(header=0x6B), "header"),
    (issuer_cert(trailer=0xBD), "trailer"),
    (issuer_cert(fmt=3), "format"),
    (issuer_cert(break_hash=True), "hash"),
    (issuer_cert(issuer_id="623000FF"), "issuer identifier"),
    (issuer_cert(expiry="0226"), "expired"),
    (issuer_cert(algo=2), "algorithms"),
])
def test_each_issuer_certificate_check(card: dict[str, bytes], words: str) -> None:
    result = oda.recover_issuer_key(CAPK, card, today=TODAY)
    assert isinstance(result, oda.OdaFailure) and words in result.reason, result


def test_missing_issuer_data_is_icc_data_missing() -> None:
    card = issuer_cert()
    del card["92"]
    result = oda.recover_issuer_key(CAPK, card, today=TODAY)
    assert isinstance(result, oda.OdaFailure) and result.tvr == Tvr.ICC_DATA_MISSING
    assert isinstance(oda.recover_issuer_key(CAPK, {}, today=TODAY), oda.OdaFailure)


def test_an_expired_capk_is_not_used() -> None:
    old = Capk(rid=CAPK.rid, index=0x80, modulus=CA.modulus, exponent=CA.exponent,
               expiry="20251231")
    result = oda.recover_issuer_key(old, issuer_cert(), today=TODAY)
    assert isinstance(result, oda.OdaFailure) and "CA public key" in result.reason


def test_sda() -> None:
    issuer = oda.recover_issuer_key(CAPK, issuer_cert(), today=TODAY)
    assert isinstance(issuer, oda.RecoveredKey)
    assert oda.verify_ssad(issuer, {"93": ssad()}, STATIC) is None
    changed = oda.verify_ssad(issuer, {"93": ssad()}, STATIC[:-1] + b"\x01")
    assert isinstance(changed, oda.OdaFailure) and "hash" in changed.reason
    broken = oda.verify_ssad(issuer, {"93": ssad(break_hash=True)}, STATIC)
    assert isinstance(broken, oda.OdaFailure)
    missing = oda.verify_ssad(issuer, {}, STATIC)
    assert isinstance(missing, oda.OdaFailure) and missing.tvr == Tvr.ICC_DATA_MISSING


def test_dda() -> None:
    issuer = oda.recover_issuer_key(CAPK, issuer_cert(), today=TODAY)
    assert isinstance(issuer, oda.RecoveredKey)
    card = dict(issuer_cert(), **icc_cert())
    icc = oda.recover_icc_key(issuer, card, STATIC, today=TODAY)
    assert icc == oda.RecoveredKey(ICC.modulus, ICC.exponent)
    un = b"\x11\x22\x33\x44"
    assert oda.verify_sdad(icc, sdad(un), un) == b"\x01\x02\x03\x04"
    assert isinstance(oda.verify_sdad(icc, sdad(un), b"\x11\x22\x33\x45"), oda.OdaFailure)
    assert isinstance(oda.verify_sdad(icc, sdad(un, trailer=0x00), un), oda.OdaFailure)


@pytest.mark.parametrize(("override", "words"), [
    (dict(signer=ROGUE), "ICC certificate"),
    (dict(pan="6228480000000000029"), "PAN"),
    (dict(expiry="0126"), "expired"),
    (dict(static=STATIC + b"\x00"), "hash"),
])
def test_each_icc_certificate_check(override: dict[str, object], words: str) -> None:
    issuer = oda.recover_issuer_key(CAPK, issuer_cert(), today=TODAY)
    assert isinstance(issuer, oda.RecoveredKey)
    card = dict(issuer_cert(), **icc_cert(**override))  # type: ignore[arg-type]
    result = oda.recover_icc_key(issuer, card, STATIC, today=TODAY)
    assert isinstance(result, oda.OdaFailure) and words in result.reason, result
