"""The Terminal Verification Results (95, 5 bytes) and the Transaction Status Information (9B,
2 bytes) as named bits (EMV 4.3 Book 3 Annex C5 and C6), so no handler writes a magic number."""

from __future__ import annotations

from enum import IntFlag


def _bit(byte: int, bit: int, size: int) -> int:
    """Byte 1..size, bit 8..1 as the EMV books number them, as an int over the whole field."""
    return 1 << ((size - byte) * 8 + (bit - 1))


class Tvr(IntFlag):
    # byte 1
    ODA_NOT_PERFORMED = _bit(1, 8, 5)
    SDA_FAILED = _bit(1, 7, 5)
    ICC_DATA_MISSING = _bit(1, 6, 5)
    CARD_ON_EXCEPTION_FILE = _bit(1, 5, 5)
    DDA_FAILED = _bit(1, 4, 5)
    CDA_FAILED = _bit(1, 3, 5)
    # byte 2
    DIFFERENT_APP_VERSIONS = _bit(2, 8, 5)
    EXPIRED_APPLICATION = _bit(2, 7, 5)
    APP_NOT_YET_EFFECTIVE = _bit(2, 6, 5)
    SERVICE_NOT_ALLOWED = _bit(2, 5, 5)
    NEW_CARD = _bit(2, 4, 5)
    # byte 3
    CV_NOT_SUCCESSFUL = _bit(3, 8, 5)
    UNRECOGNISED_CVM = _bit(3, 7, 5)
    PIN_TRY_LIMIT_EXCEEDED = _bit(3, 6, 5)
    PIN_PAD_MISSING = _bit(3, 5, 5)      # PIN entry required, PIN pad not present or not working
    PIN_NOT_ENTERED = _bit(3, 4, 5)      # PIN entry required, PIN pad present, PIN not entered
    ONLINE_PIN_ENTERED = _bit(3, 3, 5)
    # byte 4
    FLOOR_LIMIT_EXCEEDED = _bit(4, 8, 5)
    LOWER_OFFLINE_LIMIT_EXCEEDED = _bit(4, 7, 5)
    UPPER_OFFLINE_LIMIT_EXCEEDED = _bit(4, 6, 5)
    RANDOMLY_SELECTED_ONLINE = _bit(4, 5, 5)
    MERCHANT_FORCED_ONLINE = _bit(4, 4, 5)
    # byte 5
    DEFAULT_TDOL_USED = _bit(5, 8, 5)
    ISSUER_AUTH_FAILED = _bit(5, 7, 5)
    SCRIPT_FAILED_BEFORE_FINAL_AC = _bit(5, 6, 5)
    SCRIPT_FAILED_AFTER_FINAL_AC = _bit(5, 5, 5)

    def to_bytes5(self) -> bytes:
        return int(self).to_bytes(5, "big")

    @classmethod
    def from_bytes5(cls, value: bytes) -> Tvr:
        return cls(int.from_bytes(value.rjust(5, b"\x00")[-5:], "big"))


class Tsi(IntFlag):
    ODA_PERFORMED = _bit(1, 8, 2)
    CV_PERFORMED = _bit(1, 7, 2)
    CARD_RISK_PERFORMED = _bit(1, 6, 2)
    ISSUER_AUTH_PERFORMED = _bit(1, 5, 2)
    TERMINAL_RISK_PERFORMED = _bit(1, 4, 2)
    SCRIPT_PERFORMED = _bit(1, 3, 2)

    def to_bytes2(self) -> bytes:
        return int(self).to_bytes(2, "big")


class Aip(IntFlag):
    """Application Interchange Profile (82) byte 1 (Book 3 C1); byte 2 is contactless only."""

    SDA = _bit(1, 7, 2)
    DDA = _bit(1, 6, 2)
    CARDHOLDER_VERIFICATION = _bit(1, 5, 2)
    TERMINAL_RISK = _bit(1, 4, 2)
    ISSUER_AUTH = _bit(1, 3, 2)
    CDA = _bit(1, 1, 2)

    @classmethod
    def of(cls, value: bytes) -> Aip:
        return cls(int.from_bytes(value[:2].ljust(2, b"\x00"), "big") & sum(cls))
