"""Which journal states count where: one table over every state, checked against the journal's
own SQL (issue 14). Narrowing or widening any state list (what is unresolved, what counts in
the totals and the upload, what counts against an original, what may be voided, what
retention may purge) must fail here.

The table is written out by hand from docs/states.md and docs/dialect.md on purpose: it is
not read from firmware/engine/states.py, so a change there has to change it too. Each record
is walked to its state through the journal's legal transitions (helpers.record_in_state).
"""

from __future__ import annotations

import pytest
from helpers import PATH_TO, open_journal, record_in_state

from firmware.engine.model import PendingDraft
from firmware.engine.states import LIVE_FOLLOW_UP, UNRESOLVED, TxnState
from firmware.host.messages import SideTotals, TxnKind
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault

S = TxnState
PAN = "6225880000000001"

# state: (unresolved: settlement waits, counted: totals and upload, live: counts against its
#         original, voidable: an original in it may be voided, purgeable: retention may drop it
#         once settled and old)
TABLE: dict[TxnState, tuple[bool, bool, bool, bool, bool]] = {
    S.PENDING:           (True,  False, True,  False, False),
    S.APPROVED:          (False, True,  True,  True,  True),
    S.DECLINED:          (False, False, False, False, True),
    S.REVERSAL_DUE:      (True,  False, True,  False, False),
    S.REVERSED:          (False, False, False, False, True),
    S.RESOLVED_MANUALLY: (False, False, False, False, True),
    S.VOIDED:            (False, True,  False, False, True),
    S.ADVICE_DUE:        (True,  False, True,  False, False),
    S.FAILED:            (False, False, False, False, True),
    S.QUARANTINED:       (True,  False, True,  False, False),
}
UNRESOLVED_STATES = {s for s, row in TABLE.items() if row[0]}
COUNTED_STATES = {s for s, row in TABLE.items() if row[1]}
LIVE_STATES = {s for s, row in TABLE.items() if row[2]}
VOIDABLE_STATES = {s for s, row in TABLE.items() if row[3]}
PURGEABLE_STATES = {s for s, row in TABLE.items() if row[4]}
STATES = list(TxnState)


def draft(kind: TxnKind, amount: int, **kw: object) -> PendingDraft:
    return PendingDraft(kind=kind, amount=amount, currency="156", pan=PAN,
                        pan_masked=PAN[:6] + "******" + PAN[-4:], foreign=False,
                        entry_mode="swipe", pin_entered=False, operator="01",
                        local_date="1122", local_time="101010", **kw)  # type: ignore[arg-type]


def amount_of(state: TxnState) -> int:
    """A power of two per state, so a sum of amounts names exactly the states it counted."""
    return 1 << STATES.index(state)


def total(states: set[TxnState]) -> int:
    return sum(amount_of(s) for s in states)


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32))
    yield j
    j.close()


def test_the_table_covers_every_state_and_the_engine_lists_match_it():
    """A new state must be placed in every list by hand; the engine's two frozensets say the
    same as the table (settlement waits for exactly these; a follow-up counts in exactly these)."""
    assert set(TABLE) == set(TxnState) == {TxnState(s) for s in PATH_TO}
    assert set(UNRESOLVED) == UNRESOLVED_STATES
    assert set(LIVE_FOLLOW_UP) == LIVE_STATES


def test_unresolved_totals_upload_and_backlog_lists_over_every_state(journal):
    """One sale in each state. Settlement waits for exactly the unresolved ones; the batch
    totals and the batch upload carry exactly the approved and voided ones (a voided sale stays
    in the gross debit total); each backlog list holds exactly its own state; start-up recovery
    turns exactly PENDING into REVERSAL_DUE."""
    sales = {s: record_in_state(journal, draft(TxnKind.SALE, amount_of(s)), s) for s in STATES}

    counts = journal.unresolved_counts()
    assert counts == {s.value: int(s in UNRESOLVED_STATES) for s in
                      (S.PENDING, S.REVERSAL_DUE, S.ADVICE_DUE, S.QUARANTINED)}
    assert {s for s in UNRESOLVED_STATES if counts[s.value]} == UNRESOLVED_STATES

    domestic, foreign = journal.totals()
    assert domestic == SideTotals(total(COUNTED_STATES), len(COUNTED_STATES), 0, 0)
    assert foreign == SideTotals(0, 0, 0, 0)
    assert journal.totals_by_kind() == {
        ("domestic", "sale"): (len(COUNTED_STATES), total(COUNTED_STATES))}

    sid = journal.begin_settlement(journal.current_batch(), journal.allocate_stan(), domestic,
                                   foreign, operator="01")
    journal.record_settlement_reply(sid, "2", "1")  # domestic totals disagree: upload them
    uploaded = {record.id for record, _ in journal.upload_items(sid, 50)}
    assert uploaded == {sales[s].id for s in COUNTED_STATES}

    assert [r.id for r in journal.reversals_due()] == [sales[S.REVERSAL_DUE].id]
    assert [r.id for r in journal.advices_due()] == [sales[S.ADVICE_DUE].id]
    assert [r.id for r in journal.quarantined()] == [sales[S.QUARANTINED].id]

    report = journal.recover()
    assert (report.to_reverse, report.enquiries_failed) == (1, 0)
    assert journal.get(sales[S.PENDING].id).state is S.REVERSAL_DUE
    assert all(journal.get(sales[s].id).state is s for s in STATES if s is not S.PENDING)


