"""The settings model: groups, factory defaults, validation with a message per field.

Settings are plain data (a dict of groups of fields). Validation names every
wrong field in words; nothing here touches a file (see store.py).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
from typing import Any

FACTORY_PASSWORD = "000000"  # documented in README; must be changed before any payment

FACTORY: dict[str, dict[str, Any]] = {
    "merchant": {
        "name": "DEMO MERCHANT",
        "mid": "123456789012345",
        "tid": "12345678",
        "receipt_header": "",
        "receipt_footer": "Thank you",
    },
    "comms": {
        "host": "127.0.0.1",
        "port": 5800,
        "connect_timeout": 10.0,
        "reply_timeout": 30.0,
        "tpdu": "6000030000",
    },
    "transactions": {
        "enabled": ["sale", "void", "refund", "balance", "preauth", "preauth_void",
                    "completion", "completion_void"],
        "max_amount": 10_000_000,
        "reversal_retries": 3,
        "duplicate_window_s": 300,
        "pin_tries": 3,
        "allow_pin_bypass": False,
        "allow_fallback_swipe": False,
        "currency": "156",
        "retention_days": 90,
        "operator": "01",
    },
    # no_signature_limit: merchant copies of PIN-verified transactions up to this many fen
    # print no signature line (免签); 0 = always a signature line.
    "printer": {"profile": "58mm", "copies": 2, "density": 4, "no_signature_limit": 0},
    "display": {"language": "en", "contrast": 5, "idle_timeout_s": 60},
    "security": {"supervisor_hash": "", "password_changed": False},
}


class SettingsInvalid(Exception):
    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {v}" for k, v in problems.items()))


def factory() -> dict[str, dict[str, Any]]:
    data = copy.deepcopy(FACTORY)
    data["security"]["supervisor_hash"] = hash_password(FACTORY_PASSWORD)
    return data


def hash_password(password: str, salt: bytes | None = None) -> str:
    """Salted scrypt; stored as 'scrypt$n$r$p$salt$hash' (hex)."""
    salt = salt if salt is not None else os.urandom(16)
    n, r, p = 2**14, 8, 1
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n),
                             r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def _digits(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and value.isdigit()


def validate(data: dict[str, dict[str, Any]]) -> None:
    """Raise SettingsInvalid naming every wrong field."""
    problems: dict[str, str] = {}

    def get(group: str, name: str) -> Any:
        return data.get(group, {}).get(name)

    if not isinstance(get("merchant", "name"), str) or not get("merchant", "name").strip():
        problems["merchant.name"] = "the merchant name cannot be empty"
    if not _digits(get("merchant", "mid"), 15):
        problems["merchant.mid"] = "the merchant ID must be 15 digits"
    if not _digits(get("merchant", "tid"), 8):
        problems["merchant.tid"] = "the terminal ID must be 8 digits"
    port = get("comms", "port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        problems["comms.port"] = "the port must be a number from 1 to 65535"
    if not isinstance(get("comms", "host"), str) or not get("comms", "host"):
        problems["comms.host"] = "the host address cannot be empty"
    for name in ("connect_timeout", "reply_timeout"):
        value = get("comms", name)
        if not isinstance(value, int | float) or not 0.1 <= value <= 120:
            problems[f"comms.{name}"] = "a timeout must be between 0.1 and 120 seconds"
    max_amount = get("transactions", "max_amount")
    if not isinstance(max_amount, int) or max_amount <= 0:
        problems["transactions.max_amount"] = "the maximum amount must be a positive number of fen"
    retries = get("transactions", "reversal_retries")
    if not isinstance(retries, int) or not 1 <= retries <= 10:
        problems["transactions.reversal_retries"] = "reversal retries must be 1 to 10"
    if not _digits(get("transactions", "currency"), 3):
        problems["transactions.currency"] = "the currency must be a 3-digit ISO 4217 code"
    if get("printer", "profile") not in ("58mm", "80mm"):
        problems["printer.profile"] = "the printer profile must be 58mm or 80mm"
    copies = get("printer", "copies")
    if not isinstance(copies, int) or isinstance(copies, bool) or not 1 <= copies <= 3:
        problems["printer.copies"] = "copies must be 1 (merchant), 2 (+ cardholder) or 3 (+ bank)"
    limit = get("printer", "no_signature_limit")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        problems["printer.no_signature_limit"] = "the no-signature limit must be 0 or more fen"
    if get("display", "language") not in ("en", "zh_CN"):
        problems["display.language"] = "the language must be en or zh_CN"
    if problems:
        raise SettingsInvalid(problems)
