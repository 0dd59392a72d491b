"""The settings schema: one table of every stored field (kind, limits, label, self-test).

Validation (model.py), the editor screens (ui/settings_screens.py) and the staged-edit
self-test choice (staging.py) all read this one table; nothing else lists fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firmware.host.keys import MAK_CHECK_CONVENTIONS
from firmware.host.mac import MAC_ALGORITHMS

KINDS = ("text", "digits", "int", "seconds", "choice", "multi", "bool", "hash", "operators")
SELF_TEST_ORDER = ("echo", "printer", "display")
TRANSACTION_TYPES = ("sale", "void", "refund", "balance", "preauth", "preauth_void",
                     "completion", "completion_void")


@dataclass(frozen=True)
class Field:
    """One stored setting. min/max: length for text/digits, value for int/seconds."""

    group: str
    name: str
    kind: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    unit: str = ""
    self_test: str | None = None  # "echo" | "printer" | "display": the diag a change needs
    hex: bool = False  # digits field that also accepts A-F (typed as digits on the keypad)
    editable: bool = True  # False: stored and validated, but not on the editor screens

    @property
    def key(self) -> str:
        return f"{self.group}.{self.name}"

    @property
    def label(self) -> str:
        """The catalog key of the field's on-screen name."""
        return f"f.{self.key}"


GROUPS = ("merchant", "comms", "transactions", "printer", "display", "security")

