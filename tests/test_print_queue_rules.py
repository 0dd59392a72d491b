"""The print queue in the journal: states, CANCEL by state, start-up after a power loss,
and the receipt queued in the same commit as the outcome (real SQLite files)."""

from __future__ import annotations

import sqlite3

import pytest

from firmware.engine.model import HostResult, PendingDraft
from firmware.engine.states import IllegalTransition, TxnEvent
from firmware.host.messages import TxnKind
from firmware.journal.errors import JournalError
from firmware.journal.held import HeldOrders
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.printing.queue import (
    CancelAction,
    CopyKind,
    JobKind,
    PrintState,
    PrintTransitionError,
    RecoveryAction,
    recovery_action,
)

PAN = "6225880000000001"
BOTH = (CopyKind.MERCHANT, CopyKind.CARDHOLDER)


def draft(kind: TxnKind = TxnKind.SALE, amount: int = 1000) -> PendingDraft:
    return PendingDraft(kind=kind, amount=amount, currency="156", pan=PAN,
                        pan_masked=PAN[:6] + "******" + PAN[-4:], foreign=False, entry_mode="swipe",
                        pin_entered=False, operator="01", local_date="1122", local_time="101010")


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32))
    yield j
    j.close()


def approved_with_receipt(j: Journal) -> int:
    rec = j.begin(draft())
    j.apply(rec.id, TxnEvent.APPROVE, HostResult("00", rrn="000000000001", auth_code="123456"),
            receipt_copies=BOTH)
    return rec.id


def test_the_receipt_is_queued_in_the_same_commit_as_the_approval(journal, tmp_path):
    rid = approved_with_receipt(journal)
    other = sqlite3.connect(tmp_path / "j.db")  # what a restarted process would read
    rows = other.execute("SELECT kind, state, txn_id, copies FROM print_job").fetchall()
    state = other.execute("SELECT state FROM txn WHERE id = ?", (rid,)).fetchone()[0]
    other.close()
    assert state == "APPROVED"
    assert rows == [("receipt", "QUEUED", rid, "merchant,cardholder")]


def test_a_failed_outcome_write_queues_no_receipt(journal):
    rec = journal.begin(draft())
    journal.apply(rec.id, TxnEvent.LOSE_REPLY, reversal_reason="98")
    with pytest.raises(IllegalTransition):  # a late approval is refused as a whole...
        journal.apply(rec.id, TxnEvent.APPROVE, HostResult("00"), receipt_copies=BOTH)
    assert journal.print_jobs() == []  # ...receipt included


def test_cancel_of_a_queued_job_removes_it_and_records_cancelled(journal):
    rid = approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    assert journal.request_print_cancel(job.id, "01") is CancelAction.DROP
    job = journal.print_job(job.id)
    assert job.state is PrintState.CANCELLED and job.txn_id == rid
    assert journal.next_print_job() is None
    assert any(line[2] == "print cancel" for line in journal.audit_lines())


def test_cancel_while_printing_waits_for_the_copy_then_queues_a_void_slip(journal):
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    journal.update_print_job(job.id, PrintState.PRINTING, printed_any=True)
    assert journal.request_print_cancel(job.id, "01") is CancelAction.AFTER_CURRENT_COPY
    assert journal.print_job(job.id).state is PrintState.PRINTING  # the copy goes on
    journal.update_print_job(job.id, copies_done=1, printed_any=False)
    slip_id = journal.finish_print_cancel(job.id)
    slip = journal.print_job(slip_id)
    assert journal.print_job(job.id).state is PrintState.CANCELLED
    assert slip.kind is JobKind.VOID_SLIP and slip.voids_job == job.id
    assert slip.copies == (CopyKind.MERCHANT,)  # names the copy that is on paper


def test_cancel_while_paused_depends_on_whether_anything_printed(journal):
    approved_with_receipt(journal)
    approved_with_receipt(journal)
    first, second = journal.print_jobs()
    journal.update_print_job(first.id, PrintState.PRINTING)
    journal.update_print_job(first.id, PrintState.PAUSED, printed_any=False, reason="printer_paper_out")
    assert journal.request_print_cancel(first.id, "01") is CancelAction.DROP  # "else as QUEUED"
    journal.update_print_job(second.id, PrintState.PRINTING)
    journal.update_print_job(second.id, PrintState.PAUSED, printed_any=True)
    assert journal.request_print_cancel(second.id, "01") is CancelAction.AFTER_CURRENT_COPY
    assert journal.print_job(second.id).cancel_requested


