"""The journal file's own rules, below the state table: how it is opened and closed, what one
transaction does with an error, which of the host's answers a state change keeps, what is counted,
and the settlement rows' audit lines (issue 14: each test names the fault it catches)."""

from __future__ import annotations

import os
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from diskkit import fill
from test_journal import draft

from firmware.engine.model import HostResult
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.messages import SideTotals, TxnKind
from firmware.journal.errors import JournalCorrupt, JournalError, JournalFull, JournalTooNew
from firmware.journal.held import HeldOrders
from firmware.journal.schema import SCHEMA_VERSION
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault

VAULT = CardVault(b"k" * 32)


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "j.db", VAULT)
    yield j
    j.close()


def handles_on(path: Path) -> list[str]:
    """This process's open file descriptors on `path` (or its -wal/-shm companions)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(path)):
            found.append(target)
    return found


# -- opening and closing ---------------------------------------------------------------------

def test_a_writer_holding_the_file_for_a_moment_is_waited_for_not_failed(tmp_path):
    """Another connection (a backup, the diagnostics) holds the write lock for 300 ms: the sale
    written meanwhile waits for it (busy timeout) instead of failing with "database is locked"."""
    j = Journal.open(tmp_path / "j.db", VAULT)
    other = sqlite3.connect(tmp_path / "j.db", isolation_level=None, check_same_thread=False)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        other.execute("BEGIN IMMEDIATE")
        locked.set()
        release.wait(5)
        other.execute("COMMIT")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(5)
        threading.Timer(0.3, release.set).start()
        record = j.begin(draft(amount=4200))
        assert release.is_set(), "the write went through while the other writer held the lock"
        assert j.get(record.id).amount == 4200
    finally:
        release.set()
        holder.join()
        other.close()
        j.close()


def test_a_journal_that_cannot_be_opened_keeps_no_handle_on_its_file(tmp_path):
    """A damaged file and a file of a newer schema are refused, and the refused open leaves the
    file closed (service mode may export or replace it; a leaked handle would keep it locked)."""
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"this is not an SQLite file, it is garbage " * 200)
    with pytest.raises(JournalCorrupt) as refused:
        Journal.open(damaged, VAULT)
    assert handles_on(damaged) == [], refused.value

    newer = tmp_path / "newer.db"
    Journal.open(newer, VAULT).close()
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(JournalTooNew) as too_new:
        Journal.open(newer, VAULT)
    assert handles_on(newer) == [], too_new.value


def test_a_closed_journal_holds_the_file_no_more(tmp_path):
    j = Journal.open(tmp_path / "j.db", VAULT)
    j.begin(draft())
    assert handles_on(tmp_path / "j.db")
    j.close()
    assert handles_on(tmp_path / "j.db") == []
    with pytest.raises(sqlite3.ProgrammingError):
        j.records()


# -- one transaction --------------------------------------------------------------------------

def test_an_sql_mistake_is_raised_as_itself_and_undone_not_called_a_full_or_damaged_disk(journal):
    """Only a full disk becomes JournalFull and only a malformed file JournalCorrupt: a mistake in
    a companion's SQL (a table that does not exist) is raised as the SQL error it is, and the
    transaction's earlier writes are rolled back."""
    with (pytest.raises(sqlite3.OperationalError, match="no such table") as raised,
          journal.transaction() as cur):
        journal.audit_in(cur, "01", "test", "written before the mistake", "done")
        cur.execute("UPDATE no_such_table SET x = 1")
    assert type(raised.value) is sqlite3.OperationalError
    assert [line[3] for line in journal.audit_lines()] == []


def test_an_audit_line_written_in_a_companions_transaction_commits_with_it(journal):
    with journal.transaction() as cur:
        journal.audit_in(cur, "07", "held park", "order 1: amount 100", "HELD")
    assert [line[1:] for line in journal.audit_lines()] == [
        ("07", "held park", "order 1: amount 100", "HELD")]


# -- what a state change keeps ---------------------------------------------------------------

def test_a_decline_keeps_the_hosts_answer(journal):
    record = journal.begin(draft())
    declined = journal.apply(record.id, TxnEvent.DECLINE,
                             HostResult("51", rrn="000000000051", card_org="CUP",
                                        issuer_id="01020000", acquirer_id="48020000"))
    assert declined.state is TxnState.DECLINED
    assert (declined.response_code, declined.rrn, declined.card_org, declined.issuer_id,
            declined.acquirer_id) == ("51", "000000000051", "CUP", "01020000", "48020000")


