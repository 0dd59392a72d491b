"""Offline data authentication: SDA and DDA (EMV 4.3 Book 2, sections 5 and 6). CDA is not
done (the terminal does not ask for it at GENERATE AC).

Certificate recovery is raw RSA: `pow(certificate, exponent, modulus)` on integers, as EMV's
"recovery" of signed data with message recovery (ISO 9796-2) is no padding scheme a library
offers; SHA-1 is `cryptography`'s. Each check of Book 2 is made in its order and a failure says
which in words: recovered length, header 6A, trailer BC, certificate format, hash, issuer
identifier against the PAN, expiry, algorithm indicators.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from firmware.emv.params import Capk
from firmware.emv.tvr import Tvr

HEADER = 0x6A
TRAILER = 0xBC
HASH_SHA1 = 0x01
PK_RSA = 0x01
FORMAT_ISSUER_CERT = 0x02
FORMAT_SSAD = 0x03
FORMAT_ICC_CERT = 0x04
FORMAT_SDAD = 0x05
HASH_LEN = 20
NO_BITS = Tvr(0)


@dataclass(frozen=True)
class RecoveredKey:
    modulus: bytes
    exponent: bytes

    @property
    def length(self) -> int:
        return len(self.modulus)


@dataclass(frozen=True)
class OdaFailure:
    reason: str
    tvr: Tvr = NO_BITS  # bits besides the method's "failed" (ICC data missing)


def sha1(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA1())
    digest.update(data)
    return digest.finalize()


def recover(signed: bytes, modulus: bytes, exponent: bytes) -> bytes | None:
    """Raw RSA public operation; None when the data is not as long as the key."""
    if len(signed) != len(modulus):
        return None
    n = int.from_bytes(modulus, "big")
    value = int.from_bytes(signed, "big")
    if value >= n:
        return None
    return pow(value, int.from_bytes(exponent, "big"), n).to_bytes(len(modulus), "big")


def _frame(recovered: bytes | None, fmt: int, what: str) -> str | None:
    if recovered is None:
        return f"{what}: length differs from the key's"
    if recovered[-1] != TRAILER:
        return f"{what}: trailer is not BC"
    if recovered[0] != HEADER:
        return f"{what}: header is not 6A"
    if recovered[1] != fmt:
        return f"{what}: format {recovered[1]:02X}, not {fmt:02X}"
    return None


def _digits(bcd: bytes) -> str:
    return bcd.hex().upper().rstrip("F")


def _expired(mmyy: bytes, today: str) -> bool:
    """Valid through the end of month MM of YY; today is YYMMDD."""
    text = mmyy.hex()
    return (text[2:4], text[0:2]) < (today[0:2], today[2:4])


def recover_issuer_key(capk: Capk, card: Mapping[str, bytes], *,
                       today: str) -> RecoveredKey | OdaFailure:
    """The issuer public key from its certificate 90, remainder 92 and exponent 9F32 (Book 2
    5.3 / 6.3)."""
    cert, exponent = card.get("90"), card.get("9F32")
    if not cert or not exponent:
        return OdaFailure("issuer public key certificate or exponent missing",
                          Tvr.ICC_DATA_MISSING)
    if capk.expiry and capk.expiry < "20" + today:
        return OdaFailure("the CA public key has expired")
    n_ca = len(capk.modulus)
    rec = recover(cert, capk.modulus, capk.exponent)
    problem = _frame(rec, FORMAT_ISSUER_CERT, "issuer certificate")
    if problem:
        return OdaFailure(problem)
    assert rec is not None
    issuer_id, expiry = rec[2:6], rec[6:8]
    hash_algo, pk_algo, n_i = rec[11], rec[12], rec[13]
    pk_field = rec[15:n_ca - 21]
    remainder = card.get("92", b"")
    if n_i > n_ca - 36 and len(remainder) != n_i - (n_ca - 36):
        return OdaFailure("issuer public key remainder (92) missing or of the wrong length",
                          Tvr.ICC_DATA_MISSING)
    if hash_algo != HASH_SHA1 or pk_algo != PK_RSA:
        return OdaFailure(f"issuer certificate algorithms {hash_algo:02X}/{pk_algo:02X}")
    if sha1(rec[1:n_ca - 21] + remainder + exponent) != rec[n_ca - 21:n_ca - 1]:
        return OdaFailure("issuer certificate hash does not match")
    pan = _digits(card.get("5A", b""))
    iin = _digits(issuer_id)
    if not 3 <= len(iin) <= 8 or not pan.startswith(iin):
        return OdaFailure("issuer identifier does not match the PAN")
    if _expired(expiry, today):
        return OdaFailure("issuer certificate has expired")
    modulus = pk_field + remainder if n_i > n_ca - 36 else pk_field[:n_i]
    return RecoveredKey(modulus, exponent)


def verify_ssad(issuer: RecoveredKey, card: Mapping[str, bytes],
                static_data: bytes) -> OdaFailure | None:
    """SDA: the Signed Static Application Data 93 over the static data (Book 2 5.4)."""
    ssad = card.get("93")
    if not ssad:
        return OdaFailure("signed static application data (93) missing", Tvr.ICC_DATA_MISSING)
    n = issuer.length
    rec = recover(ssad, issuer.modulus, issuer.exponent)
    problem = _frame(rec, FORMAT_SSAD, "signed static data")
    if problem:
        return OdaFailure(problem)
    assert rec is not None
    if rec[2] != HASH_SHA1:
        return OdaFailure(f"signed static data hash algorithm {rec[2]:02X}")
    if sha1(rec[1:n - 21] + static_data) != rec[n - 21:n - 1]:
        return OdaFailure("signed static data hash does not match")
    return None


def recover_icc_key(issuer: RecoveredKey, card: Mapping[str, bytes], static_data: bytes, *,
                    today: str) -> RecoveredKey | OdaFailure:
    """DDA: the ICC public key from 9F46, remainder 9F48, exponent 9F47 (Book 2 6.4)."""
    cert, exponent = card.get("9F46"), card.get("9F47")
    if not cert or not exponent:
        return OdaFailure("ICC public key certificate or exponent missing", Tvr.ICC_DATA_MISSING)
    n_i = issuer.length
    rec = recover(cert, issuer.modulus, issuer.exponent)
    problem = _frame(rec, FORMAT_ICC_CERT, "ICC certificate")
    if problem:
        return OdaFailure(problem)
    assert rec is not None
    app_pan, expiry = rec[2:12], rec[12:14]
    hash_algo, pk_algo, n_ic = rec[17], rec[18], rec[19]
    pk_field = rec[21:n_i - 21]
    remainder = card.get("9F48", b"")
    if n_ic > n_i - 42 and len(remainder) != n_ic - (n_i - 42):
        return OdaFailure("ICC public key remainder (9F48) missing or of the wrong length",
                          Tvr.ICC_DATA_MISSING)
    if hash_algo != HASH_SHA1 or pk_algo != PK_RSA:
        return OdaFailure(f"ICC certificate algorithms {hash_algo:02X}/{pk_algo:02X}")
    if sha1(rec[1:n_i - 21] + remainder + exponent + static_data) != rec[n_i - 21:n_i - 1]:
        return OdaFailure("ICC certificate hash does not match")
    if _digits(app_pan) != _digits(card.get("5A", b"")):
        return OdaFailure("ICC certificate PAN does not match the card's")
    if _expired(expiry, today):
        return OdaFailure("ICC certificate has expired")
    modulus = pk_field + remainder if n_ic > n_i - 42 else pk_field[:n_ic]
    return RecoveredKey(modulus, exponent)


def verify_sdad(icc: RecoveredKey, sdad: bytes, ddol_data: bytes) -> bytes | OdaFailure:
    """DDA: the Signed Dynamic Application Data from INTERNAL AUTHENTICATE over the DDOL data
    (Book 2 6.5); the ICC Dynamic Number (9F4C) when it holds."""
    n = icc.length
    rec = recover(sdad, icc.modulus, icc.exponent)
    problem = _frame(rec, FORMAT_SDAD, "signed dynamic data")
    if problem:
        return OdaFailure(problem)
    assert rec is not None
    if rec[2] != HASH_SHA1:
        return OdaFailure(f"signed dynamic data hash algorithm {rec[2]:02X}")
    if sha1(rec[1:n - 21] + ddol_data) != rec[n - 21:n - 1]:
        return OdaFailure("signed dynamic data hash does not match")
    dynamic_len = rec[3]
    dynamic = rec[4:4 + dynamic_len]
    if not dynamic or dynamic[0] + 1 > len(dynamic):
        return OdaFailure("signed dynamic data: ICC dynamic number malformed")
    return dynamic[1:1 + dynamic[0]]
