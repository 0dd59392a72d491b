"""Settlement review: each anomaly class found in a real journal seeded through the simulator,
settlement refused while a reversal is pending and allowed once it is acknowledged, the anomaly
actions, the ECR ops, and the advice for each settlement failure class."""

from __future__ import annotations

import json

from helpers import PASSWORD, run, sale, terminal, void

from firmware.app.services import review as review_svc
from firmware.diag.review import (
    DUPLICATE,
    PRINT_FAILED,
    REVERSAL_STUCK,
    Pending,
    settlement_advice,
    words,
)
from firmware.engine.model import TxnResult
from firmware.printing.queue import PrintState
from firmware.ui.core import OpOutcome, StartOp


def kinds(review) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for a in review.anomalies:
        out.setdefault(a.kind, []).append(a.voucher)
    return out


def test_each_anomaly_class_from_a_seeded_journal(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        first = await sale(t, 1500)
        dup = await sale(t, 1500)  # same card, same amount, within the window
        other_card = await sale(t, 1500, card="visa")  # same amount, other card: not a duplicate
        other_amount = await sale(t, 1600)  # same card, other amount
        sim.add_fault("drop", mti="0200")
        sim.add_rule("96", mti="0400")  # the reversal keeps failing
        lost = await sale(t, 2000)
        sim.clear_rules()
        sim.clear_faults()
        # A receipt whose printing was cancelled (the job of other_amount, still queued).
        j = t.journal
        job = j.read("SELECT id FROM print_job WHERE txn_id = ?", (other_amount.record.id,))[0][0]
        j.request_print_cancel(job, "01")
        review = review_svc.gather(t)
        outcome = await review_svc.run_op(t, StartOp("settle_review"), "en", 16)
        payload = await review_svc.ecr_op(t, "review", {})
        await t.close()
        return first, dup, other_card, other_amount, lost, review, outcome, payload, job, j

    first, dup, other_card, other_amount, lost, review, outcome, payload, job, j = run(go())
    assert other_card.status == "approved" and other_card.record.card_org == "VIS"
    assert lost.status == "reversal_pending"
    found = kinds(review)
    assert found[DUPLICATE] == [dup.record.invoice]
    dup_anomaly = next(a for a in review.anomalies if a.kind == DUPLICATE)
    assert dup_anomaly.related_voucher == first.record.invoice and dup_anomaly.actions == ("void",)
    assert found[PRINT_FAILED] == [other_amount.record.invoice]
    assert found[REVERSAL_STUCK] == [lost.record.invoice]
    assert [p.voucher for p in review.pending] == [lost.record.invoice] and review.blocked
    # Totals by card class and type: 4 approved sales, one on a foreign VISA card.
    assert review.count == 4
    assert review.by_org["CUP"] == (3, 4600) and review.by_org["VIS"] == (1, 1500)
    assert review.by_kind["sale"] == (4, 6100)
    assert sum(c for c, _ in review.by_side.values()) == 4
    # The keypad outcome: pending first, then the anomalies, each with its actions.
    assert outcome.message_key == "review_blocked"
    assert [i["kind"] for i in outcome.items] == ["reversal_due", DUPLICATE, PRINT_FAILED,
                                                  REVERSAL_STUCK]
    assert all(set(i["actions"]) <= {"void", "reprint", "retry"} for i in outcome.items)
    assert any("CUP" in line for line in outcome.lines)
    # No full card number leaves the terminal: only masked PANs in the items and the ECR reply.
    from board.sim.cards import TEST_CARDS
    text = json.dumps(payload) + json.dumps([dict(i) for i in outcome.items])
    for card in TEST_CARDS.values():
        assert card.pan not in text
    assert payload["ok"] and payload["review"]["blocked"] is True
    assert len(payload["review"]["anomalies"]) == 3
    assert j is not None and job


def test_settlement_refused_while_reversal_pending_then_allowed_after_send_now(tmp_path, sim):
    from helpers import provision

    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=1.0)

    async def go():
        t = await terminal(data_dir)
        await sale(t, 1000)
        sim.add_fault("drop", mti="0200")
        sim.add_rule("96", mti="0400")
        lost = await sale(t, 2000)
        refused = await t.settle(PASSWORD)
        advice = review_svc.settle_outcome(t, refused, "en")
        still = await review_svc.run_op(t, StartOp("anomaly_act", reason="retry"), "en", 16)
        sim.clear_rules()
        sim.clear_faults()
        sent = await review_svc.run_op(t, StartOp("anomaly_act", reason="retry"), "en", 16)
        after = review_svc.gather(t)
        allowed = await t.settle(PASSWORD)
        await t.close()
        return lost, refused, advice, still, sent, after, allowed

    lost, refused, advice, still, sent, after, allowed = run(go())
    assert refused.status == "refused" and refused.message_key == "settlement_blocked"
    assert any(lost.record.invoice in line and "reversal due" in line for line in advice.lines)
    assert any("F1" in line for line in advice.lines)
    assert still.status == "failed" and still.message_key == "anomaly_retry_left"
    assert sent.status == "done" and sent.message_key == "anomaly_retry_done"
    assert not after.blocked and not after.anomalies
    assert allowed.status == "settled"