FIELDS: tuple[Field, ...] = (
    Field("merchant", "name", "text", 1, 24, self_test="printer"),
    Field("merchant", "mid", "digits", 15, 15),
    Field("merchant", "tid", "digits", 8, 8),
    Field("merchant", "receipt_header", "text", 0, 32, self_test="printer"),
    Field("merchant", "receipt_footer", "text", 0, 32, self_test="printer"),
    Field("comms", "host", "text", 1, 64, self_test="echo"),
    Field("comms", "port", "int", 1, 65535, self_test="echo"),
    Field("comms", "connect_timeout", "seconds", 0.1, 120, unit="s", self_test="echo"),
    Field("comms", "reply_timeout", "seconds", 0.1, 120, unit="s", self_test="echo"),
    Field("comms", "retries", "int", 0, 5, self_test="echo"),
    Field("comms", "tpdu", "digits", 10, 10, hex=True, self_test="echo"),
    # The ECR link's limits (docs/ecr.md, "Limits"): connections at once, an idle connection's
    # life, and how long a till's request id is remembered so that its retry is not run again.
    # Set by whoever wires the till (settings.json), not on the keypad.
    Field("comms", "ecr_max_connections", "int", 1, 64, editable=False),
    Field("comms", "ecr_idle_timeout_s", "int", 1, 86400, unit="s", editable=False),
    Field("comms", "ecr_repeat_window_s", "int", 60, 604800, unit="s", editable=False),
    # Who may drive the ECR link (docs/ecr.md, "Paired tills"): "paired" tills only (every
    # request carries the till, a sequence number and a MAC), or "open" (any peer, as before
    # pairing existed), which only a board taking card data over the link (an emulated one)
    # accepts; elsewhere "open" is refused in words and the link stays paired-only.
    Field("comms", "ecr_auth", "choice", choices=("paired", "open"), editable=False),
    # Over what the acquirer computes the MAK's check value (docs/dialect.md, "Working keys").
    # Set per acquirer in settings.json, not on the keypad.
    Field("comms", "mak_check", "choice", choices=MAK_CHECK_CONVENTIONS, editable=False),
    # Which MAC fills field 64 (docs/dialect.md, "MAC strength"): cup_ecb, the dialect's own
    # (forgeable by changing two blocks consistently), or x9_19 (ISO 9797-1 algorithm 3 with
    # the double-length MAK) where the acquirer takes it. Per acquirer in settings.json.
    Field("comms", "mac_algorithm", "choice", choices=MAC_ALGORITHMS, editable=False),
    # Track encryption (docs/dialect.md, "Track encryption"): sign on for a track data key
    # (60.3 = 004) and send fields 35/36 encrypted under it. Per acquirer in settings.json.
    Field("comms", "track_encryption", "bool", editable=False),
    # Field 22 of a fallback swipe of a chip card: 80x (the CUP dialect) or 02x with 60.5 = 2
    # (some acquirers; docs/dialect.md, "Chip"). Set per acquirer in settings.json.
    Field("comms", "fallback_entry_code", "choice", choices=("80", "02"), editable=False),
    # TLS to the acquirer (firmware/host/tls.py): on or off, the pinned CA (a path under the data
    # directory), and the name the host's certificate must carry ("" = the host setting).
    # Set at provisioning in settings.json, not on the keypad.
    Field("comms", "tls", "bool", editable=False),
    Field("comms", "tls_ca", "text", 0, 200, editable=False),
    Field("comms", "tls_server_name", "text", 0, 253, editable=False),
    Field("comms", "tls_client_cert", "text", 0, 200, editable=False),
    Field("comms", "tls_client_key", "text", 0, 200, editable=False),
    Field("transactions", "enabled", "multi", choices=TRANSACTION_TYPES),
    Field("transactions", "max_amount", "int", 1, 9_999_999_999, unit="fen"),
    Field("transactions", "reversal_retries", "int", 1, 10),
    Field("transactions", "duplicate_window_s", "int", 0, 3600, unit="s"),
    Field("transactions", "pin_tries", "int", 1, 9),
    Field("transactions", "allow_pin_bypass", "bool"),
    Field("transactions", "allow_fallback_swipe", "bool"),
    Field("transactions", "chip_fallback_after", "int", 0, 9),
    Field("transactions", "currency", "digits", 3, 3),
    Field("transactions", "retention_days", "int", 1, 3650, editable=False),
    Field("transactions", "hot_batches", "int", 1, 100, editable=False),
    Field("transactions", "held_max_age_min", "int", 1, 10080, unit="min"),
    Field("transactions", "operator", "digits", 1, 4, editable=False),
    # A firmware update is refused while the batch has been open longer than this (docs/updates.md):
    # the restart must not land on a day's takings that nobody settled. Set in settings.json.
    Field("transactions", "update_max_batch_hours", "int", 1, 720, unit="h", editable=False),
    Field("printer", "profile", "choice", choices=("58mm", "58mm-tear", "80mm"), self_test="printer"),
    Field("printer", "copies", "int", 1, 3, self_test="printer"),
    Field("printer", "density", "int", 1, 8, self_test="printer"),
    Field("printer", "no_signature_limit", "int", 0, 99_999_999, unit="fen"),
    # Stop between copies until the operator has torn one off; auto: when the printer has no
    # cutter (its profile says), since the next copy would otherwise run on from the last.
    Field("printer", "tear_pause", "choice", choices=("auto", "on", "off")),
    # Language needs no test: the next frame is already drawn in it and the operator sees it.
    Field("display", "language", "choice", choices=("en", "zh_CN")),
    Field("display", "contrast", "int", 1, 10, self_test="display"),
    Field("display", "idle_timeout_s", "int", 10, 600, unit="s"),
    Field("display", "result_timeout_s", "int", 3, 300, unit="s"),
    Field("security", "max_password_tries", "int", 3, 10),
    Field("security", "lock_minutes", "int", 1, 60),
    # The password is changed through its own screen (ChangePassword), never edited as a field.
    Field("security", "supervisor_hash", "hash", editable=False),
    Field("security", "password_changed", "bool", editable=False),
    # The cashiers (operators 01-99) and their PIN hashes, {"01": "scrypt$..."}; {} = none, the
    # terminal's one implicit operator (transactions.operator). Operator 00 is the supervisor,
    # whose PIN is the supervisor password. Managed on the keypad (Manage > Operators), never
    # edited as a field (docs/operating.md, "Operators").
    Field("security", "operators", "operators", editable=False),
)

BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}

