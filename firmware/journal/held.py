"""Held orders (挂单): the held_order table's rules, each state change one SQL transaction with its
audit line. An order is HELD (no money moved), PAYING (its sale runs or its outcome is unknown),
PAID (txn_id names the approved sale), CANCELLING (a void/refund or a reversal is being resolved)
or CANCELLED. Once a sale (or the void/refund cancelling the order) is written, the order follows
that record wherever it is resolved: the journal moves it in the record's own commit
(journal/follow.py). This module parks, starts payments and cancels, and puts back an order whose
operation ended before any record was written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from firmware.journal.errors import JournalError
from firmware.journal.follow import (
    CANCELLED,
    CANCELLING,
    HELD,
    OPEN_STATES,
    PAID,
    PAYING,
)
from firmware.journal.follow import tag as _tag
from firmware.journal.store import Journal

REASONS = ("customer_cancelled", "payment_failed", "operator_error", "other")
MAX_REFERENCE = 20
MAX_NOTE = 40

_COLUMNS = ("id, reference, amount, currency, note, kind, state, operator, source, txn_id, "
            "cancel_reason, cancel_txn_id, created_at, updated_at")


class HeldError(Exception):
    """A held-order request that cannot be carried out; str() says why in words."""


@dataclass(frozen=True)
class HeldOrder:
    id: int
    reference: str
    amount: int
    currency: str
    note: str
    kind: str
    state: str
    operator: str
    source: str
    txn_id: int | None
    cancel_reason: str | None
    cancel_txn_id: int | None
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class TrailLine:
    at: float
    operator: str
    action: str
    detail: str
    outcome: str


class HeldOrders:
    """The held-order rules over one open Journal."""

    def __init__(self, journal: Journal, clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.clock = clock

    # -- reading ------------------------------------------------------------------------------

    def get(self, order_id: int) -> HeldOrder:
        rows = self.journal.read(f"SELECT {_COLUMNS} FROM held_order WHERE id = ?", (order_id,))
        if not rows:
            raise HeldError(f"there is no held order {order_id}")
        return HeldOrder(*rows[0])

    def orders(self, open_only: bool = True) -> list[HeldOrder]:
        where = f"WHERE state IN ({','.join('?' * len(OPEN_STATES))})" if open_only else ""
        args = OPEN_STATES if open_only else ()
        rows = self.journal.read(f"SELECT {_COLUMNS} FROM held_order {where} ORDER BY id", args)
        return [HeldOrder(*row) for row in rows]

    def aged(self, max_age_min: int, now: float | None = None) -> list[HeldOrder]:
        """Orders still HELD for longer than max_age_min minutes (flagged on the idle screen)."""
        limit = (self.clock() if now is None else now) - 60.0 * max_age_min
        rows = self.journal.read(
            f"SELECT {_COLUMNS} FROM held_order WHERE state = ? AND created_at < ? ORDER BY id",
            (HELD, limit))
        return [HeldOrder(*row) for row in rows]

    def trail(self, order_id: int) -> list[TrailLine]:
        """Every audit line of one order, oldest first ("keep the evidence")."""
        rows = self.journal.audit_matching("held %", _tag(order_id) + "%")
        return [TrailLine(*row) for row in rows]

    def _txn(self, txn_id: int) -> tuple[str, str, str | None, int | None]:
        """(kind, state, batch, settlement_id) of one journal record."""
        try:
            record = self.journal.get(txn_id)  # in the archive once its batch moved
        except JournalError:
            raise HeldError(f"journal record {txn_id} is missing") from None
        return record.kind.value, record.state.value, record.batch, record.settlement_id

    # -- changing -----------------------------------------------------------------------------

    def _change(self, order: HeldOrder, expect: tuple[str, ...], operator: str, action: str,
                detail: str, outcome: str, **fields: object) -> HeldOrder:
        """One state change and its audit line in one transaction; refused if the order moved."""
        now = self.clock()
        sets = ", ".join(f"{name} = ?" for name in fields)
        with self.journal.transaction() as cur:
            row = cur.execute("SELECT state FROM held_order WHERE id = ?", (order.id,)).fetchone()
            if row is None or row[0] not in expect:
                raise HeldError(f"held order {order.id} is {row[0] if row else 'gone'}, "
                                f"not {' or '.join(expect)}")
            cur.execute(f"UPDATE held_order SET {sets}, updated_at = ? WHERE id = ?",
                        (*fields.values(), now, order.id))
            self.journal.audit_in(cur, operator, f"held {action}", f"{_tag(order.id)} {detail}",
                                  outcome)
        return self.get(order.id)

    def park(self, amount: int, reference: str, note: str, operator: str, currency: str,
             source: str = "keypad") -> HeldOrder:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise HeldError(f"the amount must be a whole number of fen above zero, got {amount!r}")
        reference, note = reference.strip(), note.strip()
        if not reference or len(reference) > MAX_REFERENCE or not reference.isprintable():
            raise HeldError(f"the reference must be 1 to {MAX_REFERENCE} printable characters")
        if len(note) > MAX_NOTE or not note.isprintable():
            raise HeldError(f"the note must be at most {MAX_NOTE} printable characters")
        now = self.clock()
        with self.journal.transaction() as cur:
            cur.execute(
                "INSERT INTO held_order (reference, amount, currency, note, kind, state, operator, "
                "source, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (reference, amount, currency, note, "sale", HELD, operator, source, now, now))
            order_id = int(cur.lastrowid or 0)
            self.journal.audit_in(cur, operator, "held park",
                                  f"{_tag(order_id)} amount {amount} ref {reference} via {source}",
                                  HELD)
        return self.get(order_id)

    def mark_paying(self, order_id: int, operator: str) -> HeldOrder:
        order = self.get(order_id)
        return self._change(order, (HELD,), operator, "resume", "sale starts", PAYING, state=PAYING)

    def abandon_payment(self, order_id: int, operator: str) -> HeldOrder:
        """The resumed sale ended before any record was written (refused, cancelled, no card):
        the order is held again. Once a sale is written the journal moves the order instead."""
        order = self.get(order_id)
        if order.state != PAYING or order.txn_id is not None:
            return order
        return self._change(order, (PAYING,), operator, "resume", "no sale was recorded; held again",
                            HELD, state=HELD)

    def cancel_unpaid(self, order_id: int, reason: str, operator: str) -> HeldOrder:
        """A HELD order: nothing moved, it is simply cancelled."""
        self._check_reason(reason)
        order = self.get(order_id)
        return self._change(order, (HELD,), operator, "cancel",
                            f"reason {reason}; amount {order.amount} ref {order.reference}",
                            CANCELLED, state=CANCELLED, cancel_reason=reason)

    def begin_cancel(self, order_id: int, reason: str, operator: str, how: str) -> HeldOrder:
        """A PAID or PAYING order: CANCELLING until the void/refund or reversal is resolved."""
        self._check_reason(reason)
        order = self.get(order_id)
        return self._change(order, (PAID, PAYING), operator, "cancel",
                            f"reason {reason}; {how}", CANCELLING, state=CANCELLING,
                            cancel_reason=reason)

    def abandon_cancel(self, order_id: int, operator: str) -> HeldOrder:
        """The void/refund for a CANCELLING order ended before any record was written (refused,
        wrong password, cancelled): the order is as it was, paid."""
        order = self.get(order_id)
        if order.state != CANCELLING or order.cancel_txn_id is not None or order.txn_id is None:
            return order
        if self._txn(order.txn_id)[1] != "APPROVED":
            return order  # the sale's own outcome decides (the reversal path)
        return self._change(order, (CANCELLING,), operator, "cancel",
                            "no void or refund was recorded; the order stays paid", PAID,
                            state=PAID)

    def note_print(self, order_id: int, operator: str) -> None:
        with self.journal.transaction() as cur:
            self.journal.audit_in(cur, operator, "held trail", f"{_tag(order_id)} printed", "done")

    @staticmethod
    def _check_reason(reason: str) -> None:
        if reason not in REASONS:
            raise HeldError(f"the reason must be one of {', '.join(REASONS)}, got {reason!r}")

    # -- after a restart -------------------------------------------------------------------------

    def reconcile(self, stale: bool, operator: str = "system") -> list[HeldOrder]:
        """Put back orders whose operation was cut before any record was written.

        stale: no operation runs now (start-up, idle); otherwise nothing is touched, since the
        running one may be about to write its record. Orders with a record follow it already.
        """
        if not stale:
            return []
        changed: list[HeldOrder] = []
        for order in self.orders():
            before = order.state
            if order.state == PAYING:
                order = self.abandon_payment(order.id, operator)
            elif order.state == CANCELLING:
                order = self.abandon_cancel(order.id, operator)
            if order.state != before:
                changed.append(order)
        return changed
