"""Retention (docs/states.md, "Retention"): after a settlement, records of settled batches older
than `transactions.retention_days` DAYS are purged (Journal.purge_settled), never an unresolved
one, never one of the open batch (issue 14: the purge had no test; hours instead of days
survived).

The journal's clock is the one it is opened with, so a record's age is set to the minute; the
terminal test runs a real settlement against the acquirer simulator.
"""

from __future__ import annotations

import time

from helpers import PASSWORD, provision, record_in_state, run, sale, terminal
from test_state_lists import PURGEABLE_STATES, STATES, draft

from firmware.engine.states import TxnState
from firmware.host.messages import SideTotals, TxnKind
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault

DAY = 86_400.0
T0 = 1_800_000_000.0  # when the records are written


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _settle_open_batch(j: Journal) -> None:
    """Close the open batch as a settlement the host agreed with does (no report printed)."""
    sid = j.begin_settlement(j.current_batch(), j.allocate_stan(), SideTotals(0, 0, 0, 0),
                             SideTotals(0, 0, 0, 0))
    j.record_settlement_reply(sid, "1", "1")
    j.finish_settlement(sid, report_copies=())


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
        _settle_open_batch(j)
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


def test_a_settlement_purges_with_the_retention_days_setting(tmp_path, sim):
    """retention_days = 2. An earlier settled batch holds a sale written 3 days ago and one
    written 1 day ago. A settlement run by the terminal (real host) ends by purging: the 3-day-old
    sale goes, the 1-day-old one and the batch just settled stay."""
    data_dir = provision(tmp_path / "terminal", sim.port, retention_days=2)
    now = Clock(0.0)
    real_now = time.time()
    j = Journal.open(data_dir / "journal.db",
                     CardVault.from_key_file(data_dir / "keys" / "card.key"), clock=now)
    try:
        assert j.adopt_batch("000777")  # an earlier batch, apart from the host's current one
        now.now = real_now - 3 * DAY
        old = record_in_state(j, draft(TxnKind.SALE, 700), TxnState.APPROVED)
        now.now = real_now - 1 * DAY
        recent = record_in_state(j, draft(TxnKind.SALE, 800), TxnState.APPROVED)
        _settle_open_batch(j)
        assert j.adopt_batch("000001")  # the host's batch (sign-on would say the same)
    finally:
        j.close()

    async def go():
        t = await terminal(data_dir)
        try:
            sold = await sale(t, 500)
            settled = await t.settle(PASSWORD)
            return sold, settled, {r.id for r in t.journal.records()}
        finally:
            await t.close()

    sold, settled, kept = run(go())
    assert sold.status == "approved" and settled.status == "settled", (sold, settled)
    assert kept == {recent.id, sold.record.id}
    assert old.id not in kept