def test_an_acknowledged_advice_keeps_the_hosts_answer_and_counts_the_attempt(journal):
    record = journal.begin(draft(TxnKind.REFUND, advice=True))
    failed = journal.apply(record.id, TxnEvent.ADVICE_FAILED)
    assert (failed.state, failed.advice_attempts, failed.rrn) == (TxnState.ADVICE_DUE, 1, None)
    acked = journal.apply(record.id, TxnEvent.ADVICE_ACKED,
                          HostResult("00", rrn="000000000777", auth_code="654321"))
    assert (acked.state, acked.response_code, acked.rrn, acked.auth_code) == (
        TxnState.APPROVED, "00", "000000000777", "654321")
    assert acked.advice_attempts == 2, "the attempt that was acknowledged counts too"


def test_every_reversal_attempt_counts_the_acknowledged_one_too(journal):
    record = journal.begin(draft())
    due = journal.apply(record.id, TxnEvent.LOSE_REPLY, reversal_reason="98")
    failed = journal.apply(record.id, TxnEvent.REVERSAL_FAILED)
    assert (failed.state, failed.reversal_attempts) == (TxnState.REVERSAL_DUE, 1)
    acked = journal.apply(record.id, TxnEvent.REVERSAL_ACKED)
    assert (acked.state, acked.reversal_attempts) == (TxnState.REVERSED, 2)
    assert due.reversal_reason == "98"


def test_a_reversal_reason_is_written_only_when_one_is_given(journal):
    """The reason set when the reply was lost (98) stays through the failed attempts that give
    none; it is what every later 0400 carries in field 39."""
    record = journal.begin(draft())
    journal.apply(record.id, TxnEvent.LOSE_REPLY, reversal_reason="98")
    after = journal.apply(record.id, TxnEvent.REVERSAL_FAILED)
    assert after.reversal_reason == "98"


def test_a_problem_is_kept_to_its_first_500_characters(journal):
    record = journal.begin(draft(TxnKind.REFUND, advice=True))
    words = "".join(f"{i % 10}" for i in range(700))
    set_aside = journal.apply(record.id, TxnEvent.QUARANTINE, problem=words)
    assert set_aside.problem == words[:500]


def test_an_approved_void_marks_the_original_voided_in_the_audit_and_its_held_order_follows(
        journal):
    """The sale paid a held order. Its void (made from the void menu, not the order's) is
    approved: the original becomes VOIDED with its own audit line naming both traces, and the
    order follows its sale to CANCELLED in the same commit."""
    orders = HeldOrders(journal)
    order = orders.mark_paying(orders.park(1000, "table 5", "", "01", "156").id, "01")
    sale = journal.begin(draft(held_order_id=order.id))
    sale = journal.apply(sale.id, TxnEvent.APPROVE, HostResult("00", rrn="000000000001"))
    assert orders.get(order.id).state == "PAID", "the order follows its approved sale"
    void = journal.begin(draft(TxnKind.VOID, orig_id=sale.id))
    journal.apply(void.id, TxnEvent.APPROVE, HostResult("00", rrn="000000000002"),
                  void_of=sale.id)
    assert journal.get(sale.id).state is TxnState.VOIDED
    assert ("01", "voided", f"trace {sale.stan} by void trace {void.stan}", "VOIDED") in [
        line[1:] for line in journal.audit_lines()]
    assert orders.get(order.id).state == "CANCELLED"


# -- reads --------------------------------------------------------------------------------------

def test_decrypting_the_card_of_a_record_that_does_not_exist_is_an_error_in_words(journal):
    with pytest.raises(JournalError, match="record 99 holds no card number"):
        journal.decrypt_pan(99)
    record = journal.begin(draft())
    assert journal.decrypt_pan(record.id) == "6225880000000001"


def test_a_side_without_records_totals_zero(journal):
    """Only foreign cards sold: the domestic side is all zero (and an empty batch both sides)."""
    assert journal.totals() == (SideTotals(0, 0, 0, 0), SideTotals(0, 0, 0, 0))
    record = journal.begin(replace(draft(amount=700), foreign=True))
    journal.apply(record.id, TxnEvent.APPROVE, HostResult("00", rrn="000000000001"))
    assert journal.totals() == (SideTotals(0, 0, 0, 0), SideTotals(700, 1, 0, 0))


# -- settlement rows ----------------------------------------------------------------------------

@pytest.mark.parametrize(("dom", "fgn", "state"), [
    ("1", "1", "ENDING"), ("1", "2", "UPLOADING"), ("2", "1", "UPLOADING"),
    ("2", "2", "UPLOADING"), ("1", "3", "UPLOADING")])
def test_only_a_reply_balanced_on_both_sides_goes_straight_to_the_end(journal, dom, fgn, state):
    sid = journal.begin_settlement(journal.current_batch(), "000009", SideTotals(0, 0, 0, 0),
                                   SideTotals(0, 0, 0, 0), operator="02")
    journal.record_settlement_reply(sid, dom, fgn)
    assert journal.get_settlement(sid).state == state