# Fields added after settings files were already in the field: an old file lacking them is
# migrated (filled from factory at load, and logged). Any other missing field is a broken file.
ADDED_FIELDS = ("comms.retries", "security.max_password_tries", "security.lock_minutes",
                "printer.no_signature_limit", "transactions.held_max_age_min",
                "comms.ecr_max_connections", "comms.ecr_idle_timeout_s", "comms.ecr_repeat_window_s",
                "comms.mak_check", "printer.tear_pause", "display.result_timeout_s",
                "transactions.chip_fallback_after", "comms.fallback_entry_code",
                "comms.tls", "comms.tls_ca", "comms.tls_server_name", "comms.ecr_auth",
                "comms.mac_algorithm", "comms.track_encryption",
                "security.operators", "comms.tls_client_cert", "comms.tls_client_key",
                "transactions.update_max_batch_hours", "transactions.hot_batches")


# The settings files' version: how many fields were added since the first release. A file
# written by newer firmware (a fall back after an update) carries a higher one, and its fields
# this firmware does not know are kept as they are rather than refused (docs/updates.md,
# "Settings after a fallback"): every field is added to ADDED_FIELDS, so this only grows.
SETTINGS_VERSION = len(ADDED_FIELDS)
VERSION_KEY = "_version"


def field(group: str, name: str) -> Field:
    return BY_KEY[f"{group}.{name}"]


def group_fields(group: str, editable_only: bool = True) -> tuple[Field, ...]:
    return tuple(f for f in FIELDS if f.group == group and (f.editable or not editable_only))


