"""Held orders follow their money: the one rule, run by the journal in the same SQL transaction
as every change of a transaction's state, whoever made the change (a held-order request, a
direct void or refund, the backlog before a sale or inside a settlement, start-up recovery).

An order is tied to its sale by held_order.txn_id and to the void or refund cancelling it by
held_order.cancel_txn_id; both links are written in the commit that writes the record.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from firmware.engine.model import TxnRecord
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind

HELD, PAYING, PAID, CANCELLING, CANCELLED = "HELD", "PAYING", "PAID", "CANCELLING", "CANCELLED"
OPEN_STATES = (HELD, PAYING, PAID, CANCELLING)

# What a record's state says about the money it was meant to move.
_NEVER_MOVED = frozenset({TxnState.DECLINED, TxnState.REVERSED, TxnState.RESOLVED_MANUALLY,
                          TxnState.FAILED})

# (cursor, operator, action, detail, outcome): the journal's audit writer.
AuditWriter = Callable[[sqlite3.Cursor, str, str, str, str], None]


def tag(order_id: int) -> str:
    """How an order is named in the audit log (its trail is read back by this prefix)."""
    return f"order {order_id}:"


def _move(cur: sqlite3.Cursor, audit: AuditWriter, now: float, order_id: int, action: str,
          detail: str, state: str, **fields: object) -> None:
    sets = "".join(f", {name} = ?" for name in fields)
    cur.execute(f"UPDATE held_order SET state = ?{sets}, updated_at = ? WHERE id = ?",
                (state, *fields.values(), now, order_id))
    audit(cur, "system", f"held {action}", f"{tag(order_id)} {detail}", state)


def follow(cur: sqlite3.Cursor, record: TxnRecord, audit: AuditWriter, now: float) -> None:
    """Move every order tied to `record` to what the record's new state means."""
    state, rid = record.state, record.id
    what = f"{record.kind.value} voucher {record.invoice}"  # the number the merchant knows
    for order_id, order_state in cur.execute(
            "SELECT id, state FROM held_order WHERE txn_id = ? AND state IN (?, ?, ?)",
            (rid, PAYING, PAID, CANCELLING)).fetchall():
        # `record` is the sale that pays (or paid) this order.
        if state is TxnState.APPROVED and order_state == PAYING:
            _move(cur, audit, now, order_id, "paid", f"{what} approved", PAID)
        elif state is TxnState.VOIDED and order_state in (PAID, CANCELLING):
            _move(cur, audit, now, order_id, "cancelled", f"{what} voided", CANCELLED)
        elif state in _NEVER_MOVED and order_state == PAYING:
            _move(cur, audit, now, order_id, "resume",
                  f"{what} {state.value.lower()}: no money moved; held again", HELD, txn_id=None)
        elif state in _NEVER_MOVED and order_state == CANCELLING:
            _move(cur, audit, now, order_id, "cancelled",
                  f"{what} {state.value.lower()}: no money moved", CANCELLED)
    for order_id, in cur.execute(
            "SELECT id FROM held_order WHERE cancel_txn_id = ? AND state = ?",
            (rid, CANCELLING)).fetchall():
        # `record` is the void or refund cancelling this order.
        if state is TxnState.APPROVED:
            _move(cur, audit, now, order_id, "cancelled", f"{what} approved", CANCELLED)
        elif state in _NEVER_MOVED:
            _move(cur, audit, now, order_id, "cancel",
                  f"{what} {state.value.lower()}: not cancelled, the order is still paid", PAID,
                  cancel_txn_id=None)
    if record.kind is TxnKind.REFUND and state is TxnState.APPROVED and record.orig_id is not None:
        _follow_direct_refund(cur, record, audit, now)


def _follow_direct_refund(cur: sqlite3.Cursor, record: TxnRecord, audit: AuditWriter,
                          now: float) -> None:
    """A refund made outside the held-order menu against an order's sale: refunded in full,
    the order is cancelled (a partial refund leaves it paid)."""
    row = cur.execute("SELECT amount FROM txn WHERE id = ?", (record.orig_id,)).fetchone()
    if row is None:
        return
    refunded = cur.execute(
        "SELECT COALESCE(SUM(amount), 0) FROM txn WHERE kind = 'refund' AND orig_id = ? "
        "AND state = 'APPROVED'", (record.orig_id,)).fetchone()[0]
    if refunded < row[0]:
        return
    for order_id, in cur.execute(
            "SELECT id FROM held_order WHERE txn_id = ? AND state = ?",
            (record.orig_id, PAID)).fetchall():
        _move(cur, audit, now, order_id, "cancelled",
              f"sale refunded in full (refund voucher {record.invoice})", CANCELLED)


def link(cur: sqlite3.Cursor, record: TxnRecord, order_id: int, audit: AuditWriter,
         now: float) -> None:
    """Tie a just-written record to its order, in the record's own commit: a sale to the order it
    pays (PAYING), a void or refund to the order it cancels (CANCELLING)."""
    if record.kind is TxnKind.SALE:
        column, expect = "txn_id", PAYING
    elif record.kind in (TxnKind.VOID, TxnKind.REFUND):
        column, expect = "cancel_txn_id", CANCELLING
    else:
        raise ValueError(f"a {record.kind.value} cannot belong to a held order")
    changed = cur.execute(
        f"UPDATE held_order SET {column} = ?, updated_at = ? WHERE id = ? AND state = ?",
        (record.id, now, order_id, expect)).rowcount
    if not changed:
        raise ValueError(f"held order {order_id} is not {expect}: the {record.kind.value} "
                         "cannot be tied to it")
    audit(cur, "system", "held link", f"{tag(order_id)} {record.kind.value} voucher {record.invoice} "
          f"written ({record.state.value})", expect)