def test_a_settlement_request_and_its_abandonment_are_audited(journal):
    batch = journal.current_batch()
    sid = journal.begin_settlement(batch, "000009", SideTotals(0, 0, 0, 0),
                                   SideTotals(0, 0, 0, 0), operator="02")
    journal.abandon_settlement(sid, "no reply to the settlement request")
    assert [line[1:] for line in reversed(journal.audit_lines())] == [
        ("02", "settlement", f"batch {batch} requested", "REQUESTED"),
        ("system", "settlement abandoned", "no reply to the settlement request", "ABANDONED")]
    assert journal.get_settlement(sid).state == "ABANDONED"


@pytest.mark.parametrize("stage", ["UPLOADING", "ENDING"])
def test_a_settlement_finishes_from_uploading_or_ending_and_from_nothing_else(journal, stage):
    batch = journal.current_batch()
    sid = journal.begin_settlement(batch, "000009", SideTotals(0, 0, 0, 0),
                                   SideTotals(0, 0, 0, 0), operator="01")
    with pytest.raises(JournalError, match="cannot finish from"):
        journal.finish_settlement(sid, report_copies=())  # still REQUESTED
    journal.record_settlement_reply(sid, "1", "1" if stage == "ENDING" else "2")
    assert journal.get_settlement(sid).state == stage
    journal.finish_settlement(sid, report_copies=())
    assert journal.get_settlement(sid).state == "DONE"
    assert journal.audit_lines(1)[0][1:] == ("system", "settlement done", f"batch {batch} closed",
                                             "DONE")
    with pytest.raises(JournalError, match="cannot finish from None"):
        journal.finish_settlement(sid + 1, report_copies=())


# -- the print queue's lists ----------------------------------------------------------------------

def _job(journal, title: str):
    from firmware.printing.layout import CopyKind
    from firmware.printing.queue import JobKind
    return journal.enqueue_print(JobKind.RECEIPT, (CopyKind.MERCHANT,), title=title)


def test_the_open_jobs_count_queued_printing_and_paused_ones(journal):
    from firmware.printing.queue import PrintState
    queued, printing, paused, done = (_job(journal, t) for t in ("q", "p", "z", "d"))
    journal.update_print_job(printing.id, PrintState.PRINTING)
    journal.update_print_job(paused.id, PrintState.PRINTING)
    journal.update_print_job(paused.id, PrintState.PAUSED)
    journal.update_print_job(done.id, PrintState.PRINTING)
    journal.update_print_job(done.id, PrintState.DONE, copies_done=1)
    count, waiting, oldest = journal.open_print_jobs()
    assert (count, waiting, oldest.id) == (3, [], queued.id)
    assert [j.id for j in journal.print_jobs(open_only=True)] == [queued.id, printing.id, paused.id]


def test_the_job_list_is_the_50_newest_oldest_first(journal):
    """docs/ecr.md, print_jobs: the 50 newest jobs (an ECR reply stays a bounded size)."""
    jobs = [_job(journal, f"job {i}").id for i in range(52)]
    assert [j.id for j in journal.print_jobs()] == jobs[2:]
    assert [j.id for j in journal.print_jobs(open_only=False, limit=3)] == jobs[-3:]


def test_a_journal_that_cannot_be_created_on_a_full_disk_is_reported_full(small_disk):
    """A new terminal's first start on a full card: "storage is full", not "damaged" (service
    mode would then offer to replace a file that was never written)."""
    fill(small_disk)
    with pytest.raises(JournalFull, match="storage is full"):
        Journal.open(small_disk / "journal.db", VAULT)
    assert handles_on(small_disk / "journal.db") == []


@pytest.mark.parametrize(("dom", "fgn"), [("1", "1"), ("2", "1")])
def test_the_upload_ends_trace_is_kept_whether_the_batch_was_uploaded_or_balanced(journal, dom,
                                                                                   fgn):
    """A balanced reply goes straight to ENDING, an unbalanced one through UPLOADING: either
    way the trace of the upload end is kept before it is sent, so a resend after a power loss
    repeats it (docs/dialect.md, settlement)."""
    sid = journal.begin_settlement(journal.current_batch(), "000009", SideTotals(0, 0, 0, 0),
                                   SideTotals(0, 0, 0, 0), operator="01")
    journal.record_settlement_reply(sid, dom, fgn)
    journal.record_end_stan(sid, "000123")
    row = journal.get_settlement(sid)
    assert (row.state, row.end_stan) == ("ENDING", "000123")