def test_anomaly_actions_void_and_reprint_and_refusals(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        await sale(t, 700)
        dup = await sale(t, 700)
        j = t.journal
        job = j.read("SELECT id FROM print_job WHERE txn_id = ?", (dup.record.id,))[0][0]
        j.request_print_cancel(job, "01")
        before = review_svc.gather(t)
        unchecked = await review_svc.run_op(
            t, StartOp("anomaly_act", voucher=dup.record.invoice, reason="void"), "en", 16)
        reprint = await review_svc.run_op(
            t, StartOp("anomaly_act", voucher=dup.record.invoice, reason="reprint"), "en", 16)
        voided = await review_svc.run_op(
            t, StartOp("anomaly_act", voucher=dup.record.invoice, reason="void", authorised=True), "en", 16)
        after = review_svc.gather(t)
        missing = await review_svc.run_op(t, StartOp("anomaly_act", voucher="999999", reason="reprint"),
                                          "en", 16)
        bad = await review_svc.run_op(t, StartOp("anomaly_act", voucher=dup.record.invoice, reason="burn"),
                                      "en", 16)
        jobs = j.print_jobs(open_only=False)
        await t.close()
        return dup, before, unchecked, reprint, voided, after, missing, bad, jobs

    dup, before, unchecked, reprint, voided, after, missing, bad, jobs = run(go())
    assert {a.kind for a in before.anomalies} == {DUPLICATE, PRINT_FAILED}
    assert unchecked.status == "refused" and unchecked.message_key == "password_wrong"
    assert reprint.status == "done" and reprint.message_key == "reprint_queued"
    assert any(job.reprint and job.txn_id == dup.record.id and job.state is PrintState.QUEUED
               for job in jobs)
    assert voided.status == "approved"
    assert not after.anomalies  # voided: no longer a duplicate; reprinted: no longer failed
    assert missing.status == "refused" and missing.message_key == "anomaly_not_found"
    assert bad.status == "refused" and bad.message_key == "anomaly_bad_action"


def test_reports_from_keypad_and_ecr(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        await sale(t, 1200)
        x = await review_svc.run_op(t, StartOp("print_subtotals"), "en", 16)
        listed = await review_svc.run_op(t, StartOp("print_txn_list"), "zh_CN", 16)
        z_none = await review_svc.ecr_op(t, "print_report", {"kind": "z"})
        bad = await review_svc.ecr_op(t, "print_report", {"kind": "q"})
        await t.settle(PASSWORD)
        z = await review_svc.ecr_op(t, "print_report", {"kind": "z"})
        ecr_list = await review_svc.ecr_op(t, "print_report", {"kind": "list"})
        unknown = await review_svc.ecr_op(t, "nonsense", {})
        kinds_queued = [(job.kind.value, job.marked_reprint) for job in t.journal.print_jobs(False)]
        await t.close()
        return x, listed, z_none, bad, z, ecr_list, unknown, kinds_queued

    x, listed, z_none, bad, z, ecr_list, unknown, kinds_queued = run(go())
    assert x.ok and x.op == "print_subtotals" and listed.ok and listed.op == "print_txn_list"
    assert z_none == {"ok": False, "result": "refused", "message": "No settlement yet"}
    assert not bad["ok"] and "x, list or z" in bad["message"]
    assert z["ok"] and ecr_list["ok"] and not unknown["ok"]
    assert ("subtotals", False) in kinds_queued and ("txn_list", False) in kinds_queued
    assert ("settlement", True) in kinds_queued  # the Z report again, marked REPRINT


def test_settlement_failure_advice_for_each_class(tmp_path, sim):
    from helpers import provision

    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=0.5)

    async def go():
        t = await terminal(data_dir)
        await sale(t, 1000)
        sim.add_fault("drop", mti="0500", process=False)
        no_reply = await t.settle(PASSWORD)
        sim.clear_faults()
        still_sells = await sale(t, 500)
        await t.close()
        return no_reply, still_sells

    no_reply, still_sells = run(go())
    assert no_reply.status == "failed" and no_reply.message_key == "settlement_no_reply"
    # The simulator has no knob for a refused 0500: the engine's own result for one.
    refused_code = TxnResult("failed", "settlement_no_reply", detail="host refused the settlement (96)")
    code_lines = settlement_advice(refused_code, "en")
    assert "96" in code_lines[0] and "Switch malfunction" in code_lines[0]
    assert code_lines[-1] == words("adv_sales_go_on", "en")
    assert "echo test" in settlement_advice(no_reply, "en")[0]
    assert still_sells.status == "approved"  # a failed settlement does not stop the shop
    # The classes without a live host: link down before anything, unbalanced, interrupted, blocked.
    down = settlement_advice(TxnResult("failed", "host_unreachable", detail="sign-on failed"), "zh_CN")
    assert "回响测试" in down[0]
    unbalanced = settlement_advice(OpOutcome("settle", "settled", "settled_unbalanced"), "en")
    assert "transaction list" in unbalanced[0]
    interrupted = settlement_advice(TxnResult("interrupted", "settlement_interrupted", response_code="A0",
                                              detail="host refused the end of upload (A0)"), "en")
    assert "A0" in interrupted[0] and "Sign on again" in interrupted[1]
    assert interrupted[-1] == words("adv_resumes", "en")
    blocked = settlement_advice(
        TxnResult("refused", "settlement_blocked", detail="1 reversal(s) and 1 advice(s) are not yet"),
        "zh_CN", [Pending(1, "REVERSAL_DUE", "sale", "000007", "622588******0001", 2000, 3),
                  Pending(2, "ADVICE_DUE", "refund", "000009", "622588******0001", 500, 1)])
    assert "2" in blocked[0] and "000007" in blocked[1] and "待冲正" in blocked[1]
    assert "通知未上送" in blocked[2] and "F1" in blocked[3]
    assert settlement_advice(TxnResult("refused", "password_wrong"), "en") == [
        words("adv_password", "en")]


def test_a_sale_and_its_void_review_as_two_types_and_a_net_of_zero(data_dir, sim):
    """Issue 13 A6: a 12.34 sale and its void read "sales 1 12.34, voids 1 12.34, net 0.00",
    on the review screen (both languages) and in the ECR reply; never "24.68"."""
    async def go():
        t = await terminal(data_dir)
        sold = await sale(t, 1234)
        voided = await void(t, sold.record.invoice)
        en = await review_svc.run_op(t, StartOp("settle_review"), "en", 16)
        zh = await review_svc.run_op(t, StartOp("settle_review"), "zh_CN", 16)
        payload = await review_svc.ecr_op(t, "review", {})
        await t.close()
        return voided, en, zh, payload

    voided, en, zh, payload = run(go())
    assert voided.status == "approved"
    assert list(en.lines[1:6]) == ["SALES          1", "           12.34", "VOIDS          1",
                                   "           12.34", "NET         0.00"]
    assert list(zh.lines[1:6]) == ["消费           1", "           12.34", "撤销           1",
                                   "           12.34", "净额        0.00"]
    assert "NET BY CARD" in en.lines and "按卡净额" in zh.lines
    for lines in (en.lines, zh.lines):
        assert not any("24.68" in line for line in lines)
    review = payload["review"]
    assert review["net"] == 0
    assert review["by_side"]["domestic"] == {"count": 2, "amount": 0}
    assert review["by_kind"] == {"sale": {"count": 1, "amount": 1234},
                                 "void": {"count": 1, "amount": 1234}}
