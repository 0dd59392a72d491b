"""The audit-trail slip of one held order (挂单审计记录): the order's details and every audit line
about it, oldest first, as a device-independent Document in English or Chinese. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from firmware.ports import Align, Cut, Document, Feed, TextLine, text_cells
from firmware.printing.layout import wrap

TEXTS: dict[str, tuple[str, str]] = {
    "title": ("HELD ORDER AUDIT TRAIL", "挂单审计记录"),
    "order": ("Order", "挂单号"),
    "reference": ("Order no.", "订单号"),  # the order's own number (参考号 is the host's RRN)
    "amount": ("Amount", "金额"),
    "type": ("Type", "类型"),
    "status": ("Status", "状态"),
    "note": ("Note", "备注"),
    "held_at": ("Held at", "挂单时间"),
    "operator": ("Operator", "操作员"),
    "reason": ("Reason", "原因"),
    "trail": ("AUDIT LOG", "审计日志"),
    "printed": ("Printed", "打印时间"),
    "end": ("-- keep this slip as evidence --", "-- 请保留此凭条作为凭证 --"),
    "sale": ("SALE", "消费"),
    "HELD": ("HELD", "挂起"), "PAYING": ("PAYING", "支付中"), "PAID": ("PAID", "已支付"),
    "CANCELLING": ("CANCELLING", "取消中"), "CANCELLED": ("CANCELLED", "已取消"),
    "customer_cancelled": ("customer cancelled", "顾客取消"),
    "payment_failed": ("payment failed", "支付失败"),
    "operator_error": ("operator error", "操作员错误"),
    "other": ("other", "其他"),
}


def _t(key: str, lang: str) -> str:
    pair = TEXTS.get(key)
    if pair is None:
        return key
    return pair[1] if lang == "zh_CN" else pair[0]


def _fit(text: str, cols: int) -> list[str]:
    """Rows of at most cols cells (CJK counts two), broken between words where it can be, so
    a merchant reading the trail never meets a word cut in two."""
    return wrap(text, cols)


def _pair(label: str, value: str, cols: int) -> list[str]:
    gap = cols - text_cells(label) - text_cells(value)
    if gap >= 1:
        return [label + " " * gap + value]
    return _fit(label, cols) + [" " * max(0, cols - text_cells(v)) + v for v in _fit(value, cols)]


def _money(fen: int) -> str:
    return f"{fen // 100}.{fen % 100:02d}"


def _when(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def held_trail_slip(order: Any, trail: Sequence[Any], *, lang: str, columns: int, merchant: str = "",
                    tid: str = "", printed_at: datetime | None = None) -> Document:
    """order: a firmware.journal.held.HeldOrder; trail: its TrailLine rows (at, operator, action,
    detail, outcome). Every line fits `columns` cells."""
    lines: list[TextLine | Feed | Cut] = []

    def add(text: str, align: Align = Align.LEFT, bold: bool = False) -> None:
        for row in _fit(text, columns):
            lines.append(TextLine(row, align, bold))

    if merchant:
        add(merchant, Align.CENTER)
    if tid:
        add(f"TID {tid}", Align.CENTER)
    add(_t("title", lang), Align.CENTER, bold=True)
    lines.append(Feed(1))
    for label, value in (
        ("order", f"#{order.id}"), ("reference", order.reference),
        ("amount", _money(order.amount)), ("type", _t(order.kind, lang)),
        ("status", _t(order.state, lang)), ("held_at", _when(order.created_at)),
        ("operator", order.operator),
    ):
        for row in _pair(_t(label, lang), value, columns):
            lines.append(TextLine(row))
    if order.note:
        for row in _pair(_t("note", lang), order.note, columns):
            lines.append(TextLine(row))
    if order.cancel_reason:
        for row in _pair(_t("reason", lang), _t(order.cancel_reason, lang), columns):
            lines.append(TextLine(row))
    lines.append(Feed(1))
    add(_t("trail", lang), bold=True)
    add("-" * columns)
    for entry in trail:
        add(f"{_when(entry.at)} {entry.operator}")
        detail = entry.detail.split(":", 1)[-1].strip()
        add(f" {entry.action.removeprefix('held ')}: {detail} -> {entry.outcome}")
    add("-" * columns)
    if printed_at is not None:
        for row in _pair(_t("printed", lang), printed_at.strftime("%Y-%m-%d %H:%M"), columns):
            lines.append(TextLine(row))
    add(_t("end", lang), Align.CENTER)
    lines += [Feed(3), Cut()]
    return Document(tuple(lines), title=f"held order {order.id} audit trail")
