"""The money invariants under random operations, host faults and restarts (issue 12, "done
means"): a hypothesis state machine drives the real terminal (in-process, real journal file)
against the simulator over real TCP, and after every step checks, on both books:

- per original, what went back to the card never exceeds what was taken from it;
- an original is never both voided and refunded;
- every record the host may have booked is resolved, or visibly owed (PENDING, REVERSAL_DUE,
  ADVICE_DUE, QUARANTINED), and the terminal approves nothing the host did not;
- held orders agree with their transactions.

The examples are derandomized, so CI runs the same schedules every time;
MONEY_PROPERTY_EXAMPLES=300 MONEY_PROPERTY_RANDOM=1 explores new ones (a failure prints the
steps that reproduce it).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from helpers import PASSWORD, TID, pin_for, provision, start_sim, swipe
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.services.held import cancel as held_cancel
from firmware.app.services.held import park as held_park
from firmware.app.services.held import resume as held_resume
from firmware.app.terminal import Terminal
from firmware.engine import events as ev
from firmware.engine.model import OriginalRef, TxnRequest
from firmware.engine.states import UNRESOLVED, TxnState
from firmware.host.messages import TxnKind
from firmware.journal.held import HeldOrders

EXAMPLES = int(os.environ.get("MONEY_PROPERTY_EXAMPLES", "30"))
RANDOM = bool(os.environ.get("MONEY_PROPERTY_RANDOM"))
CARDS = ("cup_credit", "visa", "mastercard")
LIVE = {TxnState.PENDING, TxnState.APPROVED, TxnState.REVERSAL_DUE, TxnState.ADVICE_DUE,
        TxnState.QUARANTINED}
FAULTS = ("drop_after_booking", "drop_before_booking", "decline", "no_mac", "drop_reversals",
          "try_again_advice")


class PowerCut(Exception):
    """Raised by the fault hook: the terminal stops dead between two actions."""


class MoneyMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="money-props-"))
        self.sim = start_sim(self.tmp)
        self.data_dir = provision(self.tmp / "terminal", self.sim.port, reply_timeout=0.4)
        self.loop = asyncio.new_event_loop()
        self.t: Terminal = self._power_on()
        self.cards: dict[int, str] = {}  # journal record id -> the test card that paid

    # -- plumbing ---------------------------------------------------------------------------

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def _power_on(self) -> Terminal:
        t = Terminal(AppConfig(data_dir=self.data_dir))
        self.run(t.start())
        return t

    def teardown(self) -> None:
        try:
            self.run(self.t.close())
        finally:
            self.loop.close()
            self.sim.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def journal(self):
        assert self.t.journal is not None
        return self.t.journal

    def _approved(self, *kinds: TxnKind) -> list:
        return [r for r in self.journal.records(TxnState.APPROVED) if r.kind in kinds]

    def _money(self, request: TxnRequest, io: OperatorInput, card: str | None = None) -> None:
        result = self.run(self.t.financial(request, io))
        event(f"{request.kind.value}: {result.status}")
        if result.record is not None and card is not None:
            self.cards[result.record.id] = card

    # -- operations -------------------------------------------------------------------------

    @rule(amount=st.integers(1, 50_000), card=st.sampled_from(CARDS))
    def sale(self, amount: int, card: str) -> None:
        self._money(TxnRequest(TxnKind.SALE, amount), OperatorInput(card=swipe(card)), card)

    @rule(amount=st.integers(1, 50_000), card=st.sampled_from(CARDS))
    def preauth(self, amount: int, card: str) -> None:
        self._money(TxnRequest(TxnKind.PREAUTH, amount), OperatorInput(card=swipe(card)), card)

    @precondition(lambda self: self._approved(TxnKind.SALE))
    @rule(pick=st.integers(0, 10_000))
    def void(self, pick: int) -> None:
        sales = self._approved(TxnKind.SALE)
        original = sales[pick % len(sales)]
        self._money(TxnRequest(TxnKind.VOID, original=OriginalRef(invoice=original.invoice,
                                                                  batch=original.batch)),
                    OperatorInput(password=PASSWORD))

    @precondition(lambda self: self.journal.every_record())
    @rule(pick=st.integers(0, 10_000), share=st.integers(1, 120), other_card=st.booleans())
    def refund(self, pick: int, share: int, other_card: bool) -> None:
        """Against any record with an RRN (voided, refunded, declined ones too: the rules must
        refuse what makes no sense), for a share of its amount that may exceed what is left."""
        candidates = [r for r in self.journal.every_record() if r.rrn and r.kind in (
            TxnKind.SALE, TxnKind.COMPLETION, TxnKind.PREAUTH)]
        if not candidates:
            return
        original = candidates[pick % len(candidates)]
        card = self.cards.get(original.id, "cup_credit")
        if other_card:
            card = next(c for c in CARDS if c != card)
        amount = max(1, original.amount * share // 100)
        self._money(TxnRequest(TxnKind.REFUND, amount, original=OriginalRef(
            rrn=original.rrn, date=original.local_date)),
            OperatorInput(card=swipe(card), pin=pin_for(card), password=PASSWORD), card)

    @precondition(lambda self: self._approved(TxnKind.PREAUTH))
    @rule(pick=st.integers(0, 10_000), share=st.integers(1, 110))
    def completion(self, pick: int, share: int) -> None:
        preauths = self._approved(TxnKind.PREAUTH)
        original = preauths[pick % len(preauths)]
        self._money(TxnRequest(TxnKind.COMPLETION, max(1, original.amount * share // 100),
                               original=OriginalRef(invoice=original.invoice, batch=original.batch)),
                    OperatorInput(), self.cards.get(original.id))

    @precondition(lambda self: self._approved(TxnKind.COMPLETION))
    @rule(pick=st.integers(0, 10_000))
    def completion_void(self, pick: int) -> None:
        completions = self._approved(TxnKind.COMPLETION)
        original = completions[pick % len(completions)]
        self._money(TxnRequest(TxnKind.COMPLETION_VOID, original=OriginalRef(
            invoice=original.invoice, batch=original.batch)), OperatorInput(password=PASSWORD))

    @rule(amount=st.integers(1, 30_000))
    def park(self, amount: int) -> None:
        self.run(held_park(self.t, amount, f"P{amount}", "", "ecr"))

    @precondition(lambda self: HeldOrders(self.journal).orders())
    @rule(pick=st.integers(0, 10_000), card=st.sampled_from(CARDS), cancel=st.booleans())
    def held_order(self, pick: int, card: str, cancel: bool) -> None:
        orders = HeldOrders(self.journal).orders()
        order = orders[pick % len(orders)]
        event(f"held order {order.state}: {'cancel' if cancel else 'pay'}")
        if order.state == "HELD" and not cancel:
            self.run(held_resume(self.t, order.id, OperatorInput(card=swipe(card))))
            record = HeldOrders(self.journal).get(order.id).txn_id
            if record is not None:
                self.cards[record] = card
        elif order.state in ("HELD", "PAID", "PAYING"):
            self.run(held_cancel(self.t, order.id, "customer_cancelled",
                                 OperatorInput(password=PASSWORD, card=swipe(self._card_of(order)))))

    def _card_of(self, order) -> str:
        return self.cards.get(order.txn_id or -1, "cup_credit")

    @rule()
    def settle(self) -> None:
        self.run(self.t.settle(PASSWORD))

    # -- what goes wrong ----------------------------------------------------------------------

    @rule(fault=st.sampled_from(FAULTS))
    def host_fault(self, fault: str) -> None:
        """The next financial exchange goes wrong at the host (it acts on the next match)."""
        event(f"fault: {fault}")
        sim = self.sim
        if fault == "drop_after_booking":
            sim.add_fault("drop", count=1, process=True)
        elif fault == "drop_before_booking":
            sim.add_fault("drop", count=1, process=False)
        elif fault == "decline":
            sim.add_rule("05", count=1)
        elif fault == "no_mac":
            sim.add_fault("no_mac", count=1)
        elif fault == "drop_reversals":
            sim.add_fault("drop", mti="0400", count=2)
        else:
            sim.add_rule("96", mti="0220", count=1)

    @rule()
    def restart(self) -> None:
        self.run(self.t.close())
        self.t = self._power_on()

    @rule(amount=st.integers(1, 20_000), card=st.sampled_from(CARDS))
    def power_cut_during_a_sale(self, amount: int, card: str) -> None:
        """The power goes after the sale is durable and before (or as) it leaves: the next start
        finds it PENDING and reverses it."""
        t = self.t

        def cut(action: object) -> None:
            if isinstance(action, ev.SendRequest) and action.message.mti == "0200":
                raise PowerCut

        t.fault_hook = cut
        with contextlib.suppress(PowerCut):
            self.run(t.financial(TxnRequest(TxnKind.SALE, amount), OperatorInput(card=swipe(card))))
        t.fault_hook = None
        self.run(t.link.channel.close())
        t.journal.close()  # what was committed stays; nothing else runs on this instance
        if t.key_store is not None:
            t.key_store.close()  # the key token's session ends with the power
        self.t = self._power_on()

    # -- the invariants ------------------------------------------------------------------------

    @invariant()
    def money_never_goes_back_twice(self) -> None:
        records = self.journal.every_record()
        for original in records:
            if original.kind not in (TxnKind.SALE, TxnKind.COMPLETION) or not original.rrn:
                continue
            live = [r for r in records if r.state in LIVE and r.kind is TxnKind.REFUND
                    and (r.orig_id == original.id or r.orig_rrn == original.rrn)]
            assert sum(r.amount for r in live) <= original.amount, (original, live)
            assert not (live and original.state is TxnState.VOIDED), (original, live)
        host = self.sim.ledger.approved(TID)
        by_id = {r.id: r for r in host}
        for row in host:
            refunds = [r for r in host if r.kind == "refund" and r.orig_id == row.id]
            assert sum(r.amount for r in refunds) <= row.amount, (row, refunds)
            assert not (refunds and row.voided_by is not None
                        and by_id.get(row.voided_by) is not None), (row, refunds)

    @invariant()
    def both_books_agree_or_the_difference_is_owed(self) -> None:
        mine = {(int(r.batch), int(r.stan)): r for r in self.journal.every_record()
                if r.kind is not TxnKind.BALANCE}
        for row in self.sim.ledger.approved(TID):
            record = mine.get((row.batch, row.stan))
            assert record is not None, f"the host booked {row} and the terminal has no record"
            assert record.state in (TxnState.APPROVED, TxnState.VOIDED) or record.state in UNRESOLVED, (
                f"the host booked {row.kind} {row.stan} but the terminal says {record.state}")
        host = {(r.batch, r.stan) for r in self.sim.ledger.approved(TID)}
        for key, record in mine.items():
            if record.state in (TxnState.APPROVED, TxnState.VOIDED):
                assert key in host, f"approved on the terminal only: {record}"

    @invariant()
    def held_orders_agree_with_their_transactions(self) -> None:
        j = self.journal
        for order in HeldOrders(j).orders(open_only=False):
            sale = j.get(order.txn_id) if order.txn_id is not None else None
            if order.state == "HELD":
                assert sale is None, order
            elif order.state == "PAID":
                assert sale is not None and sale.state is TxnState.APPROVED, (order, sale)
            elif order.state == "PAYING":
                assert sale is not None and sale.state in (TxnState.PENDING,
                                                           TxnState.REVERSAL_DUE), (order, sale)
            elif order.state == "CANCELLING":
                undo = j.get(order.cancel_txn_id) if order.cancel_txn_id is not None else None
                owed = (sale is not None and sale.state in UNRESOLVED) or (
                    undo is not None and undo.state in UNRESOLVED)
                assert owed, (order, sale, undo)
            elif order.state == "CANCELLED" and sale is not None:
                refunded = sum(r.amount for r in j.follow_ups(sale) if r.kind is TxnKind.REFUND
                               and r.state is TxnState.APPROVED)
                assert sale.state is not TxnState.APPROVED or refunded >= sale.amount, (order, sale)


MoneyMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=25, deadline=None, derandomize=not RANDOM,
    database=None, suppress_health_check=list(HealthCheck))
TestMoneyInvariants = MoneyMachine.TestCase
