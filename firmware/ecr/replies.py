"""What the ECR link says back: a transaction's outcome as a reply, and the link's own sentences.

The sentences (en, zh_CN) join the catalog (firmware/i18n.py); the server and the refusal log
word their replies from here, so a till reads the same words for the same case.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from firmware.engine.model import TxnResult
from firmware.i18n import register, text

if TYPE_CHECKING:
    from firmware.app import Terminal

MESSAGES: dict[str, tuple[str, str]] = {
    "ecr_failed_inside": ("Request failed inside the terminal - check last and status before retrying",
                          "终端内部处理失败 - 重试前请先查询 last 和 status"),
    "ecr_too_many": ("Too many ECR connections - close an idle one and connect again",
                     "ECR 连接过多 - 请关闭空闲连接后重连"),
}
register(MESSAGES)


def language(terminal: Terminal) -> str:
    return str(terminal.settings.get("display", {}).get("language", "en")) if terminal.settings else "en"


def result_payload(result: TxnResult, lang: str = "en") -> dict[str, Any]:
    record = result.record
    payload: dict[str, Any] = {
        "ok": result.status in ("approved", "settled"),
        "result": result.status,
        "message": text(result.message_key, lang),
    }
    if result.detail:
        payload["detail"] = result.detail
    if result.response_code:
        payload["code"] = result.response_code
    if result.balance is not None:
        payload["balance"] = result.balance
    if record is not None:
        payload.update({
            "type": record.kind.value, "state": record.state.value, "amount": record.amount,
            "pan": record.pan_masked, "stan": record.stan, "batch": record.batch,
            "invoice": record.invoice, "rrn": record.rrn, "auth": record.auth_code,
            "date": record.local_date, "time": record.local_time, "ref": record.reference,
        })
    return payload


def failed_inside(lang: str = "en") -> dict[str, Any]:
    """The reply to a request that failed in a way nobody foresaw: never the exception's text."""
    return {"ok": False, "result": "failed", "message": text("ecr_failed_inside", lang)}


def refusal(key: str, lang: str, result: str = "refused") -> dict[str, Any]:
    return {"ok": False, "result": result, "message": text(key, lang)}