def test_finished_jobs_cannot_move_again(journal):
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    journal.update_print_job(job.id, PrintState.PRINTING)
    journal.update_print_job(job.id, PrintState.DONE)
    with pytest.raises(PrintTransitionError):
        journal.update_print_job(job.id, PrintState.PRINTING)
    assert journal.request_print_cancel(job.id, "01") is CancelAction.NOTHING


def test_power_loss_requeues_the_copy_under_way_as_reprint_awaiting_confirmation(journal, tmp_path):
    approved_with_receipt(journal)
    approved_with_receipt(journal)
    printing, queued = journal.print_jobs()
    journal.update_print_job(printing.id, PrintState.PRINTING, printed_any=True)
    journal.close()
    j = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32))  # the restart
    report = j.recover_prints()
    assert (report.requeued_for_confirm, report.still_queued) == (1, 1)
    cut = j.print_job(printing.id)
    assert cut.state is PrintState.QUEUED and cut.needs_confirm and cut.marked_reprint
    assert j.print_job(queued.id).state is PrintState.QUEUED and not j.print_job(queued.id).needs_confirm
    assert j.next_print_job().id == queued.id  # the cut one waits for the operator
    j.confirm_print(cut.id, "01")
    assert not j.print_job(cut.id).needs_confirm
    j.close()


def test_declining_the_reprint_after_power_loss_voids_what_is_on_paper(journal):
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    journal.update_print_job(job.id, PrintState.PRINTING, printed_any=True)
    journal.recover_prints()
    assert journal.request_print_cancel(job.id, "01") is CancelAction.DROP_WITH_VOID_SLIP
    kinds = [(j.kind, j.state) for j in journal.print_jobs(open_only=False)]
    assert (JobKind.VOID_SLIP, PrintState.QUEUED) in kinds


@pytest.mark.parametrize(("state", "printed", "cancel", "done", "expected"), [
    (PrintState.QUEUED, False, False, 0, RecoveryAction.KEEP),
    (PrintState.PRINTING, True, False, 0, RecoveryAction.REQUEUE_FOR_CONFIRM),
    (PrintState.PAUSED, True, False, 1, RecoveryAction.REQUEUE_FOR_CONFIRM),
    (PrintState.PAUSED, False, False, 0, RecoveryAction.REQUEUE_FOR_CONFIRM),
    (PrintState.PRINTING, True, True, 0, RecoveryAction.CANCEL_WITH_VOID_SLIP),
    (PrintState.PRINTING, False, True, 1, RecoveryAction.CANCEL_WITH_VOID_SLIP),
    (PrintState.DONE, False, False, 2, RecoveryAction.NONE),
])
def test_recovery_rules(state, printed, cancel, done, expected):
    from firmware.printing.queue import PrintJob

    job = PrintJob(id=1, kind=JobKind.RECEIPT, state=state, copies=BOTH, copies_done=done,
                   printed_any=printed, cancel_requested=cancel)
    assert recovery_action(job) is expected


def test_a_paused_copy_that_never_started_is_not_marked_reprint_after_power_loss(journal):
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    journal.update_print_job(job.id, PrintState.PRINTING)
    journal.update_print_job(job.id, PrintState.PAUSED, printed_any=False)
    journal.recover_prints()
    job = journal.print_job(job.id)
    assert job.needs_confirm and not job.marked_reprint


def test_reprint_last_finds_the_newest_receipt(journal):
    first = approved_with_receipt(journal)
    second = approved_with_receipt(journal)
    assert journal.last_receipt_txn().id == second
    job = journal.enqueue_print(JobKind.RECEIPT, BOTH, txn_id=first, reprint=True, title="sale 1")
    assert job.marked_reprint and journal.last_receipt_txn().id == first


