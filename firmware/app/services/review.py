"""Settlement review at the app layer: gathers the open batch from the journal (PANs decrypted in
memory only to make an opaque card key), acts on an anomaly (void, reprint, send the backlog now),
queues the X report / transaction list / last Z report, and turns a settlement result into advice.
Money only moves through Terminal.financial(); the backlog goes through Terminal.clear_backlog().
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import TerminalCore
from firmware.app.services import printing
from firmware.diag.review import (
    Pending,
    Review,
    build_review,
    settlement_advice,
)
from firmware.engine.model import OriginalRef, TxnRequest, TxnResult
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind
from firmware.i18n import text
from firmware.journal.errors import JournalError
from firmware.printing import texts
from firmware.printing.layout import format_amount, two_columns, wrap
from firmware.printing.reports import subtotal_lines
from firmware.ui.core import OpOutcome, StartOp, right

PANEL_OPS = frozenset({"settle_review", "anomaly_act", "print_subtotals", "print_txn_list"})
ECR_OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "review": ((), ()),
    "print_report": (("kind",), ()),  # kind: x | list | z (z: the last settlement again)
}
ACTIONS = ("void", "reprint", "retry", "resolve")
# What the audit says when a supervisor closes a quarantined record from the review.
RESOLVE_REASON = "closed by the supervisor at the settlement review (cannot be sent)"

# A fresh secret per process: card keys cannot be compared across runs or reversed to a PAN.
_CARD_KEY_SECRET = secrets.token_bytes(32)

MESSAGES: dict[str, tuple[str, str]] = {
    "review_ready": ("Settlement review", "结算前检查"),
    "review_blocked": ("Items pending: settlement would be refused", "有未完成交易, 不能结算"),
    "anomaly_done": ("Done", "已完成"),
    "anomaly_resolved": ("Resolved by the supervisor (audited)", "已由主管处理 (已记录)"),
    "anomaly_retry_done": ("Sent: all acknowledged", "已发送, 主机均已确认"),
    "anomaly_retry_left": ("Sent: some still pending", "已发送, 仍有未确认"),
    "anomaly_bad_action": ("Action not allowed here", "此项不能执行该操作"),
    "anomaly_not_found": ("Transaction not found", "交易不存在"),
    "report_queued": ("Report queued for printing", "报表已加入打印队列"),
    "report_bad_kind": ("Report kind must be x, list or z", "报表类型须为 x (小计), list (明细) 或 z (结算)"),
    "review_unknown_op": ("Unknown review operation", "未知的结算检查操作"),
}


def _words(key: str, lang: str) -> str:
    if key in MESSAGES:
        return MESSAGES[key][1 if lang.startswith("zh") else 0]
    return text(key, lang)


def card_key(pan: str) -> str:
    """An opaque key standing for one card in this process (HMAC-SHA256 of the PAN)."""
    return hmac.new(_CARD_KEY_SECRET, pan.encode(), hashlib.sha256).hexdigest()


def gather(terminal: TerminalCore) -> Review:
    """The review of the open batch, from the journal as it is now."""
    j = terminal.journal
    assert j is not None
    tx = terminal.settings["transactions"]
    batch = j.current_batch()
    records = j.records(batch=batch)
    keys: dict[int, str] = {}
    for r in records:
        if r.state is TxnState.APPROVED and r.kind in (TxnKind.SALE, TxnKind.COMPLETION):
            try:
                keys[r.id] = card_key(j.decrypt_pan(r.id))  # the PAN lives only in this frame
            except JournalError:
                continue  # no card number kept: never called a duplicate
    jobs = [(int(a), int(b), str(c)) for a, b, c in j.read(
        "SELECT print_job.id, print_job.txn_id, print_job.state FROM print_job "
        "JOIN txn ON txn.id = print_job.txn_id WHERE print_job.kind = 'receipt' AND txn.batch = ?",
        (batch,))]
    owed = [*j.reversals_due(), *j.advices_due(), *j.records(TxnState.PENDING), *j.quarantined()]
    return build_review(batch, records, card_keys=keys, receipt_jobs=jobs,
                        duplicate_window_s=float(tx.get("duplicate_window_s", 300)),
                        reversal_retries=int(tx.get("reversal_retries", 3)), owed=owed)


def review_lines(review: Review, lang: str, cols: int, currency: str = "156") -> list[str]:
    """The totals part of the review for the LCD (the pickable rows travel as items): count and
    amount per transaction type and the net (as the subtotals show them), then the net per card
    side and card organisation, each a "name  count" row with the amount right."""
    def group(name: str, count: int, amount: int) -> list[str]:
        return [*two_columns(name, str(count), cols), right(format_amount(amount, currency), cols)]

    zh = lang.startswith("zh")
    lines = two_columns("批次" if zh else "Batch", review.batch, cols)
    lines += subtotal_lines({("domestic", kind): totals for kind, totals in review.by_kind.items()},
                            lang, cols, currency)
    if review.count:
        lines += wrap(texts.label("net_by_card", lang), cols)
    for side in ("domestic", "foreign"):
        if side in review.by_side:
            lines += group(texts.label(f"side_{side}", lang), *review.by_side[side])
    for org, (count, amount) in sorted(review.by_org.items()):
        lines += group(org, count, amount)
    return lines


def _outcome(op: str, status: str, key: str, detail: str = "", **kw: Any) -> OpOutcome:
    return OpOutcome(op=op, status=status, message_key=key, detail=detail, **kw)


def _from_result(op: str, result: TxnResult) -> OpOutcome:
    record = result.record
    return OpOutcome(op=op, status=result.status, message_key=result.message_key, detail=result.detail,
                     amount=record.amount if record else None,
                     pan_masked=record.pan_masked if record else None,
                     auth_code=record.auth_code if record else None,
                     voucher=record.invoice if record else None, rrn=record.rrn if record else None,
                     batch=record.batch if record else None, response_code=result.response_code)


async def review_op(terminal: TerminalCore, lang: str, cols: int) -> OpOutcome:
    review = gather(terminal)
    currency = str(terminal.settings["transactions"].get("currency", "156"))
    return _outcome("settle_review", "done", "review_blocked" if review.blocked else "review_ready",
                    batch=review.batch, lines=tuple(review_lines(review, lang, cols, currency)),
                    items=review.items())


async def retry_backlog(terminal: TerminalCore) -> TxnResult:
    """Send every due reversal and advice now (one operation, under the terminal's lock)."""
    async def work() -> TxnResult:
        if not await terminal.ensure_signed_on():
            return TxnResult("failed", "host_unreachable", detail="sign-on failed")
        await terminal.clear_backlog()
        assert terminal.journal is not None
        counts = terminal.journal.unresolved_counts()
        left = sum(counts.values())  # a quarantined record is left until a supervisor decides
        if left:
            return TxnResult("failed", "anomaly_retry_left", detail=f"{left} still pending")
        return TxnResult("done", "anomaly_retry_done")

    return await terminal.operation("anomaly_act", "keypad", work)


async def act(terminal: TerminalCore, action: str, voucher: str | None, authorised: bool,
              password: str | None = None) -> OpOutcome:
    """One anomaly action: void (supervisor password already checked, or given over ECR),
    reprint (marked REPRINT), retry (send the backlog now)."""
    j = terminal.journal
    assert j is not None
    if action not in ACTIONS:
        return _outcome("anomaly_act", "refused", "anomaly_bad_action", f"action {action!r}")
    if action == "retry":
        return _from_result("anomaly_act", await retry_backlog(terminal))
    record = j.find_by_invoice(voucher) if voucher else None
    if record is None:
        return _outcome("anomaly_act", "refused", "anomaly_not_found", f"voucher {voucher}")
    if action == "resolve":
        return await _resolve(terminal, record, authorised, password)
    if action == "reprint":
        desk = printing.desk(terminal)
        if desk is None:
            return _outcome("anomaly_act", "failed", "service_mode")
        job = desk.reprint(record.invoice, record.batch)
        if isinstance(job, str):
            return _outcome("anomaly_act", "refused", job, voucher=record.invoice)
        return _outcome("anomaly_act", "done", "reprint_queued", voucher=record.invoice, amount=record.amount,
                        pan_masked=record.pan_masked)
    if record.kind is not TxnKind.SALE or record.state is not TxnState.APPROVED:
        return _outcome("anomaly_act", "refused", "anomaly_bad_action",
                        f"voucher {record.invoice} is a {record.state.value} {record.kind.value}")
    io = OperatorInput(password=password, source="keypad" if authorised else "ecr", authorised=authorised)
    operator = terminal.operators.code_for(io.source)
    result = await terminal.financial(
        TxnRequest(TxnKind.VOID, operator=operator,
                   original=OriginalRef(invoice=record.invoice, batch=record.batch)), io)
    return _from_result("anomaly_act", result)


async def _resolve(terminal: TerminalCore, record: Any, authorised: bool,
                   password: str | None) -> OpOutcome:
    """The supervisor closes a quarantined record (the keypad asked the password first)."""
    if record.state is not TxnState.QUARANTINED:
        return _outcome("anomaly_act", "refused", "anomaly_bad_action",
                        f"voucher {record.invoice} is {record.state.value}, not set aside")
    source = "keypad" if authorised else "ecr"
    if not authorised and not await terminal.check_password(password, "resolve", source):
        return _outcome("anomaly_act", "refused", "password_wrong")
    result = await terminal.resolve_owed(record.id, RESOLVE_REASON, source)
    if result.status != "resolved":
        return _from_result("anomaly_act", result)
    return _outcome("anomaly_act", "done", "anomaly_resolved", voucher=record.invoice,
                    amount=record.amount, pan_masked=record.pan_masked)


def report(terminal: TerminalCore, kind: str, source: str = "keypad") -> OpOutcome:
    """Queue a report: x (subtotals, nothing closed), list (the open batch), z (last settlement);
    `source` asked for it (the audit row names it and its operator)."""
    desk = printing.desk(terminal)
    if desk is None:
        return _outcome("print_report", "failed", "service_mode")
    operator = terminal.actor(source)  # the report's audit row: who and from where
    if kind == "x":
        desk.subtotals(operator)
    elif kind == "list":
        desk.transaction_list(operator)
    elif kind == "z":
        job = desk.settlement_report(None, reprint=True, operator=operator)
        if isinstance(job, str):
            return _outcome("print_report", "refused", job)
    else:
        return _outcome("print_report", "refused", "report_bad_kind", f"kind {kind!r}")
    return _outcome("print_report", "done", "report_queued")


def settle_outcome(terminal: TerminalCore, result: TxnResult, lang: str) -> OpOutcome:
    """A settlement's result for the screen with its advice lines (pending items named), so the
    lead's "settle" op can return it instead of frontends.panel.outcome_of()."""
    pending: tuple[Pending, ...] = ()
    if result.message_key == "settlement_blocked" and terminal.journal is not None:
        pending = gather(terminal).pending
    outcome = _from_result("settle", result)
    return OpOutcome(**{**outcome.__dict__, "lines": tuple(settlement_advice(result, lang, pending))})


async def run_op(terminal: TerminalCore, command: StartOp, lang: str, cols: int) -> OpOutcome:
    """A keypad op of PANEL_OPS. anomaly_act: command.reason is the action, command.voucher the
    transaction; a void needs command.authorised (the screen asked the supervisor password)."""
    if terminal.journal is None:
        return _outcome(command.op, "failed", "service_mode", terminal.service_problem or "")
    if command.op == "settle_review":
        return await review_op(terminal, lang, cols)
    if command.op == "anomaly_act":
        if command.reason == "void" and not command.authorised:
            return _outcome("anomaly_act", "refused", "password_wrong",
                            "the supervisor password was not checked")
        return await act(terminal, command.reason or "", command.voucher, command.authorised)
    if command.op == "print_subtotals":
        return OpOutcome(**{**report(terminal, "x").__dict__, "op": command.op})
    if command.op == "print_txn_list":
        return OpOutcome(**{**report(terminal, "list").__dict__, "op": command.op})
    return _outcome(command.op, "refused", "review_unknown_op", command.op)


async def ecr_op(terminal: TerminalCore, op: str, args: dict[str, Any],
                 origin: OperatorInput | None = None) -> dict[str, Any]:
    """An ECR request of ECR_OPS (fields checked by the protocol): the reply payload. origin:
    who asked (a printed report's audit row names it); these ops ask no password and move no
    money."""
    lang = str(terminal.settings.get("display", {}).get("language", "en"))
    if terminal.journal is None:
        return {"ok": False, "result": "failed", "message": _words("service_mode", lang)}
    if op == "review":
        review = gather(terminal)
        return {"ok": True, "result": "done",
                "message": _words("review_blocked" if review.blocked else "review_ready", lang),
                "review": review.payload()}
    if op == "print_report":
        outcome = report(terminal, str(args.get("kind", "")), (origin or OperatorInput()).source)
        reply = {"ok": outcome.ok, "result": outcome.status,
                 "message": _words(outcome.message_key, lang)}
        if outcome.detail:
            reply["detail"] = outcome.detail
        return reply
    return {"ok": False, "result": "refused", "message": _words("review_unknown_op", lang)}


__all__ = ["ECR_OPS", "PANEL_OPS", "act", "card_key", "ecr_op", "gather", "report", "retry_backlog",
           "review_lines", "run_op", "settle_outcome", "settlement_advice"]
