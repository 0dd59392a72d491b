"""Held orders (挂单) with real parts: the journal file, the terminal against the acquirer simulator,
and a real terminal process killed with SIGKILL while orders are held or a resumed sale is open."""

from __future__ import annotations

import sqlite3
import time

import pytest
from helpers import PASSWORD, TerminalProcess, assert_agree, pin_for, run, sale, swipe, terminal

from firmware.app.core.contract import OperatorInput
from firmware.app.services.held import ECR_OPS, PANEL_OPS, counts, ecr_op, list_items, run_op
from firmware.engine.model import PendingDraft
from firmware.engine.states import TxnEvent
from firmware.host.messages import TxnKind
from firmware.journal.held import REASONS, HeldError, HeldOrders
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.ports import TextLine
from firmware.printing.held_slip import held_trail_slip
from firmware.ui.core import StartOp


def keypad(op: str, **kw):
    return StartOp(op, **kw)


async def _park(t, amount=1500, ref="T12", note="table 12"):
    out = await run_op(t, keypad("held_park", amount=amount, reference=ref, note=note), "en", 16)
    assert out.status == "stored", out
    return out.items[0]["id"]


def test_park_resume_carries_the_reference_to_the_receipt(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            oid = await _park(t)
            listed = await run_op(t, keypad("held_list"), "en", 16)
            row = listed.items[0]
            assert (row["id"], row["amount"], row["reference"], row["status"], row["note"]) == (
                oid, 1500, "T12", "HELD", "table 12")
            assert sim.ledger.approved("12345678") == []  # parking moved no money
            t.card_slot.present(swipe("cup_credit"), pin_for("cup_credit"))
            out = await run_op(t, keypad("held_resume", order_id=oid), "en", 16)
            assert out.status == "approved", out
            order = HeldOrders(t.journal).get(oid)
            assert order.state == "PAID"
            record = t.journal.get(order.txn_id)
            assert record.reference == "T12" and record.amount == 1500
            # the result and the order's audit trail name the sale by its voucher number
            trail = HeldOrders(t.journal).trail(oid)
            assert out.voucher == record.invoice and any(
                f"sale voucher {record.invoice}" in line.detail for line in trail)
            # the receipt is rendered from this record: its reference prints
            doc = t.prints.render(t.journal.print_jobs(open_only=False)[-1], t.prints.copies[0])
            assert any("T12" in b.text for b in doc.blocks if isinstance(b, TextLine))
            assert_agree(t.journal, sim.ledger)
        finally:
            await t.close()
    run(go())


@pytest.mark.parametrize("reason", REASONS)
def test_cancel_a_held_order_with_each_reason(data_dir, sim, reason):
    async def go():
        t = await terminal(data_dir)
        try:
            oid = await _park(t, ref=f"R{len(reason)}")
            out = await run_op(t, keypad("held_cancel", order_id=oid, reason=reason, authorised=True),
                               "zh_CN", 16)
            assert out.status == "done"
            order = HeldOrders(t.journal).get(oid)
            assert (order.state, order.cancel_reason, order.cancel_txn_id) == ("CANCELLED", reason, None)
            trail = HeldOrders(t.journal).trail(oid)
            assert [x.action for x in trail] == ["held park", "held cancel"]
            # the trail names the operator and where the cancel came from (issue 17)
            assert reason in trail[-1].detail and trail[-1].operator == "01 keypad"
            assert (await run_op(t, keypad("held_list"), "en", 16)).items == ()
        finally:
            await t.close()
    run(go())


def test_cancel_needs_the_password_over_ecr_and_a_checked_one_on_the_keypad(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            oid = await _park(t)
            unchecked = await run_op(t, keypad("held_cancel", order_id=oid, reason="other"), "en", 16)
            wrong = await ecr_op(t, "held_cancel", {"order": oid, "reason": "other", "password": "999999"})
            bad_reason = await ecr_op(t, "held_cancel", {"order": oid, "reason": "bored",
                                                         "password": PASSWORD})
            assert unchecked.status == "refused" and wrong["result"] == "refused"
            assert not bad_reason["ok"] and "reason must be one of" in bad_reason["message"]
            assert HeldOrders(t.journal).get(oid).state == "HELD"
            ok = await ecr_op(t, "held_cancel", {"order": oid, "reason": "other", "password": PASSWORD})
            assert ok["ok"] and ok["order"]["status"] == "CANCELLED"
        finally:
            await t.close()
    run(go())


def test_cancel_of_a_paid_order_is_a_void_in_the_same_batch(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            oid = await _park(t, amount=2300)
            # The ECR server turns the request's card name into card data (origin.card).
            r = await ecr_op(t, "held_resume", {"order": oid, "pin": pin_for("cup_credit")},
                             OperatorInput(card=swipe("cup_credit")))
            assert r["ok"], r
            sale_id = HeldOrders(t.journal).get(oid).txn_id
            out = await run_op(t, keypad("held_cancel", order_id=oid, reason="customer_cancelled",
                                         authorised=True), "en", 16)
            assert out.status == "approved", out
            order = HeldOrders(t.journal).get(oid)
            void = t.journal.get(order.cancel_txn_id)
            assert order.state == "CANCELLED" and void.kind is TxnKind.VOID
            assert void.batch == t.journal.get(sale_id).batch and void.orig_id == sale_id
            assert t.journal.get(sale_id).state.value == "VOIDED"
            assert_agree(t.journal, sim.ledger)
        finally:
            await t.close()
    run(go())


def test_cancel_of_an_order_paid_before_settlement_is_a_refund(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            paid = await _park(t, amount=4100, ref="P1")
            waiting = await _park(t, amount=900, ref="W1")
            t.card_slot.present(swipe("cup_credit"), pin_for("cup_credit"))
            assert (await run_op(t, keypad("held_resume", order_id=paid), "en", 16)).status == "approved"
            settled = await t.settle(PASSWORD)
            assert settled.status == "settled", settled
            # orders survive settlement: the HELD one is still there to resume
            assert HeldOrders(t.journal).get(waiting).state == "HELD"
            t.card_slot.present(swipe("cup_credit"), pin_for("cup_credit"))  # the refund asks for it
            out = await run_op(t, keypad("held_cancel", order_id=paid, reason="payment_failed",
                                         authorised=True), "en", 16)
            order = HeldOrders(t.journal).get(paid)
            refund = t.journal.get(order.cancel_txn_id)
            assert refund.kind is TxnKind.REFUND and refund.amount == 4100, out
            assert order.state == "CANCELLED" and refund.state.value == "APPROVED"
            assert_agree(t.journal, sim.ledger)
        finally:
            await t.close()
    run(go())


def test_list_shows_unresolved_transactions_read_only_and_aged_orders(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            h = HeldOrders(t.journal, clock=lambda: time.time() - 3 * 3600)
            h.park(700, "OLD", "", "01", "156")
            await _park(t, ref="NEW")
            assert counts(t) == (2, 1)  # factory held_max_age_min = 120
            t.settings["transactions"]["held_max_age_min"] = 240
            assert counts(t) == (2, 0)
            sim.add_fault("drop", mti="0200", count=1, process=True)
            sim.add_fault("drop", mti="0400", count=-1)
            r = await sale(t, 555)
            assert r.status == "reversal_pending", r
            items = list_items(t)
            unresolved = [i for i in items if i["readonly"]]
            assert len(unresolved) == 1 and unresolved[0]["status"] == "REVERSAL_DUE"
            assert unresolved[0]["doing"] == "held_doing_reversal" and unresolved[0]["amount"] == 555
        finally:
            await t.close()
    run(go())


def _journal(path) -> Journal:
    return Journal.open(path, CardVault(b"k" * 32))


def _pending_sale(j: Journal, ref: str, amount: int, order_id: int | None = None):
    return j.begin(PendingDraft(TxnKind.SALE, amount, "156", "6222020000000000012", "622202******0012",
                                False, "swipe", False, "01", "0501", "101010", reference=ref,
                                held_order_id=order_id))


def test_unknown_outcome_cancel_waits_for_the_reversal(tmp_path):
    j = _journal(tmp_path / "journal.db")
    h = HeldOrders(j)
    order = h.park(1200, "U1", "", "01", "156")
    h.mark_paying(order.id, "01")
    rec = _pending_sale(j, "U1", 1200, order.id)  # tied to its order in the same commit
    assert h.get(order.id).txn_id == rec.id
    j.apply(rec.id, TxnEvent.LOSE_REPLY, reversal_reason="98")  # power loss / timeout
    h.reconcile(stale=True)
    assert (h.get(order.id).state, h.get(order.id).txn_id) == ("PAYING", rec.id)
    h.begin_cancel(order.id, "operator_error", "01", "reversal path")
    h.reconcile(stale=True)
    assert h.get(order.id).state == "CANCELLING"  # not before the host acknowledges
    j.apply(rec.id, TxnEvent.REVERSAL_ACKED)  # the journal moves the order: no reconcile needed
    assert h.get(order.id).state == "CANCELLED"
    actions = [(x.action, x.outcome) for x in h.trail(order.id)]
    assert actions[0] == ("held park", "HELD") and actions[-1] == ("held cancelled", "CANCELLED")
    with pytest.raises(HeldError, match="CANCELLED, not HELD"):
        h.cancel_unpaid(order.id, "other", "01")
    j.close()


def test_bad_input_is_refused_in_words_and_nothing_is_written(tmp_path):
    j = _journal(tmp_path / "journal.db")
    h = HeldOrders(j)
    for amount, ref, note in ((0, "A", ""), (-5, "A", ""), (100, "", ""), (100, "x" * 21, ""),
                              (100, "A\x00", ""), (100, "A", "n" * 41)):
        with pytest.raises(HeldError):
            h.park(amount, ref, note, "01", "156")
    with pytest.raises(HeldError, match="no held order 9"):
        h.get(9)
    assert h.orders(open_only=False) == [] and j.read("SELECT COUNT(*) FROM held_order")[0][0] == 0
    j.close()


def test_trail_slip_fits_the_paper_in_both_languages(tmp_path):
    j = _journal(tmp_path / "journal.db")
    h = HeldOrders(j)
    order = h.park(123456, "REF-0042", "two coffees, one tea", "01", "156")
    h.cancel_unpaid(order.id, "customer_cancelled", "01")
    order = h.get(order.id)
    for lang, title, reason, ref_label in (
            ("en", "HELD ORDER AUDIT TRAIL", "customer cancelled", "Order no."),
            ("zh_CN", "挂单审计记录", "顾客取消", "订单号")):
        for cols in (32, 48):
            doc = held_trail_slip(order, h.trail(order.id), lang=lang, columns=cols)
            texts = [b.text for b in doc.blocks if isinstance(b, TextLine)]
            from firmware.ports import text_cells
            assert all(text_cells(x) <= cols for x in texts)
            joined = "\n".join(texts)
            assert title in joined and "REF-0042" in joined and "1234.56" in joined
            assert reason in joined and "park" in joined and "cancel" in joined
            # the order's own number has its own label: 参考号 is the RRN's (issue 13 A10)
            assert ref_label in joined and "参考号" not in joined and "Reference" not in joined
    j.close()


def test_ops_tables_agree():
    assert set(ECR_OPS) == PANEL_OPS


# -- power loss: a real terminal process killed with SIGKILL ----------------------------------------

def _ledger_sales(sim):
    return [r for r in sim.ledger.approved("12345678") if r.kind == "sale"]


def test_power_loss_with_orders_held_and_during_a_resumed_sale(data_dir, sim):
    proc = TerminalProcess(data_dir)
    proc.start()
    try:
        a = proc.request(op="held_park", amount=1000, ref="K1", note="kept")
        b = proc.request(op="held_park", amount=2000, ref="K2")
        assert a["ok"] and b["ok"], (a, b)
        proc.kill()  # SIGKILL with two orders held
        proc.start()
        listed = proc.request(op="held_list")
        assert [(o["reference"], o["status"]) for o in listed["orders"]] == [("K1", "HELD"), ("K2", "HELD")]
        # Now kill it between PAYING and the sale's outcome: the host books the sale, its reply waits.
        sim.add_fault("delay", mti="0200", count=1, seconds=30, process=True)
        proc.send_only(op="held_resume", order=b["order"]["id"], card="cup_credit")
        db = data_dir / "journal.db"
        deadline = time.monotonic() + 15
        while True:
            ro = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                pending = ro.execute("SELECT COUNT(*) FROM txn WHERE state = 'PENDING'").fetchone()[0]
            finally:
                ro.close()
            if pending:
                break
            assert time.monotonic() < deadline, "the sale never became durable"
            time.sleep(0.05)
        proc.kill()
        sim.clear_faults()
        proc.start()  # start-up recovery reverses the unknown sale before anything else
        listed = proc.request(op="held_list")
        orders = {o["reference"]: o for o in listed["orders"]}
        assert orders["K1"]["status"] == "HELD"
        # the sale's real outcome: reversed at the host, so the order is held again, not lost
        assert orders["K2"]["status"] == "HELD", listed
        assert _ledger_sales(sim) == []  # approved() leaves reversed rows out
        trail = proc.request(op="held_trail", order=b["order"]["id"])
        assert any("reversed" in line for line in trail["lines"]), "\n".join(trail["lines"])
    finally:
        proc.kill()


def test_cancelling_an_order_whose_sale_outcome_is_unknown_reverses_it_at_once(data_dir, sim):
    """The resumed sale's reply and its first reversal are lost (the order is PAYING, the sale
    REVERSAL_DUE); with the host back, cancelling the order sends the reversal then and there."""
    async def go():
        t = await terminal(data_dir)
        try:
            oid = await _park(t, amount=2300, ref="U9")
            sim.add_fault("drop", mti="0200", count=1, process=True)
            sim.add_fault("drop", mti="0400", count=-1)
            t.card_slot.present(swipe("cup_credit"), pin_for("cup_credit"))
            out = await run_op(t, keypad("held_resume", order_id=oid), "en", 16)
            assert out.status == "reversal_pending", out
            assert HeldOrders(t.journal).get(oid).state == "PAYING"
            sim.clear_faults()
            out = await run_op(t, keypad("held_cancel", order_id=oid, reason="payment_failed",
                                         authorised=True), "en", 16)
            order = HeldOrders(t.journal).get(oid)
            sale_state = t.journal.get(order.txn_id).state.value if order.txn_id else None
            assert_agree(t.journal, sim.ledger)
            return out, order.state, sale_state
        finally:
            await t.close()
    out, state, sale_state = run(go())
    assert (out.status, out.message_key) == ("reversed", "reversal_sent")
    assert state == "CANCELLED" and sale_state == "REVERSED"
    assert [(row.amount, row.state) for row in sim.ledger.rows("12345678")] == [(2300, "reversed")]