def power_loss(journal: Journal, tmp_path) -> Journal:
    """Close the journal's file as a power loss leaves it and open it again (the restart)."""
    journal.close()
    return Journal.open(tmp_path / "j.db", CardVault(b"k" * 32))


@pytest.mark.parametrize(("printed_any", "copies_done", "on_paper"), [
    (True, 0, CopyKind.MERCHANT),  # the merchant copy half printed
    (False, 1, CopyKind.MERCHANT),  # the merchant copy done, the cardholder's not begun
    (True, 1, CopyKind.CARDHOLDER),  # the cardholder copy half printed
])
def test_a_cancel_under_way_at_a_power_loss_with_paper_used_ends_with_one_void_slip(
        journal, tmp_path, printed_any, copies_done, on_paper):
    """CANCEL came while a copy was printing (it was to finish, then a VOID slip), and the power
    went. At start-up the job is CANCELLED, never re-printed, and exactly one VOID slip is
    queued for the copy that is on paper; the recovery report counts it."""
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    journal.update_print_job(job.id, PrintState.PRINTING, printed_any=printed_any,
                             copies_done=copies_done)
    assert journal.request_print_cancel(job.id, "01") is CancelAction.AFTER_CURRENT_COPY
    j = power_loss(journal, tmp_path)
    report = j.recover_prints()
    assert (report.cancelled_with_void_slip, report.requeued_for_confirm,
            report.still_queued) == (1, 0, 0)
    assert j.print_job(job.id).state is PrintState.CANCELLED
    slips = [x for x in j.print_jobs(open_only=False) if x.kind is JobKind.VOID_SLIP]
    assert len(slips) == 1
    assert (slips[0].voids_job, slips[0].copies, slips[0].state) == (
        job.id, (on_paper,), PrintState.QUEUED)
    j.close()


def test_a_cancel_under_way_at_a_power_loss_with_no_paper_used_is_dropped_without_a_slip(
        journal, tmp_path):
    """CANCEL came as the first copy started, before any line reached the paper, and the power
    went. At start-up the job is CANCELLED with no VOID slip (there is nothing to void) and it
    is neither re-queued nor counted as voided."""
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    journal.update_print_job(job.id, PrintState.PRINTING)
    assert journal.request_print_cancel(job.id, "01") is CancelAction.AFTER_CURRENT_COPY
    j = power_loss(journal, tmp_path)
    report = j.recover_prints()
    assert (report.cancelled_with_void_slip, report.requeued_for_confirm,
            report.still_queued) == (0, 0, 0)
    assert j.print_job(job.id).state is PrintState.CANCELLED
    assert [x.kind for x in j.print_jobs(open_only=False)] == [JobKind.RECEIPT]
    j.close()


def test_a_held_order_trail_is_queued_once_for_the_merchant_and_audited(journal):
    """The trail of a held order is one merchant copy naming the order, queued and audited in
    the same commit; asking for an order that does not exist is refused and queues nothing."""
    order = HeldOrders(journal).park(1000, "T1", "", "01", "156")
    before = journal.audit_lines()
    with pytest.raises(JournalError, match=f"no held order {order.id + 1}"):
        journal.enqueue_held_trail(order.id + 1, "01")
    assert journal.print_jobs(open_only=False) == [] and journal.audit_lines() == before
    job = journal.enqueue_held_trail(order.id, "01")
    assert job == journal.print_jobs()[0]
    assert (job.kind, job.copies, job.held_order_id, job.state) == (
        JobKind.HELD_TRAIL, (CopyKind.MERCHANT,), order.id, PrintState.QUEUED)
    title = f"held order {order.id} trail"
    assert job.title == title
    assert journal.audit_lines(1)[0][1:] == ("01", "held trail", title, "queued")


