"""Host response codes (field 39): what each means to the operator, in both catalogs.

Each code has an action class that tells the engine and the screens what may
follow: success, retry possible, do not retry, operator action, system fault.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ActionClass(StrEnum):
    SUCCESS = "success"
    RETRY = "retry"  # the same request may succeed later
    DO_NOT_RETRY = "do_not_retry"  # the card or transaction is refused
    OPERATOR = "operator"  # the operator must do something first (e.g. sign on)
    SYSTEM = "system"  # the host or network is at fault


@dataclass(frozen=True)
class ResponseCode:
    code: str
    en: str
    zh: str
    action: ActionClass

    def text(self, lang: str) -> str:
        return self.zh if lang.startswith("zh") else self.en


A = ActionClass
_TABLE: list[tuple[str, str, str, ActionClass]] = [
    ("00", "Approved", "交易成功", A.SUCCESS),
    ("01", "Refer to card issuer", "请持卡人与发卡行联系", A.DO_NOT_RETRY),
    ("03", "Invalid merchant", "无效商户", A.OPERATOR),
    ("04", "Pick up card", "没收卡", A.DO_NOT_RETRY),
    ("05", "Do not honour", "不予承兑", A.DO_NOT_RETRY),
    ("06", "Error", "出错", A.RETRY),
    ("07", "Pick up card (special)", "特殊条件下没收卡", A.DO_NOT_RETRY),
    ("12", "Invalid transaction", "无效交易", A.DO_NOT_RETRY),
    ("13", "Invalid amount", "无效金额", A.DO_NOT_RETRY),
    ("14", "Invalid card number", "无效卡号", A.DO_NOT_RETRY),
    ("15", "No such issuer", "无此发卡行", A.DO_NOT_RETRY),
    ("22", "Terminal state mismatch - sign on again", "终端状态不符, 请重新签到", A.OPERATOR),
    ("25", "Original transaction not found", "找不到原始交易", A.DO_NOT_RETRY),
    ("30", "Format error", "报文格式错误", A.SYSTEM),
    ("34", "Suspected fraud", "有作弊嫌疑", A.DO_NOT_RETRY),
    ("38", "PIN tries exceeded", "密码错误次数超限", A.DO_NOT_RETRY),
    ("40", "Function not supported", "发卡行不支持的交易", A.DO_NOT_RETRY),
    ("41", "Lost card", "挂失卡", A.DO_NOT_RETRY),
    ("43", "Stolen card", "被窃卡", A.DO_NOT_RETRY),
    ("51", "Insufficient funds", "可用余额不足", A.DO_NOT_RETRY),
    ("54", "Expired card", "过期卡", A.DO_NOT_RETRY),
    ("55", "Wrong PIN", "密码错误", A.RETRY),
    ("57", "Not permitted for this card", "不允许持卡人进行的交易", A.DO_NOT_RETRY),
    ("58", "Not permitted on this terminal", "不允许终端进行的交易", A.DO_NOT_RETRY),
    ("59", "Suspected fraud", "有作弊嫌疑", A.DO_NOT_RETRY),
    ("61", "Amount limit exceeded", "超出金额限制", A.DO_NOT_RETRY),
    ("62", "Restricted card", "受限制的卡", A.DO_NOT_RETRY),
    ("64", "Amount differs from original", "原始金额不正确", A.DO_NOT_RETRY),
    ("65", "Frequency limit exceeded", "超出取款次数限制", A.DO_NOT_RETRY),
    ("68", "Host timeout", "交易超时, 请重试", A.RETRY),
    ("75", "PIN tries exceeded", "密码错误次数超限", A.DO_NOT_RETRY),
    ("77", "Batch mismatch - sign on again", "批次号不符, 请重新签到", A.OPERATOR),
    ("90", "Cut-over in progress - try later", "日期切换正在处理", A.RETRY),
    ("91", "Issuer unavailable", "发卡行或交换中心不能操作", A.RETRY),
    ("92", "Issuer unreachable", "金融机构或中间网络设施找不到", A.RETRY),
    ("94", "Duplicate transaction", "重复交易", A.DO_NOT_RETRY),
    ("96", "Switch malfunction", "交换中心系统故障", A.SYSTEM),
    ("97", "Terminal not registered", "终端未登记", A.OPERATOR),
    ("98", "Issuer timeout", "发卡行超时", A.RETRY),
    ("99", "PIN format error - sign on again", "密码格式错误, 请重新签到", A.OPERATOR),
    ("A0", "MAC error - sign on again", "MAC校验错, 请重新签到", A.OPERATOR),
]

CODES: dict[str, ResponseCode] = {c: ResponseCode(c, en, zh, a) for c, en, zh, a in _TABLE}

# The codes after which the host expects a fresh sign-on are the link's own
# (firmware/host/channel.py SIGN_ON_CODES): it acts on them before any other check.
# A refund advice (0230) is acknowledged by 00, or by 94 (the host already has it).
ADVICE_ACK_CODES: frozenset[str] = frozenset({"00", "94"})
# 30 (format error) comes back for the same bytes every time: for an advice, which is resent
# byte for byte, it is as final as a decline.
_FINAL_FOR_ADVICE: frozenset[str] = frozenset({"30"})


def advice_answer(code: str) -> str:
    """What a host answer does to a refund advice: "acked", "declined" (final: the refund will
    not be made) or "retry" (keep it and send it again: 96, 91, a sign-on request like A0...)."""
    if code in ADVICE_ACK_CODES:
        return "acked"
    if code in _FINAL_FOR_ADVICE or lookup(code).action is ActionClass.DO_NOT_RETRY:
        return "declined"
    return "retry"


def lookup(code: str) -> ResponseCode:
    """The catalog entry; unknown codes read "Transaction failed (XX)"."""
    known = CODES.get(code)
    if known is not None:
        return known
    return ResponseCode(code, f"Transaction failed ({code})", f"交易失败 ({code})", A.SYSTEM)