def test_refunds_in_every_state_count_against_their_original_and_in_credit_totals(journal):
    """One approved sale and a refund of it in each state. What counts against the sale (its
    refundable amount, its void) is exactly the live refunds: pending, stored (sent or not),
    approved, owed a reversal or set aside; never declined, reversed, failed, voided or closed
    by hand. Credit totals and the batch upload carry exactly the approved and voided ones."""
    sale = record_in_state(journal, draft(TxnKind.SALE, 100_000), S.APPROVED)
    refunds = {s: record_in_state(journal, draft(TxnKind.REFUND, amount_of(s), orig_id=sale.id,
                                                 orig_rrn=sale.rrn, orig_date="1122"), s)
               for s in STATES}
    found = journal.follow_ups(sale)
    assert {r.id for r in found} == {refunds[s].id for s in LIVE_STATES}
    assert sum(r.amount for r in found) == total(LIVE_STATES)
    domestic, foreign = journal.totals()
    assert domestic == SideTotals(100_000, 1, total(COUNTED_STATES), len(COUNTED_STATES))
    sid = journal.begin_settlement(journal.current_batch(), journal.allocate_stan(), domestic,
                                   foreign, operator="01")
    journal.record_settlement_reply(sid, "2", "1")
    uploaded = {record.id for record, _ in journal.upload_items(sid, 50)}
    assert uploaded == {sale.id} | {refunds[s].id for s in COUNTED_STATES}


def test_only_an_approved_sale_may_be_voided(tmp_path):
    """The void rule over every state of the original, through the terminal's own lookup (the
    journal's record, then validation.check_original): an approved sale may be voided; a voided,
    declined, reversed, unresolved or failed one never."""
    import asyncio

    from helpers import provision

    from firmware.app.core.terminal import AppConfig
    from firmware.app.terminal import Terminal
    from firmware.engine.model import OriginalRef

    data_dir = provision(tmp_path / "terminal", sim_port=9)  # never connected: no network here
    j = open_journal(data_dir)
    try:
        sales = {s: record_in_state(j, draft(TxnKind.SALE, amount_of(s)), s) for s in STATES}
    finally:
        j.close()

    async def go() -> dict[TxnState, str | None]:
        t = Terminal(AppConfig(data_dir=data_dir))
        await t.open()
        try:
            verdicts = {}
            for state, sale in sales.items():
                _, refusal = t.check_follow_up(TxnKind.VOID, OriginalRef(invoice=sale.invoice))
                verdicts[state] = None if refusal is None else refusal.key
            return verdicts
        finally:
            await t.close()

    verdicts = asyncio.run(go())
    assert {s for s, key in verdicts.items() if key is None} == VOIDABLE_STATES, verdicts
    assert verdicts[S.VOIDED] == "original_already_voided"


# Which side of the batch totals each kind counts on (docs/dialect.md, settlement totals):
# sales and completions are debits; voids, completion voids and refunds are credits;
# pre-authorisations, their voids and balance enquiries move no money and count nowhere.
DEBIT = {TxnKind.SALE, TxnKind.COMPLETION}
CREDIT = {TxnKind.VOID, TxnKind.COMPLETION_VOID, TxnKind.REFUND}
KINDS = list(TxnKind)


def test_each_kind_counts_on_its_own_side_of_the_totals_and_the_upload(journal):
    """One approved record of every kind, each with its own power-of-two amount: the debit
    total is exactly the sale and the completion, the credit total exactly the void, the
    completion void and the refund; a pre-auth, its void and a balance enquiry count in neither,
    and the batch upload carries exactly the counted ones."""
    records = {k: record_in_state(journal, draft(k, 1 << KINDS.index(k)), S.APPROVED)
               for k in KINDS}
    domestic, foreign = journal.totals()
    assert domestic == SideTotals(sum(1 << KINDS.index(k) for k in DEBIT), len(DEBIT),
                                  sum(1 << KINDS.index(k) for k in CREDIT), len(CREDIT))
    assert foreign == SideTotals(0, 0, 0, 0)
    sid = journal.begin_settlement(journal.current_batch(), journal.allocate_stan(), domestic,
                                   foreign, operator="01")
    journal.record_settlement_reply(sid, "2", "1")
    uploaded = {record.id for record, _ in journal.upload_items(sid, 50)}
    assert uploaded == {records[k].id for k in DEBIT | CREDIT}