def test_cancel_during_the_last_copy_voids_that_copy_once_it_is_done(journal):
    """CANCEL while the cardholder copy (the last) prints: the copy finishes (the spooler's one
    update: count, nothing of the next copy on paper, no REPRINT mark, no reason), then the job
    is CANCELLED and one VOID slip names the cardholder copy, the one on paper; audited."""
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    journal.update_print_job(job.id, PrintState.PRINTING, printed_any=True, copies_done=1)
    assert journal.request_print_cancel(job.id, "01") is CancelAction.AFTER_CURRENT_COPY
    done = journal.update_print_job(job.id, copies_done=2, printed_any=False, copy_restarted=False,
                                    reason=None)
    assert done == journal.print_job(job.id) and done.copies_done == 2 and done.cancel_requested
    slip_id = journal.finish_print_cancel(job.id)
    slip = journal.print_job(slip_id)
    assert journal.print_job(job.id).state is PrintState.CANCELLED
    assert (slip.kind, slip.copies, slip.voids_job) == (JobKind.VOID_SLIP, (CopyKind.CARDHOLDER,),
                                                        job.id)
    assert journal.audit_lines(1)[0][1:] == ("operator", "print cancel", job.title,
                                             "void slip queued")


def test_a_cancelled_void_slip_gets_no_void_slip_of_its_own(journal):
    """A VOID slip cancelled while it prints finishes its copy and ends CANCELLED, and nothing
    more is queued: a slip voids a receipt, never another slip."""
    approved_with_receipt(journal)
    receipt = journal.print_jobs()[0]
    journal.update_print_job(receipt.id, PrintState.PRINTING, printed_any=True)
    journal.request_print_cancel(receipt.id, "01")
    slip_id = journal.finish_print_cancel(receipt.id)
    journal.update_print_job(slip_id, PrintState.PRINTING, printed_any=True)
    assert journal.request_print_cancel(slip_id, "01") is CancelAction.AFTER_CURRENT_COPY
    journal.update_print_job(slip_id, copies_done=1, printed_any=False)
    assert journal.finish_print_cancel(slip_id) is None
    assert journal.print_job(slip_id).state is PrintState.CANCELLED
    assert [(j.kind, j.state) for j in journal.print_jobs(open_only=False)] == [
        (JobKind.RECEIPT, PrintState.CANCELLED), (JobKind.VOID_SLIP, PrintState.CANCELLED)]


def test_a_finished_job_is_never_cancelled_afterwards(journal):
    """A job printed to its end is DONE for good: ending it as cancelled afterwards is refused
    as a whole, with no VOID slip and no audit line."""
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    journal.update_print_job(job.id, PrintState.PRINTING)
    journal.update_print_job(job.id, PrintState.DONE, copies_done=2)
    before = journal.audit_lines()
    with pytest.raises(PrintTransitionError):
        journal.finish_print_cancel(job.id)
    assert journal.print_job(job.id).state is PrintState.DONE
    assert [j.id for j in journal.print_jobs(open_only=False)] == [job.id]
    assert journal.audit_lines() == before


def test_the_open_jobs_are_the_queued_printing_and_paused_ones_oldest_first(journal):
    """print_jobs() (the ECR listing, the printer status, CANCEL with no job named) lists the
    open jobs, queued, printing and paused, oldest first; ended ones (done, cancelled) only
    with open_only=False."""
    ids = [approved_with_receipt(journal) for _ in range(5)]
    jobs = journal.print_jobs()
    assert [j.txn_id for j in jobs] == ids
    done, cancelled, printing, paused, queued = (j.id for j in jobs)
    journal.update_print_job(done, PrintState.PRINTING)
    journal.update_print_job(done, PrintState.DONE)
    journal.request_print_cancel(cancelled, "01")
    journal.update_print_job(printing, PrintState.PRINTING)
    journal.update_print_job(paused, PrintState.PRINTING)
    journal.update_print_job(paused, PrintState.PAUSED)
    assert [(j.id, j.state) for j in journal.print_jobs()] == [
        (printing, PrintState.PRINTING), (paused, PrintState.PAUSED), (queued, PrintState.QUEUED)]
    assert [j.id for j in journal.print_jobs(open_only=False)] == [j.id for j in jobs]


def test_a_job_change_sets_only_the_spoolers_fields_and_answers_the_stored_job(journal):
    """The spooler may set how far a job got (copies done, the REPRINT mark of the copy under
    way, paper used, the reason), one or all at once; any other field is refused and nothing
    changes. The answer is the job as stored."""
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    marked = journal.update_print_job(job.id, copy_restarted=True)
    assert marked == journal.print_job(job.id) and marked.marked_reprint
    with pytest.raises(JournalError, match="cannot be set"):
        journal.update_print_job(job.id, copies_done=1, needs_confirm=False)
    assert journal.print_job(job.id) == marked


