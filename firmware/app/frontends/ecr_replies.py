"""What the ECR link says back: a transaction's outcome as a reply, and the link's own sentences.

The sentences (en, zh_CN) join the catalog (firmware/i18n.py); the server, the repeat gate and
the refusal log word their replies from here, so a till reads the same words for the same case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from firmware.emv.record import summary as chip_summary
from firmware.engine.model import TxnRecord, TxnResult
from firmware.engine.states import TxnState
from firmware.i18n import register, text

if TYPE_CHECKING:
    from firmware.app.terminal import Terminal

MESSAGES: dict[str, tuple[str, str]] = {
    "ecr_failed_inside": ("Request failed inside the terminal - check last and status before retrying",
                          "终端内部处理失败 - 重试前请先查询 last (上笔) 和 status (状态)"),
    "ecr_id_reused": ("This id was already used for a different request - send it with a new id",
                      "该请求编号已用于另一笔请求 - 请使用新编号"),
    "ecr_interrupted": ("Cut by a restart before the answer; no transaction was written for it - "
                        "check status, then send it with a new id",
                        "应答前终端重启, 未产生交易记录 - 请查询 status (状态) 后用新编号重发"),
    "ecr_state_after_restart": ("The terminal restarted before answering: this is the "
                                "transaction's state now",
                                "终端在应答前重启: 以下为该交易的当前状态"),
    "ecr_too_many": ("Too many ECR connections - close an idle one and connect again",
                     "收银机连接过多 - 请关闭空闲连接后重连"),
    "ecr_resolved": ("Closed by the supervisor (reversal never acknowledged)", "已由主管人工处理"),
    # A record's state in words (lookup, and a repeat answered after a restart)
    "state_voided": ("Approved, then voided", "交易成功, 已被撤销"),
    "state_pending": ("Sent - waiting for the host's answer", "已发送 - 等待主机应答"),
    "state_reversed": ("Reversed - nothing charged", "已冲正 - 未扣款"),
    "state_failed": ("Failed - nothing charged", "交易失败 - 未扣款"),
}
register(MESSAGES)

# A journal record's state -> (result, catalog key): what `lookup` answers, and what a repeat
# reports when the terminal restarted before the first reply was sent (the record moved on
# since: reversed, voided...). Every state has words that say what happened; a till acts on
# `result` (and on `code`, the host's response code, where there is one).
STATE_ANSWERS: dict[TxnState, tuple[str, str]] = {
    TxnState.APPROVED: ("approved", "approved"),
    TxnState.VOIDED: ("voided", "state_voided"),
    TxnState.DECLINED: ("declined", ""),  # worded by its response code
    TxnState.PENDING: ("pending", "state_pending"),
    TxnState.REVERSAL_DUE: ("reversal_pending", "reversal_pending"),
    TxnState.REVERSED: ("reversed", "state_reversed"),
    TxnState.RESOLVED_MANUALLY: ("resolved", "ecr_resolved"),
    TxnState.ADVICE_DUE: ("stored", "advice_stored"),
    TxnState.FAILED: ("failed", "state_failed"),
    TxnState.QUARANTINED: ("quarantined", "quarantined"),
}


def language(terminal: Terminal) -> str:
    return str(terminal.settings.get("display", {}).get("language", "en")) if terminal.settings else "en"


def result_payload(result: TxnResult, lang: str = "en") -> dict[str, Any]:
    record = result.record
    tries = {"n": result.pin_tries_left} if result.pin_tries_left is not None else {}
    payload: dict[str, Any] = {
        "ok": result.status in ("approved", "settled"),
        "result": result.status,
        "message": text(result.message_key, lang, **tries),
    }
    if result.pin_tries_left is not None:
        payload["pin_tries_left"] = result.pin_tries_left
    if result.detail:
        payload["detail"] = result.detail
    if result.response_code:
        payload["code"] = result.response_code
    if result.balance is not None:
        payload["balance"] = result.balance
    if record is not None:
        payload.update({
            "type": record.kind.value, "state": record.state.value, "amount": record.amount,
            "pan": record.pan_masked, "voucher": record.invoice, "batch": record.batch,
            "rrn": record.rrn, "auth": record.auth_code,
            "date": record.local_date, "time": record.local_time, "ref": record.reference,
        })
        chip = chip_summary(record.chip_tags)
        if chip is not None:  # a chip transaction: what its slip prints of the chip
            payload["chip"] = {"aid": chip.aid, "app_label": chip.label,
                               "cryptogram": chip.cryptogram_name, "ac": chip.cryptogram,
                               "tvr": chip.tvr, "tsi": chip.tsi}
    return payload


def record_state(record: TxnRecord, lang: str) -> dict[str, Any]:
    """A record's present state as a reply: the result and words of STATE_ANSWERS."""
    status, key = STATE_ANSWERS[record.state]
    code = record.response_code
    return result_payload(TxnResult(status, key or code or "declined", record, code), lang)


def record_now(record: TxnRecord, lang: str) -> dict[str, Any]:
    """A record's present state as a reply (after a restart cut the first reply)."""
    return {**record_state(record, lang), "detail": text("ecr_state_after_restart", lang)}


def failed_inside(lang: str = "en") -> dict[str, Any]:
    """The reply to a request that failed in a way nobody foresaw: never the exception's text."""
    return {"ok": False, "result": "failed", "message": text("ecr_failed_inside", lang)}


def refusal(key: str, lang: str, result: str = "refused") -> dict[str, Any]:
    return {"ok": False, "result": result, "message": text(key, lang)}
