"""The settings model: factory defaults, validation with a message per field, migration.

Settings are plain data (a dict of groups of fields, described by schema.py). Validation
names every wrong field in words (en or zh_CN); nothing here touches a file (see store.py).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
from itertools import pairwise
from typing import Any

from firmware.digits import is_digits
from firmware.host.keys import DEFAULT_MAK_CHECK
from firmware.host.mac import DEFAULT_MAC_ALGORITHM
from firmware.settings.schema import ADDED_FIELDS, BY_KEY, GROUPS, Field, label

FACTORY_PASSWORD = "000000"  # documented in docs/provisioning.md; must be changed before any payment

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
        "retries": 1,  # connection attempts before giving up
        "tpdu": "6000030000",
        # A shop has one or two tills and perhaps a service laptop: 8 leaves room for them and
        # keeps all but a few of the device's 1,024 descriptors for the journal, host and devices.
        "ecr_max_connections": 8,
        # A till is quiet between customers for minutes; a peer silent for 5 minutes is gone (a
        # half-open connection never says so) and its slot goes back to the others.
        "ecr_idle_timeout_s": 300,
        # A till retries within seconds or, after its own restart, within the business day.
        "ecr_repeat_window_s": 86400,
        # Only paired tills drive the link (docs/ecr.md, "Paired tills"); "open" is for an
        # emulated board's tests and console only.
        "ecr_auth": "paired",
        "mak_check": DEFAULT_MAK_CHECK,  # the open CUP terminals' convention (docs/dialect.md)
        "mac_algorithm": DEFAULT_MAC_ALGORITHM,  # the dialect's CUP ECB MAC (docs/dialect.md)
        "track_encryption": False,  # tracks 35/36 in clear unless the acquirer gives a TDK
        "fallback_entry_code": "80",  # field 22 of a fallback swipe (docs/dialect.md, "Chip")
        "tls": False,  # TLS to the host, with the acquirer's CA pinned (docs/security.md)
        "tls_ca": "keys/acquirer-ca.pem",
        "tls_server_name": "",
        # A client certificate, for an acquirer that asks for one: PEM files under the data
        # directory ("" = none). The key is a 0600 file: Python's ssl takes keys from files only
        # (docs/security.md "TLS client key").
        "tls_client_cert": "",
        "tls_client_key": "",
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
        # A chip card may be swiped (fallback, 22 = 80x, 60.5 = 2) once its chip failed this
        # many times in the same transaction; 0: never (docs/chip.md).
        "chip_fallback_after": 3,
        "currency": "156",
        "retention_days": 90,
        # Settled batches kept in the journal itself; older ones move to the monthly archive
        # files (docs/journal.md), where retention_days counts from the end of their month.
        "hot_batches": 3,
        "held_max_age_min": 120,
        "update_max_batch_hours": 24,
        "operator": "01",
    },
    # no_signature_limit: merchant copies of PIN-verified transactions up to this many fen
    # print no signature line (免签); 0 = always a signature line.
    "printer": {"profile": "58mm", "copies": 2, "density": 4, "no_signature_limit": 0,
                "tear_pause": "auto"},
    # result_timeout_s: a result screen goes back to idle after this long without a key.
    "display": {"language": "en", "contrast": 5, "idle_timeout_s": 60, "result_timeout_s": 15},
    "security": {"supervisor_hash": "", "password_changed": False,
                 "max_password_tries": 5, "lock_minutes": 5, "operators": {}},
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


PASSWORD_MIN, PASSWORD_MAX = 6, 12

# Why a new supervisor password is refused: rule key -> (English, 简体中文). The keys are the
# catalog keys the keypad and the ECR link show (firmware/security.py registers them).
PASSWORD_RULES: dict[str, tuple[str, str]] = {
    "password_rule_digits": ("The new password must be 6-12 digits 0-9", "新密码须为6-12位数字"),
    "password_rule_one_digit": ("The new password may not be one digit repeated (111111)",
                                "新密码不能是同一数字重复(如111111)"),
    "password_rule_run": ("The new password may not be a run of digits (123456, 987654, 890123)",
                          "新密码不能是连续数字(如123456、987654、890123)"),
    "password_rule_factory": ("The new password may not be the factory one", "新密码不能是出厂密码"),
}


def password_problem(password: str) -> str | None:
    """The rule a new supervisor password breaks (a PASSWORD_RULES key), or None if it is fine.

    Every way a password is set (ECR set_password, the keypad's Change password, provisioning)
    asks this one function. A run steps by one, up or down, and may wrap round (890123, 321098):
    a wrapped run is as easy to guess as a straight one, a walk along the keypad's digit row.
    """
    if not is_digits(password, PASSWORD_MIN, PASSWORD_MAX):
        return "password_rule_digits"
    if password == FACTORY_PASSWORD:
        return "password_rule_factory"
    if len(set(password)) == 1:
        return "password_rule_one_digit"
    steps = {(int(b) - int(a)) % 10 for a, b in pairwise(password)}
    if steps in ({1}, {9}):
        return "password_rule_run"
    return None


def password_words(rule: str, lang: str = "en") -> str:
    pair = PASSWORD_RULES[rule]
    return pair[1] if lang.startswith("zh") else pair[0]


# Operators (docs/operating.md, "Operators"): 00 is the supervisor, whose PIN is the supervisor
# password; 01-99 are cashiers with PINs of their own, hashed as the supervisor password is.
SUPERVISOR = "00"
OPERATOR_CODES = tuple(f"{n:02d}" for n in range(1, 100))
OPERATOR_PIN_MIN, OPERATOR_PIN_MAX = 4, 6

# Why a new operator PIN is refused: rule key -> (English, 简体中文), as PASSWORD_RULES.
OPERATOR_PIN_RULES: dict[str, tuple[str, str]] = {
    "operator_pin_rule_digits": ("The PIN must be 4-6 digits 0-9", "密码须为4-6位数字"),
    "operator_pin_rule_one_digit": ("The PIN may not be one digit repeated (1111)",
                                    "密码不能是同一数字重复(如1111)"),
    "operator_pin_rule_run": ("The PIN may not be a run of digits (1234, 9876)",
                              "密码不能是连续数字(如1234、9876)"),
}


def operator_pin_problem(pin: str) -> str | None:
    """The rule a new cashier PIN breaks (an OPERATOR_PIN_RULES key), or None if it is fine:
    4-6 digits, not one digit repeated, not a run (the supervisor password's rules, shorter)."""
    if not is_digits(pin, OPERATOR_PIN_MIN, OPERATOR_PIN_MAX):
        return "operator_pin_rule_digits"
    if len(set(pin)) == 1:
        return "operator_pin_rule_one_digit"
    if {(int(b) - int(a)) % 10 for a, b in pairwise(pin)} in ({1}, {9}):
        return "operator_pin_rule_run"
    return None


def _operators_problem(value: Any) -> str | None:
    """What is wrong with an operator table, shown without words of either language and never
    with a hash (a bad number as given, a bad hash as "07: ***"); None if it is fine."""
    if not isinstance(value, dict):
        return _shown(value)
    for code, hashed in value.items():
        if code not in OPERATOR_CODES:
            return _shown(code)
        if not (isinstance(hashed, str) and hashed.startswith("scrypt$") and hashed.count("$") == 5):
            return f"{code}: ***"
    return None


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


# Problem messages: key -> (English, 简体中文); short, as they are shown on the LCD.
MESSAGES: dict[str, tuple[str, str]] = {
    "not_table": ("settings must be a table of groups, got {given}", "设置格式错误: {given}"),
    "group_not_table": ("group {group}: must be a table, got {given}", "{group}组格式错误: {given}"),
    "unknown_group": ("unknown group {group}", "未知设置组 {group}"),
    "unknown_field": ("{label}: unknown field", "{label}: 未知字段"),
    "missing": ("{label}: missing", "{label}: 缺少"),
    "text": ("{label}: text of {min}-{max} chars, got {given}",
             "{label}: 应为{min}-{max}个字符, 实为{given}"),
    "digits": ("{label}: {min} digits, got {given}", "{label}: 应为{min}位数字, 实为{given}"),
    "digits_range": ("{label}: {min}-{max} digits, got {given}",
                     "{label}: 应为{min}-{max}位数字, 实为{given}"),
    "hex": ("{label}: {min} hex digits, got {given}", "{label}: 应为{min}位十六进制, 实为{given}"),
    "int": ("{label}: whole number {min}-{max}, got {given}", "{label}: 应为整数{min}-{max}, 实为{given}"),
    "seconds": ("{label}: {min}-{max} s, got {given}", "{label}: 应为{min}-{max}秒, 实为{given}"),
    "choice": ("{label}: one of {choices}, got {given}", "{label}: 应为{choices}之一, 实为{given}"),
    "multi": ("{label}: known names, no repeats, got {given}", "{label}: 应为不重复的已知项, 实为{given}"),
    "bool": ("{label}: yes or no, got {given}", "{label}: 应为是或否, 实为{given}"),
    "hash": ("{label}: not a valid password hash", "{label}: 密码散列无效"),
    "operators": ("{label}: numbers 01-99 with PIN hashes, got {given}",
                  "{label}: 应为01-99号及其密码散列, 实为{given}"),
}


def _shown(value: Any) -> str:
    """A wrong value as words, cut short so a message fits a few LCD rows."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 14 else text[:12] + ".."


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _field_problem(fld: Field, value: Any) -> tuple[str, dict[str, Any]] | None:
    """(message key, values) if value is wrong for fld, else None."""
    lo = fld.min if fld.min is not None else 0
    hi = fld.max if fld.max is not None else 0
    values: dict[str, Any] = {"min": _number(lo), "max": _number(hi), "given": _shown(value),
                              "choices": "/".join(fld.choices)}
    kind = fld.kind
    if kind == "text":
        ok = isinstance(value, str) and lo <= len(value) <= hi and value.isprintable() and (
            lo == 0 or bool(value.strip()))
        return None if ok else ("text", values)
    if kind == "digits":
        allowed = "0123456789ABCDEFabcdef" if fld.hex else "0123456789"
        ok = isinstance(value, str) and lo <= len(value) <= hi and all(ch in allowed for ch in value)
        if ok:
            return None
        return ("hex" if fld.hex else "digits" if lo == hi else "digits_range", values)
    if kind == "int":
        return None if _is_int(value) and lo <= value <= hi else ("int", values)
    if kind == "seconds":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi
        return None if ok else ("seconds", values)
    if kind == "choice":
        return None if isinstance(value, str) and value in fld.choices else ("choice", values)
    if kind == "multi":
        ok = (isinstance(value, list | tuple) and all(isinstance(v, str) and v in fld.choices for v in value)
              and len(set(value)) == len(value))
        return None if ok else ("multi", values)
    if kind == "bool":
        return None if isinstance(value, bool) else ("bool", values)
    if kind == "hash":
        ok = isinstance(value, str) and value.startswith("scrypt$") and value.count("$") == 5
        return None if ok else ("hash", {})  # never echo a hash (or a typo'd password) back
    if kind == "operators":
        wrong = _operators_problem(value)
        return None if wrong is None else ("operators", {**values, "given": wrong})
    raise ValueError(f"schema field {fld.key} has an unknown kind {kind!r}")


def field_problem(key: str, value: Any, lang: str = "en") -> str | None:
    """Words for what is wrong with value for the field "group.name", or None if it is fine."""
    fld = BY_KEY[key]
    problem = _field_problem(fld, value)
    if problem is None:
        return None
    entry = MESSAGES[problem[0]]
    return (entry[1] if lang.startswith("zh") else entry[0]).format(label=label(fld.label, lang),
                                                                    **problem[1])


def problems(data: Any, lang: str = "en") -> dict[str, str]:
    """Every wrong field as {"group.name": words} in lang; {} when data is valid."""

    def words(key: str, **values: Any) -> str:
        entry = MESSAGES[key]
        return (entry[1] if lang.startswith("zh") else entry[0]).format(**values)

    if not isinstance(data, dict):
        return {"settings": words("not_table", given=_shown(data))}
    found: dict[str, str] = {}
    for group, fields in data.items():
        if group not in GROUPS:
            found[str(group)] = words("unknown_group", group=_shown(group))
        elif not isinstance(fields, dict):
            found[group] = words("group_not_table", group=group, given=_shown(fields))
        else:
            for name in fields:
                if f"{group}.{name}" not in BY_KEY:
                    found[f"{group}.{name}"] = words("unknown_field", label=f"{group}.{name}")
    for key, fld in BY_KEY.items():
        group = data.get(fld.group)
        if not isinstance(group, dict):
            continue  # already reported for the group as a whole
        what = label(fld.label, lang)
        if fld.name not in group:
            found[key] = words("missing", label=what)
            continue
        problem = _field_problem(fld, group[fld.name])
        if problem is not None:
            found[key] = words(problem[0], label=what, **problem[1])
    return found


def validate(data: dict[str, dict[str, Any]]) -> None:
    """Raise SettingsInvalid naming every wrong field (English words)."""
    found = problems(data)
    if found:
        raise SettingsInvalid(found)


def migrate(data: Any) -> tuple[Any, tuple[str, ...]]:
    """Fill fields added since the file was written (schema.ADDED_FIELDS) from FACTORY.

    Returns (data, the keys filled). Only those fields: any other missing field means a broken
    file, which validation reports instead of quietly defaulting it.
    """
    if not isinstance(data, dict):
        return data, ()
    out = copy.deepcopy(data)
    filled = []
    for key in ADDED_FIELDS:
        group, name = key.split(".")
        fields = out.get(group)
        if isinstance(fields, dict) and name not in fields:
            fields[name] = copy.deepcopy(FACTORY[group][name])
            filled.append(key)
    return out, tuple(filled)