def test_a_reprint_after_power_loss_is_audited_when_requeued_and_when_confirmed(journal):
    """The copy a power loss cut is re-queued with an audit line saying so, and the operator's
    confirmation of its reprint is audited too; confirming answers the job as stored."""
    approved_with_receipt(journal)
    job = journal.print_jobs()[0]
    journal.update_print_job(job.id, PrintState.PRINTING, printed_any=True)
    journal.recover_prints()
    assert journal.audit_lines(1)[0][1:] == ("system", "print interrupted by power loss",
                                             job.title, "re-queued for confirmation")
    confirmed = journal.confirm_print(job.id, "02")
    assert confirmed == journal.print_job(job.id) and not confirmed.needs_confirm
    assert journal.audit_lines(1)[0][1:] == ("02", "reprint after power loss", job.title,
                                             "confirmed")


def test_a_requested_reprint_is_audited_and_a_first_print_is_not(journal):
    """A receipt printed again on request is an audit line (who, which, queued); a job queued
    for its first print (a test page) writes no audit line."""
    rid = approved_with_receipt(journal)
    before = journal.audit_lines()
    journal.enqueue_print(JobKind.TEST, (CopyKind.MERCHANT,), title="test page")
    assert journal.audit_lines() == before
    journal.enqueue_print(JobKind.RECEIPT, BOTH, txn_id=rid, reprint=True, title="sale 000001",
                          operator="02")
    assert journal.audit_lines(1)[0][1:] == ("02", "reprint", "sale 000001", "queued")


def test_cancel_with_no_job_named_stops_the_job_printing_however_long_the_queue(tmp_path):
    """CANCEL with no job named (the keypad's CANCEL during printing) goes to the job the
    spooler is printing, even with more than 50 jobs behind it (paper out on a busy day), and
    never to a copy cut by a power loss that waits for the operator's "print again?" answer;
    the status counts every open job."""
    from firmware.app.services.printing import PrintDesk

    j = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32))
    try:
        cut = j.enqueue_print(JobKind.TEST, (CopyKind.MERCHANT,), title="cut by power loss")
        j.update_print_job(cut.id, PrintState.PRINTING, printed_any=True)
        j.recover_prints()  # the restart: the cut copy now waits for the operator
        jobs = [j.enqueue_print(JobKind.TEST, (CopyKind.MERCHANT,), title=f"test {i}")
                for i in range(60)]
        printing = jobs[0]
        j.update_print_job(printing.id, PrintState.PRINTING)
        desk = PrintDesk(j, None, lambda *_: None, lambda: None)
        status = desk.status()
        assert (status["queued"], status["awaiting_confirmation"]) == (61, [cut.id])
        assert desk.cancel(None) is CancelAction.AFTER_CURRENT_COPY
        assert j.print_job(printing.id).cancel_requested
        assert not j.print_job(cut.id).cancel_requested
        assert all(not j.print_job(other.id).cancel_requested for other in jobs[1:])
    finally:
        j.close()


def test_cancel_with_no_job_named_and_only_a_cut_copy_open_drops_it(tmp_path):
    """When the only open job is a copy waiting for the "print again?" answer, CANCEL with no
    job named answers it "no": what is on paper gets its VOID slip."""
    from firmware.app.services.printing import PrintDesk

    j = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32))
    try:
        cut = j.enqueue_print(JobKind.TEST, (CopyKind.MERCHANT,), title="cut by power loss")
        j.update_print_job(cut.id, PrintState.PRINTING, printed_any=True)
        j.recover_prints()
        desk = PrintDesk(j, None, lambda *_: None, lambda: None)
        assert desk.cancel(None) is CancelAction.DROP_WITH_VOID_SLIP
        assert j.print_job(cut.id).state is PrintState.CANCELLED
        slips = [job for job in j.print_jobs() if job.kind is JobKind.VOID_SLIP]
        assert len(slips) == 1
    finally:
        j.close()
