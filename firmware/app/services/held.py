"""Held orders (挂单) at the app layer: park, list, resume, cancel and the audit trail, from the
keypad (run_op) and the ECR link (ecr_op). Money only moves through Terminal.financial(), with
the order's id on the request: the journal ties the record to the order in its own commit and
moves the order whenever the record is resolved (journal/follow.py). The words the till and the
operator get are read off the order's state after the operation, never off the operation alone.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import TerminalCore
from firmware.app.services import printing
from firmware.engine.model import OriginalRef, TxnRequest, TxnResult
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind
from firmware.i18n import register, text
from firmware.journal.held import (
    CANCELLED,
    CANCELLING,
    HELD,
    PAID,
    PAYING,
    REASONS,
    HeldError,
    HeldOrder,
    HeldOrders,
)
from firmware.printing.held_slip import held_trail_slip
from firmware.ui.core import OpOutcome, StartOp

PANEL_OPS = frozenset({"held_park", "held_list", "held_resume", "held_cancel", "held_trail"})
ECR_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "held_park": (("amount", "ref"), ("note",)),
    "held_list": ((), ()),
    "held_resume": (("order",), ("card", "pin")),
    "held_cancel": (("order", "reason", "password"), ("card", "pin")),
    "held_trail": (("order",), ()),
}
# What the terminal does about a transaction still being resolved (the held list shows it).
DOING = {"PENDING": "held_doing_pending", "REVERSAL_DUE": "held_doing_reversal",
         "ADVICE_DUE": "held_doing_advice"}


def held(terminal: TerminalCore) -> HeldOrders:
    assert terminal.journal is not None
    return HeldOrders(terminal.journal)


def _operator(terminal: TerminalCore, source: str) -> str:
    """Who and from where (the order's operator and its audit trail name both: "07 keypad")."""
    return terminal.actor(source)


def _code(terminal: TerminalCore, source: str) -> str:
    """The operator code of a sale or a refund the order makes (its receipt's OPERATOR NO.)."""
    return terminal.operators.code_for(source)


def max_age_min(terminal: TerminalCore) -> int:
    return int(terminal.settings["transactions"].get("held_max_age_min", 120))


def counts(terminal: TerminalCore) -> tuple[int, int]:
    """(open orders, aged HELD orders) for the idle screen (UiContext.held_orders/held_aged)."""
    if terminal.journal is None:
        return 0, 0
    h = held(terminal)
    return len(h.orders()), len(h.aged(max_age_min(terminal)))


def reconcile(terminal: TerminalCore) -> list[HeldOrder]:
    """Call at start-up (after Terminal.open) and after a backlog pass: orders follow their sales."""
    if terminal.journal is None:
        return []
    return held(terminal).reconcile(stale=not terminal.busy)


def order_item(order: HeldOrder) -> dict[str, Any]:
    return {"id": order.id, "time": time.strftime("%m-%d %H:%M", time.localtime(order.created_at)),
            "amount": order.amount, "type": order.kind, "reference": order.reference,
            "note": order.note, "status": order.state, "reason": order.cancel_reason,
            "readonly": False}


def list_items(terminal: TerminalCore) -> tuple[dict[str, Any], ...]:
    """Open orders, then (read-only) every transaction whose outcome is still being resolved."""
    j = terminal.journal
    assert j is not None
    items = [order_item(o) for o in held(terminal).orders()]
    for record in j.reversals_due() + j.advices_due() + j.records(TxnState.PENDING):
        items.append({"id": None, "txn_id": record.id, "time": f"{record.local_date[:2]}-"
                      f"{record.local_date[2:]} {record.local_time[:2]}:{record.local_time[2:4]}",
                      "amount": record.amount, "type": record.kind.value,
                      "reference": record.reference or "", "status": record.state.value,
                      "doing": DOING.get(record.state.value, ""), "voucher": record.invoice,
                      "pan": record.pan_masked, "readonly": True})
    return tuple(items)


def trail_document(terminal: TerminalCore, order_id: int, lang: str) -> Any:
    h = held(terminal)
    order = h.get(order_id)
    desk = printing.desk(terminal)
    columns = desk.columns if desk is not None else printing.PrintDesk.columns_for(
        None, terminal.settings)
    merchant = terminal.settings["merchant"]
    return held_trail_slip(order, h.trail(order_id), lang=lang, columns=columns,
                           merchant=str(merchant.get("name", "")), tid=str(merchant.get("tid", "")),
                           printed_at=datetime.now())


# -- the operations -------------------------------------------------------------------------------

def _outcome(op: str, status: str, key: str, detail: str = "", **kw: Any) -> OpOutcome:
    return OpOutcome(op=op, status=status, message_key=key, detail=detail, **kw)


def _from_result(op: str, result: TxnResult, order: HeldOrder | None) -> OpOutcome:
    record = result.record
    return OpOutcome(
        op=op, status=result.status, message_key=result.message_key, detail=result.detail,
        amount=record.amount if record else (order.amount if order else None),
        pan_masked=record.pan_masked if record else None,
        auth_code=record.auth_code if record else None, voucher=record.invoice if record else None,
        rrn=record.rrn if record else None, batch=record.batch if record else None,
        response_code=result.response_code,
        items=(order_item(order),) if order is not None else ())


async def park(terminal: TerminalCore, amount: int | None, reference: str | None, note: str | None,
               source: str) -> OpOutcome:
    if terminal.service_problem:
        return _outcome("held_park", "refused", "service_mode", terminal.service_problem)
    # the order's operator is the code (its slip prints it); the order keeps its source beside it
    order = held(terminal).park(amount or 0, reference or "", note or "", _code(terminal, source),
                                str(terminal.settings["transactions"]["currency"]), source)
    return _outcome("held_park", "stored", "held_parked", amount=order.amount,
                    items=(order_item(order),))


async def resume(terminal: TerminalCore, order_id: int, io: OperatorInput) -> OpOutcome:
    h = held(terminal)
    h.reconcile(stale=not terminal.busy)
    order = h.mark_paying(order_id, _operator(terminal, io.source))
    # From here a power loss leaves the order PAYING: with its sale tied to it if the sale was
    # written (the order follows it), else put back by reconcile() at start-up.
    result = await terminal.financial(
        TxnRequest(TxnKind.SALE, order.amount, operator=_code(terminal, io.source), reference=order.reference,
                   held_order_id=order_id), io)
    order = (h.abandon_payment(order_id, _operator(terminal, io.source)) if result.record is None
             else h.get(order_id))
    return _from_result("held_resume", result, order)


async def cancel(terminal: TerminalCore, order_id: int, reason: str, io: OperatorInput) -> OpOutcome:
    """The password was checked (io.authorised) or is in io.password (ECR)."""
    j = terminal.journal
    assert j is not None
    if reason not in REASONS:
        raise HeldError(f"the reason must be one of {', '.join(REASONS)}, got {reason!r}")
    if not io.authorised:
        if not await terminal.check_password(io.password, "held_cancel", io.source):
            return _outcome("held_cancel", "refused", terminal.password_refused(io.source))
        io.authorised = True
    h = held(terminal)
    h.reconcile(stale=not terminal.busy)
    order = h.get(order_id)
    operator = _operator(terminal, io.source)
    if order.state == HELD:
        order = h.cancel_unpaid(order_id, reason, operator)
        return _outcome("held_cancel", "done", "held_cancelled", amount=order.amount,
                        items=(order_item(order),))
    if order.state == PAYING:
        # The sale's outcome is unknown: the reversal path; the order waits for its acknowledgement.
        order = h.begin_cancel(order_id, reason, operator, "sale outcome unknown: reversal path")
        if not terminal.busy:
            # Send the reversal now rather than before the next transaction, if the host answers.
            await terminal.operation("held_cancel", io.source, lambda: _reverse_now(terminal))
            order = h.get(order_id)  # the journal moved it if the reversal was acknowledged
        if order.state == CANCELLED:
            return _outcome("held_cancel", "reversed", "reversal_sent", amount=order.amount,
                            items=(order_item(order),))
        return _outcome("held_cancel", "reversal_pending", "held_cancel_reversal",
                        amount=order.amount, items=(order_item(order),))
    if order.state != PAID or order.txn_id is None:
        return _outcome("held_cancel", "refused", "held_not_cancellable",
                        f"held order {order_id} is {order.state}", items=(order_item(order),))
    sale = j.get(order.txn_id)
    if sale.settlement_id is not None or sale.batch != j.current_batch():
        order = h.begin_cancel(order_id, reason, operator, f"refund of sale voucher {sale.invoice} (settled)")
        request = TxnRequest(TxnKind.REFUND, sale.amount, operator=_code(terminal, io.source),
                             reference=order.reference,
                             original=OriginalRef(rrn=sale.rrn, date=sale.local_date),
                             held_order_id=order_id)
    else:
        order = h.begin_cancel(order_id, reason, operator, f"void of sale voucher {sale.invoice}")
        request = TxnRequest(TxnKind.VOID, operator=_code(terminal, io.source), reference=order.reference,
                             original=OriginalRef(invoice=sale.invoice, batch=sale.batch),
                             held_order_id=order_id)
    result = await terminal.financial(request, io)
    if result.record is None:
        order = h.abandon_cancel(order_id, operator)
        return _from_result("held_cancel", result, order)
    return _cancel_outcome(result, h.get(order_id))


def _cancel_outcome(result: TxnResult, order: HeldOrder) -> OpOutcome:
    """What the void/refund did to the order, in words that match the order's state: a void
    whose outcome was unknown and got reversed did NOT cancel anything."""
    outcome = _from_result("held_cancel", result, order)
    if order.state == CANCELLED:
        return outcome
    if order.state == CANCELLING:
        status = "stored" if result.status == "stored" else "reversal_pending"
        return dataclasses.replace(outcome, status=status)
    # PAID: the void or refund was declined, reversed or never answered: the money stands.
    key = "held_still_paid_reversed" if result.status == "reversed" else "held_still_paid"
    return dataclasses.replace(outcome, status="not_cancelled", message_key=key)


async def _reverse_now(terminal: TerminalCore) -> TxnResult:
    """The reversals due (this order's among them), under the operation lock."""
    if await terminal.ensure_signed_on():
        await terminal.clear_backlog()
    return TxnResult("done", "held_cancel_reversal")


async def trail(terminal: TerminalCore, order_id: int, lang: str, print_it: bool,
                source: str = "keypad") -> OpOutcome:
    h = held(terminal)
    order = h.get(order_id)
    doc = trail_document(terminal, order_id, lang)
    lines = tuple(b.text for b in doc.blocks if hasattr(b, "text"))
    desk = printing.desk(terminal)
    if print_it and desk is not None:
        desk.held_trail(order_id, _operator(terminal, source))  # queued; audited by the queue
    elif print_it:
        h.note_print(order_id, _operator(terminal, source))
    return _outcome("held_trail", "done", "held_trail_ready", amount=order.amount, lines=lines,
                    items=(order_item(order),))


async def run_op(terminal: TerminalCore, command: StartOp, lang: str, cols: int) -> OpOutcome:
    """A keypad op (PANEL_OPS); a held-order rule broken comes back refused, in words."""
    io = OperatorInput(source="keypad", authorised=command.authorised)
    try:
        if command.op == "held_park":
            return await park(terminal, command.amount, command.reference, command.note, "keypad")
        if command.op == "held_list":
            reconcile(terminal)
            return _outcome("held_list", "done", "held_list", items=list_items(terminal))
        if command.order_id is None:
            return _outcome(command.op, "refused", "held_no_order", "no held order was chosen")
        if command.op == "held_resume":
            # use_card: a card read at idle already waits in the terminal's card slot.
            return await resume(terminal, command.order_id, io)
        if command.op == "held_cancel":
            if not command.authorised:
                return _outcome("held_cancel", "refused", "password_wrong",
                                "the supervisor password was not checked")
            return await cancel(terminal, command.order_id, command.reason or "", io)
        if command.op == "held_trail":
            return await trail(terminal, command.order_id, lang, print_it=True)
    except HeldError as exc:
        return _outcome(command.op, "refused", "held_refused", str(exc))
    return _outcome(command.op, "refused", "held_unknown_op", f"not a held-order op: {command.op}")


async def ecr_op(terminal: TerminalCore, op: str, args: dict[str, Any],
                 origin: OperatorInput | None = None) -> dict[str, Any]:
    """An ECR request (ECR_OPS, fields already checked by the protocol): the reply payload.
    origin: who asked (the ECR peer), the request's repeat key and the card it named (the ECR
    server turns a test card's name into card data), carried into the sale."""
    lang = str(terminal.settings.get("display", {}).get("language", "en"))
    origin = origin or OperatorInput()
    try:
        if op == "held_park":
            outcome = await park(terminal, args["amount"], args["ref"], args.get("note"),
                                 origin.source)
        elif op == "held_list":
            reconcile(terminal)
            outcome = _outcome("held_list", "done", "held_list", items=list_items(terminal))
        elif op == "held_resume":
            io = replace(origin, pin=args.get("pin"))
            outcome = await resume(terminal, int(args["order"]), io)
        elif op == "held_cancel":
            io = replace(origin, password=args["password"], pin=args.get("pin"))
            outcome = await cancel(terminal, int(args["order"]), args["reason"], io)
        elif op == "held_trail":
            outcome = await trail(terminal, int(args["order"]), lang, print_it=False)
        else:
            return {"ok": False, "result": "refused", "message": f"not a held-order op: {op}"}
    except HeldError as exc:
        return {"ok": False, "result": "refused", "message": str(exc)}
    payload: dict[str, Any] = {"ok": outcome.ok, "result": outcome.status,
                               "message": text(outcome.message_key, lang)}
    if outcome.detail:
        payload["detail"] = outcome.detail
    for name in ("amount", "voucher", "rrn", "batch", "auth_code"):
        value = getattr(outcome, name)
        if value is not None:
            payload[name] = value
    if outcome.items:
        payload["orders" if op == "held_list" else "order"] = (
            [dict(i) for i in outcome.items] if op == "held_list" else dict(outcome.items[0]))
    if outcome.lines:
        payload["lines"] = list(outcome.lines)
    return payload


MESSAGES = {
    "held_parked": ("Order held", "挂单已保存"),
    "held_cancelled": ("Order cancelled", "挂单已取消"),
    "held_cancel_reversal": ("Sale outcome unknown: reversal pending; order stays cancelling",
                             "交易结果未知:等待冲正,挂单取消中"),
    "held_not_cancellable": ("This order cannot be cancelled now", "此挂单现在不能取消"),
    "held_still_paid": ("Not cancelled: the order is still paid", "未取消:挂单仍为已付款"),
    "held_still_paid_reversed": ("Void outcome unknown and reversed: not cancelled, the order is "
                                 "still paid", "撤销结果未知已冲正:挂单未取消,仍为已付款"),
    "held_refused": ("Held order refused", "挂单操作被拒绝"),
    "held_no_order": ("No held order chosen", "未选择挂单"),
    "held_unknown_op": ("Unknown held-order operation", "未知挂单操作"),
    "held_trail_ready": ("Audit trail", "审计记录"),
    "held_list": ("Held orders", "挂单列表"),
    "held_doing_pending": ("sending, awaiting reply", "发送中,等待应答"),
    "held_doing_reversal": ("reversal will be sent", "将发送冲正"),
    "held_doing_advice": ("advice will be forwarded", "将上送通知"),
}

register(MESSAGES)  # the screens and the ECR link word these outcomes too


__all__ = ["CANCELLING", "ECR_OPS", "PAID", "PANEL_OPS", "PAYING", "counts", "ecr_op", "list_items",
           "reconcile", "run_op"]
