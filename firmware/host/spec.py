"""The one ISO 8583 field table of the CUP POS dialect (pyiso8583 spec dict).

Terminal and host simulator both encode through SPEC; to_wire/from_wire hold the
only value rules pyiso8583 cannot express (digit checks, '=' as nibble D in tracks).
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "BINARY_FIELDS",
    "FIELD_NAMES",
    "NUMERIC_FIELDS",
    "SENSITIVE_FIELDS",
    "SPEC",
    "TRACK_FIELDS",
    "from_wire",
    "to_wire",
]

FieldSpec = dict[str, Any]


def _fixed_n(max_len: int, desc: str, *, left_justified: bool = False) -> FieldSpec:
    # Odd-length fixed numerics need one pad nibble; CUP puts it first (right-justified
    # digits) except for field 22, whose pad goes last.
    pad = {"right_pad": "0"} if left_justified else {"left_pad": "0"}
    return {
        "data_enc": "b",
        "len_enc": "bcd",
        "len_type": 0,
        "max_len": max_len,
        "len_count": "nibbles",
        "desc": desc,
        **pad,
    }


def _var_n(len_type: int, max_len: int, desc: str) -> FieldSpec:
    # Variable numerics are left-justified with a trailing pad nibble and the
    # length prefix (BCD) counts digits, not bytes.
    return {
        "data_enc": "b",
        "len_enc": "bcd",
        "len_type": len_type,
        "max_len": max_len,
        "len_count": "nibbles",
        "right_pad": "0",
        "desc": desc,
    }


def _text(len_type: int, max_len: int, desc: str, encoding: str = "ascii") -> FieldSpec:
    return {
        "data_enc": encoding,
        "len_enc": "bcd",
        "len_type": len_type,
        "max_len": max_len,
        "desc": desc,
    }


def _binary(len_type: int, max_len: int, desc: str) -> FieldSpec:
    # Binary fields travel as raw bytes; pyiso8583 presents them as uppercase hex.
    return {
        "data_enc": "b",
        "len_enc": "bcd",
        "len_type": len_type,
        "max_len": max_len,
        "desc": desc,
    }


LLVAR: Final = 1  # one BCD length byte
LLLVAR: Final = 2  # two BCD length bytes

SPEC: Final[dict[str, FieldSpec]] = {
    # TPDU and the 6-byte header are framing (framing.py): the MAC excludes them.
    "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0,
          "desc": "Header (handled by framing)"},
    "t": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 2,
          "desc": "Message Type Indicator (BCD)"},
    "p": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8,
          "desc": "Primary bitmap"},
    # No "1": a secondary bitmap is not part of the dialect and is rejected.
    "2": _var_n(LLVAR, 19, "Primary account number"),
    "3": _fixed_n(6, "Processing code"),
    "4": _fixed_n(12, "Amount, transaction"),
    "11": _fixed_n(6, "System trace audit number"),
    "12": _fixed_n(6, "Time, local transaction (hhmmss)"),
    "13": _fixed_n(4, "Date, local transaction (MMDD)"),
    "14": _fixed_n(4, "Date, expiration (YYMM)"),
    "15": _fixed_n(4, "Date, settlement (MMDD)"),
    "22": _fixed_n(3, "POS entry mode", left_justified=True),
    "23": _fixed_n(3, "Card sequence number"),
    "25": _fixed_n(2, "POS condition code"),
    "26": _fixed_n(2, "POS PIN capture code"),
    "32": _var_n(LLVAR, 11, "Acquiring institution id"),
    "35": _var_n(LLVAR, 37, "Track 2 data"),
    "36": _var_n(LLLVAR, 104, "Track 3 data"),
    "37": _text(0, 12, "Retrieval reference number"),
    "38": _text(0, 6, "Authorization id response"),
    "39": _text(0, 2, "Response code"),
    "41": _text(0, 8, "Card acceptor terminal id"),
    "42": _text(0, 15, "Card acceptor id"),
    "44": _text(LLVAR, 25, "Additional response data"),
    "48": _var_n(LLLVAR, 322, "Additional data, private"),
    "49": _text(0, 3, "Currency code, transaction"),
    "52": _binary(0, 8, "PIN data"),
    "53": _fixed_n(16, "Security related control information"),
    "54": _text(LLLVAR, 20, "Balance amount"),
    # Chip: the request's tags (TLV) and the reply's 91 / 71 / 72 (docs/dialect.md, "Chip").
    "55": _binary(LLLVAR, 255, "ICC system related data"),
    "60": _var_n(LLLVAR, 17, "Reserved private (type, batch, network code)"),
    "61": _var_n(LLLVAR, 29, "Original message (batch, trace, date)"),
    # Sign-on: the working keys; 0800/0820 with 60.3 370-382: the chip parameter download's
    # one status byte + TLV (firmware/host/params_download.py).
    "62": _binary(LLLVAR, 512, "Reserved private (working keys, chip parameters)"),
    # GBK, not ASCII: hosts put the issuer's name in Chinese here; GBK is a
    # superset of ASCII, so every ASCII value encodes to the same bytes.
    "63": _text(LLLVAR, 163, "Reserved private (operator / card organisation)", "gbk"),
    "64": _binary(0, 8, "Message authentication code"),
}

FIELD_NAMES: Final[dict[str, str]] = {
    "t": "MTI",
    "p": "bitmap",
    "2": "PAN",
    "3": "processing code",
    "4": "amount",
    "11": "STAN",
    "12": "local time",
    "13": "local date",
    "14": "expiry",
    "15": "settlement date",
    "22": "entry mode",
    "23": "card sequence",
    "25": "condition code",
    "26": "PIN capture code",
    "32": "acquirer id",
    "35": "track 2",
    "36": "track 3",
    "37": "RRN",
    "38": "auth code",
    "39": "response code",
    "41": "terminal id",
    "42": "merchant id",
    "44": "institution ids",
    "48": "private data",
    "49": "currency",
    "52": "PIN block",
    "53": "security control",
    "54": "balance",
    "55": "ICC data",
    "60": "type/batch/network code",
    "61": "original transaction",
    "62": "working keys / chip parameters",
    "63": "operator/card organisation",
    "64": "MAC",
}

NUMERIC_FIELDS: Final = frozenset(
    k for k, v in SPEC.items() if v.get("len_count") == "nibbles" and k not in {"35", "36"}
)
TRACK_FIELDS: Final = frozenset({"35", "36"})
BINARY_FIELDS: Final = frozenset(
    k for k, v in SPEC.items() if v["data_enc"] == "b" and k not in NUMERIC_FIELDS | TRACK_FIELDS
) - {"t", "p"}
# Values that must never reach a log line or the disk in clear.
SENSITIVE_FIELDS: Final = frozenset({"2", "35", "36", "52", "55", "62"})

_DIGITS: Final = frozenset("0123456789")
_TRACK_APP: Final = frozenset("0123456789=")
_TRACK_WIRE: Final = frozenset("0123456789D")
_HEX: Final = frozenset("0123456789ABCDEFabcdef")


def to_wire(field: str, value: str) -> str:
    """Turn an application value into what pyiso8583 packs; ValueError says why not.

    Numeric fields must be ASCII digits (pyiso8583 would accept A-F); tracks carry
    '=' as nibble D; binary fields are hex.
    """
    if not isinstance(value, str):
        raise ValueError(f"value must be str, not {type(value).__name__}")
    if field in NUMERIC_FIELDS:
        if not set(value) <= _DIGITS:
            raise ValueError("numeric field holds a non-digit")
        return value
    if field in TRACK_FIELDS:
        if not set(value) <= _TRACK_APP:
            raise ValueError("track data may hold only digits and '='")
        return value.replace("=", "D")
    if field in BINARY_FIELDS:
        if not set(value) <= _HEX or len(value) % 2:
            raise ValueError("binary field must be an even-length hex string")
        return value.upper()
    return value


def from_wire(field: str, value: str) -> str:
    """Check and convert a value pyiso8583 decoded; ValueError says what is wrong."""
    if field in NUMERIC_FIELDS:
        if not set(value) <= _DIGITS:
            raise ValueError("non-BCD nibble in a numeric field")
        return value
    if field in TRACK_FIELDS:
        if not set(value) <= _TRACK_WIRE:
            raise ValueError("track data holds a nibble other than 0-9 or D")
        return value.replace("D", "=")
    return value