def self_tests_for(keys: Mapping[str, Any] | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The diag names the changed fields (given as "group.name") need, in SELF_TEST_ORDER."""
    wanted = {BY_KEY[k].self_test for k in keys if k in BY_KEY}
    return tuple(name for name in SELF_TEST_ORDER if name in wanted)


# Labels: key -> (English, 简体中文). Short enough for a 16-cell row beside a value.
LABELS: dict[str, tuple[str, str]] = {
    "g.merchant": ("Merchant", "商户"),
    "g.comms": ("Comms", "通讯"),
    "g.transactions": ("Transactions", "交易"),
    "g.printer": ("Printer", "打印"),
    "g.display": ("Display", "显示"),
    "g.security": ("Security", "安全"),
    "f.merchant.name": ("Name", "商户名"),
    "f.merchant.mid": ("MID", "商户号"),
    "f.merchant.tid": ("TID", "终端号"),
    "f.merchant.receipt_header": ("Header", "票头"),
    "f.merchant.receipt_footer": ("Footer", "票尾"),
    "f.comms.host": ("Host", "主机"),
    "f.comms.port": ("Port", "端口"),
    "f.comms.connect_timeout": ("Connect", "连接超时"),
    "f.comms.reply_timeout": ("Reply", "应答超时"),
    "f.comms.retries": ("Retries", "重试"),
    "f.comms.tpdu": ("TPDU", "TPDU"),
    "f.comms.ecr_max_connections": ("ECR links", "收银机连接数"),
    "f.comms.ecr_idle_timeout_s": ("ECR idle", "收银机空闲"),
    "f.comms.ecr_repeat_window_s": ("ECR repeat", "收银机重发期"),
    "f.comms.ecr_auth": ("ECR tills", "收银机认证"),
    "f.comms.mak_check": ("MAK check", "MAC密钥校验"),
    "f.comms.mac_algorithm": ("MAC algorithm", "MAC算法"),
    "f.comms.track_encryption": ("Track encrypt", "磁道加密"),
    "f.comms.fallback_entry_code": ("Fallback code", "降级交易代码"),
    "f.comms.tls": ("TLS", "安全连接"),
    "f.comms.tls_ca": ("TLS CA file", "安全连接根证书"),
    "f.comms.tls_server_name": ("TLS host name", "安全连接主机名"),
    "f.comms.tls_client_cert": ("TLS own cert", "终端证书"),
    "f.comms.tls_client_key": ("TLS own key", "终端证书私钥"),
    "f.transactions.enabled": ("Enabled", "开通交易"),
    "f.transactions.max_amount": ("Limit", "限额"),
    "f.transactions.reversal_retries": ("Rev tries", "冲正次数"),
    "f.transactions.duplicate_window_s": ("Dup window", "重复判断"),
    "f.transactions.held_max_age_min": ("Held max age", "挂单时限"),
    "f.transactions.pin_tries": ("PIN tries", "密码次数"),
    "f.transactions.chip_fallback_after": ("Chip tries", "芯片尝试次数"),
    "f.transactions.allow_pin_bypass": ("PIN bypass", "免密"),
    "f.transactions.allow_fallback_swipe": ("Fallback", "降级刷卡"),
    "f.transactions.currency": ("Currency", "货币"),
    "f.transactions.retention_days": ("Keep days", "保留天数"),
    "f.transactions.hot_batches": ("Batches in journal", "日志内批次数"),
    "f.transactions.operator": ("Operator", "操作员"),
    "f.transactions.update_max_batch_hours": ("Update batch h", "升级前批次时限"),
    "f.printer.profile": ("Paper", "纸宽"),
    "f.printer.copies": ("Copies", "联数"),
    "f.printer.density": ("Density", "浓度"),
    "f.printer.no_signature_limit": ("No-sign", "免签额"),
    "f.printer.tear_pause": ("Tear pause", "撕纸暂停"),
    "f.display.language": ("Lang", "语言"),
    "f.display.contrast": ("Contrast", "对比度"),
    "f.display.idle_timeout_s": ("Idle time", "空闲超时"),
    "f.display.result_timeout_s": ("Result time", "结果显示"),
    "f.security.max_password_tries": ("Pwd tries", "密码次数"),
    "f.security.lock_minutes": ("Lock min", "锁定分钟"),
    "f.security.supervisor_hash": ("Password", "密码"),
    "f.security.password_changed": ("Pwd changed", "已改密码"),
    "f.security.operators": ("Operators", "操作员"),
    "c.sale": ("Sale", "消费"),
    "c.void": ("Void", "撤销"),
    "c.refund": ("Refund", "退货"),
    "c.balance": ("Balance", "余额"),
    "c.preauth": ("Pre-auth", "预授权"),
    "c.preauth_void": ("Pre-auth void", "预授权撤销"),
    "c.completion": ("Completion", "预授权完成"),
    "c.completion_void": ("Compl. void", "完成撤销"),
    "c.en": ("English", "English"),
    "c.zh_CN": ("简体中文", "简体中文"),
    "c.58mm": ("58mm", "58mm"),
    "c.58mm-tear": ("58mm no cut", "58mm 手撕"),
    "c.auto": ("Auto", "自动"),
    "c.on": ("On", "开"),
    "c.off": ("Off", "关"),
    "c.80mm": ("80mm", "80mm"),
    "yes": ("Yes", "是"),
    "no": ("No", "否"),
}


def label(key: str, lang: str) -> str:
    entry = LABELS.get(key)
    if entry is None:
        return key
    return entry[1] if lang.startswith("zh") else entry[0]


def format_value(fld: Field, value: Any, lang: str) -> str:
    """A stored value as the field list shows it (short)."""
    if fld.kind == "bool":
        return label("yes" if value else "no", lang)
    if fld.kind == "choice":
        return label(f"c.{value}", lang)
    if fld.kind == "multi":
        items = list(value) if isinstance(value, list | tuple) else []
        return f"{len(items)}/{len(fld.choices)}"
    if fld.kind == "seconds":
        return f"{float(value):.1f}s" if isinstance(value, int | float) else str(value)
    if fld.kind == "int" and fld.unit == "fen" and isinstance(value, int):
        return f"{value // 100}.{value % 100:02d}"
    if fld.kind == "int" and fld.unit == "s":
        return f"{value}s"
    if fld.kind == "hash":
        return "******"
    if fld.kind == "operators":
        return str(len(value)) if isinstance(value, dict) else "?"
    return str(value)
