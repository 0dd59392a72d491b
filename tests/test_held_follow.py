"""Held orders follow their money wherever it is resolved (issue 12, item 7): the journal moves an
order in the commit that changes its sale (or the void/refund cancelling it), whoever changed it:
a held-order request, a direct void or refund, the backlog inside a settlement.
"""

from __future__ import annotations

from helpers import PASSWORD, TerminalProcess, assert_agree, refund, run, terminal, void

from firmware.app.core.contract import OperatorInput
from firmware.app.services.held import cancel, park, resume
from firmware.engine.states import TxnState
from firmware.journal.held import HeldOrders

CARD = "cup_credit"


async def _paid_order(t, amount: int, ref: str) -> int:
    from helpers import swipe

    order = (await park(t, amount, ref, "", "ecr")).items[0]["id"]
    outcome = await resume(t, order, OperatorInput(card=swipe(CARD)))
    assert outcome.status == "approved", outcome
    return order


def test_cancelling_a_paid_order_whose_void_was_reversed_says_it_is_still_paid(data_dir, sim):
    """The void's reply is lost and its reversal acknowledged: nothing was cancelled, and the
    words must say so (they said "reversed" / "Cancelled - reversal sent")."""
    async def go():
        t = await terminal(data_dir)
        try:
            order = await _paid_order(t, 2500, "V1")
            sim.add_fault("drop", mti="0200", kind_filter="void", count=1, process=False)
            outcome = await cancel(t, order, "customer_cancelled", OperatorInput(password=PASSWORD))
            return outcome, HeldOrders(t.journal).get(order), t.journal
        finally:
            await t.link.channel.close()

    outcome, order, journal = run(go())
    assert order.state == "PAID" and order.cancel_txn_id is None
    assert outcome.status == "not_cancelled" and not outcome.ok
    assert outcome.message_key == "held_still_paid_reversed"
    from firmware.i18n import text
    assert "still paid" in text(outcome.message_key)
    assert_agree(journal, sim.ledger)


def test_an_order_follows_its_sale_when_the_reversal_is_acknowledged_in_a_settlement(data_dir, sim):
    """The sale's reply and its reversals are lost (order PAYING); the reversal goes through when
    settlement clears the backlog: the order is HELD again at once, not at the next held request."""
    async def go():
        from helpers import swipe

        t = await terminal(data_dir)
        try:
            order = (await park(t, 1800, "S1", "", "ecr")).items[0]["id"]
            sim.add_fault("drop", mti="0200", count=1, process=True)
            sim.add_fault("drop", mti="0400", count=3)
            outcome = await resume(t, order, OperatorInput(card=swipe(CARD)))
            assert outcome.status == "reversal_pending", outcome
            paying = HeldOrders(t.journal).get(order)
            result = await t.settle(PASSWORD)
            return paying, result, HeldOrders(t.journal).get(order), t.journal
        finally:
            await t.link.channel.close()

    paying, result, after, journal = run(go())
    assert paying.state == "PAYING" and paying.txn_id is not None
    assert result.status == "settled"
    assert after.state == "HELD" and after.txn_id is None
    assert journal.get(paying.txn_id).state is TxnState.REVERSED
    assert_agree(journal, sim.ledger)


def test_voiding_an_orders_sale_directly_cancels_the_order(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            order = await _paid_order(t, 3100, "D1")
            sale_record = t.journal.get(HeldOrders(t.journal).get(order).txn_id)
            assert (await void(t, sale_record.invoice)).status == "approved"
            h = HeldOrders(t.journal)
            return h.get(order), [line.action for line in h.trail(order)]
        finally:
            await t.close()

    order, actions = run(go())
    assert order.state == "CANCELLED"
    assert actions[-1] == "held cancelled"


def test_refunding_an_orders_settled_sale_in_full_cancels_the_order_and_partly_does_not(data_dir, sim):
    async def go():
        t = await terminal(data_dir)
        try:
            whole = await _paid_order(t, 4000, "R1")
            part = await _paid_order(t, 5000, "R2")
            assert (await t.settle(PASSWORD)).status == "settled"
            h = HeldOrders(t.journal)
            for order, amount in ((whole, 4000), (part, 2000)):
                s = t.journal.get(h.get(order).txn_id)
                assert (await refund(t, amount, s.rrn, s.local_date, card=CARD)).status == "approved"
            return h.get(whole), h.get(part)
        finally:
            await t.close()

    whole, part = run(go())
    assert whole.state == "CANCELLED" and part.state == "PAID"


def test_a_held_cancel_over_ecr_words_the_outcome_by_the_orders_state(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        parked = term.request(op="held_park", amount=2200, ref="E1")
        order = parked["order"]["id"]
        assert term.request(op="held_resume", order=order, card=CARD)["result"] == "approved"
        sim.add_fault("drop", mti="0200", kind_filter="void", count=1, process=True)
        reply = term.request(op="held_cancel", order=order, reason="customer_cancelled",
                             password=PASSWORD)
        assert reply["result"] == "not_cancelled" and reply["ok"] is False, reply
        assert "still paid" in reply["message"]
        assert reply["order"]["status"] == "PAID"
        # ...and with the host answering, the same cancel goes through.
        reply = term.request(op="held_cancel", order=order, reason="customer_cancelled",
                             password=PASSWORD)
        assert reply["result"] == "approved" and reply["order"]["status"] == "CANCELLED", reply
    finally:
        term.stop()
