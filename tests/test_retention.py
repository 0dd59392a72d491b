"""Retention of the hot journal's records by age (Journal.purge_settled, docs/states.md
"Retention"): records of settled batches older than N days, never an unresolved one, never one
of the open batch (issue 14: the purge had no test; hours instead of days survived). The
terminal's settlement now moves settled batches into the archive instead, where
`transactions.retention_days` counts (tests/test_archive_terminal.py).

The journal's clock is the one it is opened with, so a record's age is set to the minute; the
terminal test runs a real settlement against the acquirer simulator.
"""

from __future__ import annotations

from helpers import record_in_state
from test_archive import Clock, settle
from test_state_lists import PURGEABLE_STATES, STATES, draft

from firmware.engine.model import HostResult, RequestKey
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.messages import TxnKind
from firmware.journal.held import HeldOrders
from firmware.journal.requests import RequestBook
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.printing.layout import CopyKind

DAY = 86_400.0
T0 = 1_800_000_000.0  # when the records are written


def test_settled_records_go_after_n_days_never_sooner_never_unresolved_never_the_open_batch(
        tmp_path):
    """Seven days' retention. A settled batch holds a record in every state; the open batch
    holds an approved and a declined sale, all written at the same moment. At 7 days less a
    minute, and at exactly 7 days, nothing goes (not yet older than 7 days); at 7 days and a
    second the settled records in a final state go, and the unresolved ones (owed to the host or
    to a supervisor) and the whole open batch stay."""
    clock = Clock(T0)
    j = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32), clock=clock)
    try:
        settled = {s: record_in_state(j, draft(TxnKind.SALE, 100 + i), s)
                   for i, s in enumerate(STATES)}
        settle(j)
        open_batch = [record_in_state(j, draft(TxnKind.SALE, 900), TxnState.APPROVED),
                      record_in_state(j, draft(TxnKind.SALE, 901), TxnState.DECLINED)]
        everything = {r.id for r in (*settled.values(), *open_batch)}

        for age in (7 * DAY - 60, 7 * DAY):
            clock.now = T0 + age
            assert j.purge_settled(7) == 0, age
            assert {r.id for r in j.records()} == everything

        clock.now = T0 + 7 * DAY + 1  # a second past 7 days of 86 400 s: older, so it goes
        assert j.purge_settled(7) == len(PURGEABLE_STATES)
        kept = {r.id for r in j.records()}
        assert kept == ({settled[s].id for s in STATES if s not in PURGEABLE_STATES}
                        | {r.id for r in open_batch})
    finally:
        j.close()


def _approved(j: Journal, d, rrn: str):
    record = j.begin(d)
    return j.apply(record.id, TxnEvent.APPROVE, HostResult("00", rrn=rrn, auth_code="123456"))


def test_a_record_a_held_order_names_stays_and_the_purge_goes_on(tmp_path):
    """Held orders name their records: a PAID order its sale, a CANCELLED one its sale and the
    refund that cancelled it. Those records stay whatever their age (deleting them would break
    the order's reference, which the journal refuses: before this rule the purge failed, and
    every settlement after the retention period with it). A plain sale of the same batch goes;
    the receipt job and the ECR request key of a purged record go with it (no print job or
    request key is left naming a record that is gone)."""
    clock = Clock(T0)
    j = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32), clock=clock)
    orders = HeldOrders(j, clock=clock)
    try:
        paid = orders.mark_paying(orders.park(100, "table 1", "", "01", "156").id, "01")
        paid_sale = _approved(j, draft(TxnKind.SALE, 100, held_order_id=paid.id), "000000000001")
        gone = orders.mark_paying(orders.park(200, "table 2", "", "01", "156").id, "01")
        gone_sale = _approved(j, draft(TxnKind.SALE, 200, held_order_id=gone.id), "000000000002")
        orders.begin_cancel(gone.id, "customer_cancelled", "01", "refund")
        refund = _approved(j, draft(TxnKind.REFUND, 200, held_order_id=gone.id,
                                    orig_rrn="000000000002", orig_date="1122"), "000000000003")
        key = RequestKey("tcp", "till-7")
        assert RequestBook(j, clock=clock).claim(key, "sale", "amount 300", 600.0) is None
        plain = j.begin(draft(TxnKind.SALE, 300, request_key=key))
        plain = j.apply(plain.id, TxnEvent.APPROVE, HostResult("00", rrn="000000000004"),
                        receipt_copies=(CopyKind.MERCHANT,))
        assert orders.get(paid.id).state == "PAID" and orders.get(gone.id).state == "CANCELLED"
        settle(j)

        clock.now = T0 + 8 * DAY
        assert j.purge_settled(7) == 1
        assert {r.id for r in j.records()} == {paid_sale.id, gone_sale.id, refund.id}
        assert plain.id not in {r.id for r in j.records()}
        assert j.read("SELECT COUNT(*) FROM print_job WHERE txn_id IS NOT NULL "
                      "AND txn_id NOT IN (SELECT id FROM txn)") == [(0,)]
        assert j.read("SELECT COUNT(*) FROM print_job WHERE txn_id = ?", (plain.id,)) == [(0,)]
        assert j.read("SELECT txn_id FROM ecr_request WHERE key = 'till-7'") == [(None,)]
        assert j.integrity() == "ok"
    finally:
        j.close()
