"""The settlement review (结算前检查) and the settlement failure advice: pure functions over journal
data the app layer passes in (records, receipt print states, an opaque per-record card key that
stands in for the PAN), giving totals by card class and type, what the host is still owed, the
anomalies the operator should look at, and what to do when a settlement fails, in words.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from firmware.engine.codes import ActionClass, lookup
from firmware.engine.model import NET_SIGN, TxnRecord
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind

COUNTED = frozenset({TxnState.APPROVED, TxnState.VOIDED})  # gross totals, as the journal counts
# The host is still owed work (a quarantined record waits for a supervisor's decision).
OWED = (TxnState.PENDING, TxnState.REVERSAL_DUE, TxnState.ADVICE_DUE, TxnState.QUARANTINED)
CARD_ORGS = ("CUP", "VIS", "MCC", "JCB", "AEX")
# Kinds whose same card + same amount twice in a short time is worth a look (money taken twice).
DUPLICATE_KINDS = frozenset({TxnKind.SALE, TxnKind.COMPLETION})
VOIDABLE_KINDS = frozenset({TxnKind.SALE})
BAD_PRINT_STATES = frozenset({"FAILED", "CANCELLED"})

# Anomaly kinds and the actions each allows (the screen offers exactly these).
DUPLICATE, PRINT_FAILED, REVERSAL_STUCK = "duplicate", "print_failed", "reversal_stuck"
# A record that cannot be sent (resolve: the supervisor closes it, audited), and a refund the
# till was told "stored" that the host then declined (nothing to do here but see it).
QUARANTINED, REFUND_DECLINED = "quarantined", "refund_declined"


@dataclass(frozen=True)
class Anomaly:
    kind: str  # DUPLICATE | PRINT_FAILED | REVERSAL_STUCK
    record_id: int
    voucher: str
    pan_masked: str
    amount: int
    actions: tuple[str, ...]  # of "void", "reprint", "retry"
    related_voucher: str | None = None  # a duplicate: the earlier transaction it repeats
    attempts: int = 0  # a stuck reversal: how often it was sent
    why: str = ""  # quarantined: why it cannot be sent; refund declined: the host's code

    def item(self) -> dict[str, Any]:
        return {"kind": self.kind, "record_id": self.record_id, "voucher": self.voucher,
                "pan": self.pan_masked, "amount": self.amount, "actions": list(self.actions),
                "related_voucher": self.related_voucher, "attempts": self.attempts, "why": self.why}


@dataclass(frozen=True)
class Pending:
    """A record the host must acknowledge before settlement (reversal, advice, no reply yet)."""

    record_id: int
    state: str
    kind: str
    voucher: str
    pan_masked: str
    amount: int
    attempts: int

    def item(self) -> dict[str, Any]:
        # A quarantined record cannot be sent: its action is the anomaly's "resolve".
        actions = [] if self.state == TxnState.QUARANTINED.value else ["retry"]
        return {"kind": self.state.lower(), "record_id": self.record_id, "voucher": self.voucher,
                "pan": self.pan_masked, "amount": self.amount, "txn_kind": self.kind,
                "actions": actions, "attempts": self.attempts}


@dataclass(frozen=True)
class Review:
    batch: str
    count: int  # counted (approved or voided) records of the batch
    # by_side and by_org: (count, net amount); a sale and its void net to 0 (NET_SIGN).
    by_side: dict[str, tuple[int, int]]  # "domestic" | "foreign" -> (count, net)
    by_org: dict[str, tuple[int, int]]  # CUP | VIS | MCC | JCB | AEX | OTHER -> (count, net)
    by_kind: dict[str, tuple[int, int]]  # TxnKind value -> (count, amount as transacted)
    pending: tuple[Pending, ...] = ()
    anomalies: tuple[Anomaly, ...] = field(default=())

    @property
    def net(self) -> int:
        """Sales and completions less voids and refunds: what the batch is worth."""
        return sum(amount for _, amount in self.by_side.values())

    @property
    def blocked(self) -> bool:
        """Settlement would be refused: the host is still owed a reversal or an advice."""
        return bool(self.pending)

    def items(self) -> tuple[dict[str, Any], ...]:
        """Pickable rows, pending items first, then the anomalies."""
        return tuple(p.item() for p in self.pending) + tuple(a.item() for a in self.anomalies)

    def payload(self) -> dict[str, Any]:
        """Plain data for the ECR reply."""
        def table(t: Mapping[str, tuple[int, int]]) -> dict[str, dict[str, int]]:
            return {k: {"count": c, "amount": a} for k, (c, a) in t.items()}

        return {"batch": self.batch, "count": self.count, "net": self.net,
                "by_side": table(self.by_side),
                "by_org": table(self.by_org), "by_kind": table(self.by_kind),
                "blocked": self.blocked, "pending": [p.item() for p in self.pending],
                "anomalies": [a.item() for a in self.anomalies]}


def _add(table: dict[str, tuple[int, int]], key: str, amount: int) -> None:
    count, total = table.get(key, (0, 0))
    table[key] = (count + 1, total + amount)


def build_review(batch: str, records: Sequence[TxnRecord], *, card_keys: Mapping[int, str],
                 receipt_jobs: Iterable[tuple[int, int, str]], duplicate_window_s: float,
                 reversal_retries: int, owed: Sequence[TxnRecord] = ()) -> Review:
    """The review of `batch` from its records.

    card_keys: record id -> an opaque key of its card (e.g. an HMAC of the PAN made in memory);
      records without one are never called duplicates. The PAN itself never comes here.
    receipt_jobs: (job id, txn id, job state) of every receipt job for these records.
    owed: records of any batch still owed to the host (PENDING, REVERSAL_DUE, ADVICE_DUE);
      those of `records` are found anyway.
    """
    by_side: dict[str, tuple[int, int]] = {}
    by_org: dict[str, tuple[int, int]] = {}
    by_kind: dict[str, tuple[int, int]] = {}
    count = 0
    for r in records:
        if r.batch != batch or r.state not in COUNTED or r.kind is TxnKind.BALANCE:
            continue
        count += 1
        net = NET_SIGN[r.kind] * r.amount
        _add(by_side, "foreign" if r.foreign else "domestic", net)
        org = (r.card_org or "").upper()
        _add(by_org, org if org in CARD_ORGS else "OTHER", net)
        _add(by_kind, r.kind.value, r.amount)

    seen: dict[int, TxnRecord] = {}
    for r in [*records, *owed]:
        if r.state in OWED:
            seen.setdefault(r.id, r)
    pending = tuple(Pending(r.id, r.state.value, r.kind.value, r.invoice, r.pan_masked, r.amount,
                            r.reversal_attempts if r.state is TxnState.REVERSAL_DUE else r.advice_attempts)
                    for r in sorted(seen.values(), key=lambda rec: rec.id))

    anomalies: list[Anomaly] = []
    anomalies += _duplicates(records, card_keys, duplicate_window_s)
    anomalies += _failed_prints(records, receipt_jobs)
    anomalies += [Anomaly(REVERSAL_STUCK, p.record_id, p.voucher, p.pan_masked, p.amount, ("retry",),
                          attempts=p.attempts)
                  for p in pending if p.state == TxnState.REVERSAL_DUE.value
                  and p.attempts >= reversal_retries]
    anomalies += [Anomaly(QUARANTINED, r.id, r.invoice, r.pan_masked, r.amount, ("resolve",),
                          why=r.problem or "")
                  for r in sorted(seen.values(), key=lambda rec: rec.id)
                  if r.state is TxnState.QUARANTINED]
    anomalies += [Anomaly(REFUND_DECLINED, r.id, r.invoice, r.pan_masked, r.amount, (),
                          attempts=r.advice_attempts, why=r.response_code or "")
                  for r in records if r.batch == batch and r.kind is TxnKind.REFUND
                  and r.state is TxnState.DECLINED and r.advice_attempts > 0]
    return Review(batch, count, by_side, by_org, by_kind, pending, tuple(anomalies))


def _duplicates(records: Sequence[TxnRecord], card_keys: Mapping[int, str],
                window_s: float) -> list[Anomaly]:
    """Same card and same amount within the window: the later one is the suspect."""
    candidates = sorted((r for r in records if r.kind in DUPLICATE_KINDS and r.state is TxnState.APPROVED
                         and r.id in card_keys), key=lambda r: (r.created_at, r.id))
    found: list[Anomaly] = []
    for i, later in enumerate(candidates):
        for earlier in reversed(candidates[:i]):
            if later.created_at - earlier.created_at > window_s:
                break
            if card_keys[earlier.id] == card_keys[later.id] and earlier.amount == later.amount:
                actions = ("void",) if later.kind in VOIDABLE_KINDS else ()
                found.append(Anomaly(DUPLICATE, later.id, later.invoice, later.pan_masked, later.amount,
                                     actions, related_voucher=earlier.invoice))
                break
    return found


def _failed_prints(records: Sequence[TxnRecord],
                   receipt_jobs: Iterable[tuple[int, int, str]]) -> list[Anomaly]:
    """An approved transaction whose last receipt job failed or was cancelled (no paper for it)."""
    last_job: dict[int, tuple[int, str]] = {}
    for job_id, txn_id, state in receipt_jobs:
        if txn_id not in last_job or job_id > last_job[txn_id][0]:
            last_job[txn_id] = (job_id, state)
    return [Anomaly(PRINT_FAILED, r.id, r.invoice, r.pan_masked, r.amount, ("reprint",))
            for r in records if r.state is TxnState.APPROVED and r.id in last_job
            and last_job[r.id][1] in BAD_PRINT_STATES]


# ---------------------------------------------------------------------------- words

ADVICE: dict[str, tuple[str, str]] = {
    "adv_blocked": ("Settlement refused: the host has not yet acknowledged {n} item(s):",
                    "结算被拒绝: 有{n}笔交易主机尚未确认:"),
    "adv_item": ("voucher {voucher} {what} {amount}", "凭证号{voucher} {what} {amount}"),
    "adv_reversal_due": ("reversal due", "待冲正"),
    "adv_advice_due": ("advice unsent", "通知未上送"),
    "adv_pending": ("no reply yet", "未收到应答"),
    "adv_quarantined": ("set aside: cannot be sent, a supervisor must resolve it",
                        "无法发送已隔离, 需主管处理"),
    "adv_send_now": ("Press F1 (send now) in the review; if it keeps failing, run the echo test "
                     "and call the acquirer.",
                     "在结算检查中按F1立即发送; 若仍失败, 请做回响测试并联系收单机构。"),
    "adv_link_down": ("The host did not answer: nothing was settled. Run the echo test "
                      "(Diagnostics > Echo test), check the cable or network, then settle again.",
                      "主机无应答, 未结算。请做回响测试(系统诊断 > 回响测试), 检查网线或网络后重新结算。"),
    "adv_resumes": ("The settlement resumes at the step reached when you settle again or restart; "
                    "new sales wait until it finishes.",
                    "重新结算或重启后结算将从中断处继续; 完成前不能做新交易。"),
    "adv_sales_go_on": ("New sales still work.", "可以继续做新交易。"),
    # The result's own message already says done/balanced or unbalanced: the advice adds only
    # what to do (it said it a second time before).
    "adv_unbalanced": ("Print the transaction list (MENU 8 1, then F1) and give it to the "
                       "acquirer.",
                       "请打印交易明细 (菜单 8 1, 再按F1) 交给收单机构。"),
    "adv_host_code": ("Host answered {code}: {meaning}.", "主机应答码{code}: {meaning}。"),
    "adv_code_retry": ("Try again in a few minutes.", "请稍后重试。"),
    "adv_code_operator": ("Sign on again (Menu > Sign on) and settle again; if it persists, call "
                          "the acquirer.", "请重新签到(菜单 > 签到)后再结算; 如仍失败, 请联系收单机构。"),
    "adv_code_call": ("Call the acquirer with this code.", "请将此应答码告知收单机构。"),
    "adv_balanced": ("The settlement report is printing.", "正在打印结算单。"),
    "adv_password": ("Wrong supervisor password: nothing was settled.", "主管密码错误, 未结算。"),
    "adv_other": ("Settlement not done: {why}", "结算未完成: {why}"),
}

_CODE = re.compile(r"\(([0-9A-Z]{2})\)")


def words(key: str, lang: str, **values: Any) -> str:
    en, zh = ADVICE[key]
    sentence = zh if lang.startswith("zh") else en
    return sentence.format(**values) if values else sentence


def _fen(amount: int) -> str:
    return f"{amount // 100}.{amount % 100:02d}"


def settlement_advice(result: Any, lang: str, pending: Sequence[Pending] = ()) -> list[str]:
    """Why a settlement did not (cleanly) happen and what to do, in sentences for the screen.

    result: an engine TxnResult or a UI OpOutcome (both have status, message_key, detail and
    response_code). pending: what the host is still owed, listed when settlement was refused.
    """
    key = str(getattr(result, "message_key", ""))
    detail = str(getattr(result, "detail", "") or "")
    status = str(getattr(result, "status", ""))
    code = getattr(result, "response_code", None)
    if not code and key != "host_unreachable":
        found = _CODE.search(detail)
        code = found.group(1) if found else None
    if key == "settled_balanced":
        return [words("adv_balanced", lang)]
    if key == "settled_unbalanced":
        return [words("adv_unbalanced", lang)]
    if key == "password_wrong":
        return [words("adv_password", lang)]
    if key == "settlement_blocked":
        n = len(pending) or sum(int(x) for x in re.findall(r"(\d+) (?:reversal|advice)", detail))
        lines = [words("adv_blocked", lang, n=n)]
        lines += [words("adv_item", lang, voucher=p.voucher, what=words(f"adv_{p.state.lower()}", lang),
                        amount=_fen(p.amount)) for p in pending]
        return [*lines, words("adv_send_now", lang), words("adv_sales_go_on", lang)]
    tail = words("adv_resumes", lang) if status == "interrupted" else words("adv_sales_go_on", lang)
    if code and code != "00":
        rc = lookup(code)
        lines = [words("adv_host_code", lang, code=code, meaning=rc.text(lang))]
        lines.append(words({ActionClass.RETRY: "adv_code_retry", ActionClass.SYSTEM: "adv_code_retry",
                            ActionClass.OPERATOR: "adv_code_operator"}.get(rc.action, "adv_code_call"), lang))
        return [*lines, tail]
    if key in ("host_unreachable", "settlement_no_reply", "settlement_interrupted"):
        return [words("adv_link_down", lang), tail]
    return [words("adv_other", lang, why=detail or key), tail]
