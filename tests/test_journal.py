"""The journal on its own: schema versions, the state table, counters, audit, totals."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from firmware.engine import events as ev
from firmware.engine.backlog import AdviceFlow
from firmware.engine.model import HostResult, PendingDraft
from firmware.engine.states import TRANSITIONS, IllegalTransition, TxnEvent, TxnState, diagram
from firmware.host.messages import Terminal, TxnKind
from firmware.journal.errors import JournalError, JournalTooNew
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault, VaultError

PAN = "6225880000000001"


def draft(kind=TxnKind.SALE, amount=1000, pan=PAN, **kw) -> PendingDraft:
    return PendingDraft(kind=kind, amount=amount, currency="156", pan=pan,
                        pan_masked=pan[:6] + "******" + pan[-4:], foreign=False,
                        entry_mode="swipe", pin_entered=False, operator="01",
                        local_date="1122", local_time="101010", **kw)


@pytest.fixture
def journal(tmp_path):
    j = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32))
    yield j
    j.close()


def test_pragmas_make_every_commit_durable(journal):
    db = journal._db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_begin_consumes_counters_in_the_same_commit(journal):
    a = journal.begin(draft())
    stan = journal.allocate_stan()
    b = journal.begin(draft())
    assert (a.stan, stan, b.stan) == ("000001", "000002", "000003")
    assert (a.invoice, b.invoice) == ("000001", "000002")
    assert a.state is TxnState.PENDING and a.batch == "000001"


def test_counters_wrap_after_999999_and_never_reuse_within_a_batch(journal):
    journal._db.execute("UPDATE counters SET value = 999998 WHERE name = 'stan'")
    a = journal.begin(draft())
    b = journal.begin(draft())
    assert (a.stan, b.stan) == ("999999", "000001")


def test_a_late_approval_of_a_record_owed_a_reversal_is_refused(journal):
    rec = journal.begin(draft())
    journal.apply(rec.id, TxnEvent.LOSE_REPLY, reversal_reason="98")
    with pytest.raises(IllegalTransition):
        journal.apply(rec.id, TxnEvent.APPROVE, HostResult("00"))  # a late approval
    assert journal.get(rec.id).state is TxnState.REVERSAL_DUE
    assert "REVERSAL_DUE -> REVERSED" in diagram()


def _audit_rows(journal) -> int:
    return journal._db.execute("SELECT COUNT(*) FROM audit").fetchone()[0]


def test_every_transition_outside_the_table_is_refused_and_changes_nothing(journal):
    """Every (state, event) pair the table does not name, through the journal: refused, and the
    record, its audit trail and the counters are as they were (the refusal rolls back)."""
    outside = [(state, event) for state in TxnState for event in TxnEvent
               if (state, event) not in TRANSITIONS]
    assert len(outside) > len(TxnState)  # the table leaves most pairs out: this loop has work
    for state, event in outside:
        rec = journal.begin(draft())
        # Put the record in the state under test directly: reaching every state through legal
        # events is the other tests' work; this one is about what the table refuses.
        journal._db.execute("UPDATE txn SET state = ? WHERE id = ?", (state.value, rec.id))
        before = (journal.get(rec.id), _audit_rows(journal), journal.counters())
        with pytest.raises(IllegalTransition):
            journal.apply(rec.id, event, HostResult("00", rrn="123456789012", auth_code="A1B2C3"),
                          reversal_reason="98")
        assert (journal.get(rec.id), _audit_rows(journal), journal.counters()) == before, (state, event)


def test_approved_void_marks_its_original_in_one_commit(journal):
    sale = journal.begin(draft())
    journal.apply(sale.id, TxnEvent.APPROVE, HostResult("00", rrn="123456789012", auth_code="A1B2C3"))
    void = journal.begin(draft(kind=TxnKind.VOID, orig_id=sale.id))
    journal.apply(void.id, TxnEvent.APPROVE, HostResult("00"), void_of=sale.id)
    assert journal.get(sale.id).state is TxnState.VOIDED
    dom, _fgn = journal.totals()
    assert (dom.debit_amount, dom.debit_count, dom.credit_amount, dom.credit_count) == (1000, 1, 1000, 1)


def test_recover_turns_pending_into_reversal_due_and_abandons_unanswered_settlement(journal):
    sale = journal.begin(draft())
    bal = journal.begin(draft(kind=TxnKind.BALANCE, amount=0))
    journal.begin_settlement("000001", "000009", *journal.totals(), operator="01")
    report = journal.recover()
    assert report.to_reverse == 1 and report.enquiries_failed == 1
    assert report.settlements_abandoned == 1 and report.settlement_to_resume is None
    assert journal.get(sale.id).state is TxnState.REVERSAL_DUE
    assert journal.get(sale.id).reversal_reason == "06"
    assert journal.get(bal.id).state is TxnState.FAILED


def test_audit_log_is_append_only(journal):
    journal.audit("01", "test", "detail", "ok")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        journal._db.execute("UPDATE audit SET outcome = 'forged'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        journal._db.execute("DELETE FROM audit")


def test_pan_is_encrypted_and_masked(journal, tmp_path):
    rec = journal.begin(draft())
    raw = journal._db.execute("SELECT pan_enc, pan_masked FROM txn").fetchone()
    assert PAN.encode() not in raw[0] and raw[1] == "622588******0001"
    assert journal.decrypt_pan(rec.id) == PAN
    other = CardVault(b"x" * 32)
    with pytest.raises(VaultError, match="integrity"):
        other.decrypt(raw[0])


def test_a_newer_schema_is_refused_not_guessed(tmp_path):
    path = tmp_path / "j.db"
    Journal.open(path, CardVault(b"k" * 32)).close()
    con = sqlite3.connect(path)
    con.execute("PRAGMA user_version = 99")
    con.commit()
    con.close()
    with pytest.raises(JournalTooNew, match="install the newer firmware"):
        Journal.open(path, CardVault(b"k" * 32))


def test_adopt_batch_only_while_the_batch_is_empty(journal):
    """The host's batch is taken while the open batch has no record, audited (from -> to);
    once a record is written it is refused: False, the batch and the audit as they were."""
    assert journal.adopt_batch("000042") is True and journal.current_batch() == "000042"
    assert journal.audit_lines(1)[0][1:] == ("system", "adopt batch", "000001 -> 000042", "done")
    journal.begin(draft())
    before = journal.audit_lines()
    assert journal.adopt_batch("000050") is False and journal.current_batch() == "000042"
    assert journal.audit_lines() == before


@pytest.mark.parametrize("host_batch", ["", "00004", "0000042", "00004A", "000001"])
def test_a_host_batch_that_is_not_6_digits_or_already_current_changes_nothing(journal, host_batch):
    """Sign-on's 60.2 is adopted only when it is a 6-digit batch other than the current one:
    a short, long or non-digit one (a malformed reply), or the batch the terminal already has,
    writes nothing (no audit line, the counter as it was) and adopt_batch answers False, not
    something merely falsy."""
    before = journal.audit_lines()
    assert journal.adopt_batch(host_batch) is False
    assert journal.current_batch() == "000001" and journal.audit_lines() == before
    assert journal.adopt_batch("000042") is True and journal.current_batch() == "000042"


def test_a_settlement_balanced_on_both_sides_has_nothing_to_upload(journal):
    """Only an unbalanced side's records are uploaded: with both sides balanced the upload list
    is empty (a list, so the settlement goes straight to the upload end)."""
    rec = journal.begin(draft())
    journal.apply(rec.id, TxnEvent.APPROVE, HostResult("00", rrn="000000000001", auth_code="1"))
    domestic, foreign = journal.totals()
    sid = journal.begin_settlement(journal.current_batch(), journal.allocate_stan(), domestic,
                                   foreign, operator="01")
    journal.record_settlement_reply(sid, "1", "1")
    assert journal.upload_items(sid, 50) == []


STATES_DOC = Path(__file__).resolve().parent.parent / "docs" / "states.md"


def documented_transitions() -> dict[tuple[TxnState, TxnEvent], TxnState]:
    """The rows of the "Every transition" table in docs/states.md (from | event | to | when)."""
    section = STATES_DOC.read_text(encoding="utf-8").split("### Every transition", 1)[1]
    section = section.split("\n#", 1)[0]
    rows = re.findall(r"^\| *([A-Z_]+) *\| *([a-z_]+) *\| *([A-Z_]+) *\|", section, re.MULTILINE)
    table = {(TxnState(src), TxnEvent(event)): TxnState(dst) for src, event, dst in rows}
    assert len(table) == len(rows), "a (state, event) pair is listed twice in docs/states.md"
    return table


def test_the_transition_table_is_the_one_docs_states_md_documents():
    """TRANSITIONS is exactly the table written in docs/states.md, row for row: a transition
    added, dropped, or sent to another state (a stored refund that can no longer be set aside,
    a quarantined record a supervisor can no longer close, or one "closed" into APPROVED) fails
    here, and a change to the rules must change the doc with it."""
    documented = documented_transitions()
    assert len(documented) >= 15  # the parser found the table, not an empty section
    assert documented == TRANSITIONS


def test_the_diagram_is_complete_dot_with_one_edge_per_transition():
    """states.diagram() draws the table for the docs: a whole Graphviz digraph (opened and
    closed, so `dot` accepts it) with exactly one labelled edge per row of TRANSITIONS."""
    lines = diagram().split("\n")
    assert lines[0] == "digraph txn {" and lines[-1] == "}"
    edges = {(src, ev_, dst) for src, dst, ev_ in
             (re.fullmatch(r'  (\w+) -> (\w+) \[label="(\w+)"\];', line).groups()  # type: ignore[union-attr]
              for line in lines[1:-1])}
    assert len(lines) - 2 == len(edges) == len(TRANSITIONS)
    assert edges == {(s.value, e.value, d.value) for (s, e), d in TRANSITIONS.items()}


def test_a_stored_refund_that_cannot_be_built_is_set_aside_and_a_supervisor_closes_it(journal):
    """A refund advice stored without its original RRN (an older firmware wrote it; the 0220
    cannot carry it): its resend is never sent, the record is QUARANTINED with the reason in
    words, still owed (settlement waits, listed as set aside), and only a supervisor closes it:
    RESOLVED_MANUALLY, audited with the reason, and it no longer holds settlement."""
    stored = journal.begin(draft(kind=TxnKind.REFUND, amount=700, advice=True, orig_date="1130"))
    assert stored.state is TxnState.ADVICE_DUE
    flow = AdviceFlow(stored, PAN, Terminal("12345678", "123456789012345"), 5.0)
    [write] = flow.start()  # no SendRequest: nothing leaves the terminal
    assert isinstance(write, ev.WriteOutcome) and write.event is TxnEvent.QUARANTINE
    assert "RRN" in (write.problem or "")

    aside = journal.apply(write.record_id, write.event, write.result, problem=write.problem)
    assert aside.state is TxnState.QUARANTINED and "RRN" in (aside.problem or "")
    assert [r.id for r in journal.quarantined()] == [stored.id]
    assert journal.advices_due() == []
    assert journal.unresolved_counts()["QUARANTINED"] == 1
    flow.handle(ev.OutcomeWritten(aside))
    assert flow.resolved is True  # this pass is done with it: it blocks no other record

    closed = journal.resolve_manually(stored.id, "supervisor", "refund made by bank transfer")
    assert closed.state is TxnState.RESOLVED_MANUALLY
    assert journal.quarantined() == []
    assert journal.unresolved_counts()["QUARANTINED"] == 0
    [(_, _, action, detail, outcome)] = [line for line in journal.audit_lines(100)
                                         if "resolution" in line[2]]
    assert action == "manual quarantined record resolution"
    assert "bank transfer" in detail and outcome == "RESOLVED_MANUALLY"


def test_audit_rows_are_numbered_from_1_without_gaps_and_chain_from_the_first(journal):
    """Audit rows are numbered 1, 2, 3... in the order written (docs/security.md: the row the
    journal check names is its place in the log), and each chains to the one before it, from
    the first: the chain holds over every kind of line the journal writes."""
    journal.audit("01", "sign in", "operator 01", "ok")
    rec = journal.begin(draft())
    journal.apply(rec.id, TxnEvent.APPROVE, HostResult("00", rrn="123456789012", auth_code="A1"))
    journal.audit("01", "sign out", "operator 01", "ok")
    ids = [row[0] for row in journal.read("SELECT id FROM audit ORDER BY id")]
    assert ids == list(range(1, len(ids) + 1)) and len(ids) >= 4
    assert journal.audit_chain_break() is None


def test_one_settlement_at_a_time_while_requested_uploading_or_ending(journal):
    """A settlement is open from its request until it is done or abandoned: while it is
    REQUESTED, UPLOADING or ENDING a second one is refused and start-up resumes this one
    (open_settlement); once done, neither."""
    empty = journal.totals()
    sid = journal.begin_settlement(journal.current_batch(), journal.allocate_stan(), *empty, operator="01")
    for state in ("REQUESTED", "UPLOADING", "ENDING"):
        if state == "UPLOADING":
            journal.record_settlement_reply(sid, "2", "1")
        elif state == "ENDING":
            journal.record_end_stan(sid, journal.allocate_stan())
        assert journal.get_settlement(sid).state == state
        with pytest.raises(JournalError, match="already in progress"):
            journal.begin_settlement(journal.current_batch(), journal.allocate_stan(), *empty, operator="01")
        assert journal.open_settlement().id == sid, state
    journal.finish_settlement(sid, report_copies=())
    assert journal.open_settlement() is None
    assert journal.begin_settlement(journal.current_batch(), journal.allocate_stan(), *empty,
                                    operator="01") > sid


def test_a_reversal_closed_by_hand_puts_its_held_order_back_on_hold(journal):
    """A held order's sale lost its reply (owed a reversal) and a supervisor closed it by hand:
    no money moved, so in that same commit the order is held again, untied from the sale."""
    from firmware.journal.held import HeldOrders

    orders = HeldOrders(journal)
    order = orders.park(1000, "T1", "", "01", "156")
    orders.mark_paying(order.id, "01")
    rec = journal.begin(draft(held_order_id=order.id))
    journal.apply(rec.id, TxnEvent.LOSE_REPLY, reversal_reason="98")
    assert orders.get(order.id).state == "PAYING"  # the money may have moved: not yet
    journal.resolve_manually(rec.id, "supervisor", "host confirms nothing was taken")
    back = orders.get(order.id)
    assert (back.state, back.txn_id) == ("HELD", None)


def test_an_empty_journal_owes_nothing_in_each_unresolved_state(journal):
    """The settlement gate reads every unresolved state by name: with nothing owed, each of
    them is there and zero (never missing)."""
    assert journal.unresolved_counts() == {"PENDING": 0, "REVERSAL_DUE": 0, "ADVICE_DUE": 0,
                                           "QUARANTINED": 0}


def test_records_filter_by_state_and_by_batch(journal):
    """records() lists the records of one state, of one batch, or of both, oldest first."""
    sale = journal.begin(draft())
    journal.apply(sale.id, TxnEvent.APPROVE, HostResult("00", rrn="123456789012", auth_code="A1"))
    pending = journal.begin(draft())
    assert [r.id for r in journal.records(state=TxnState.PENDING)] == [pending.id]
    assert [r.id for r in journal.records(batch="000001")] == [sale.id, pending.id]
    assert journal.records(batch="000002") == []
    assert journal.records(state=TxnState.APPROVED, batch="000002") == []


def test_start_up_recovery_audits_each_record_and_the_summary(journal):
    """Each PENDING record start-up gives up on has its own audit line, and the recovery its
    summary line, even with no settlement to abandon."""
    sale = journal.begin(draft())
    journal.recover()
    lines = [line[1:] for line in journal.audit_lines(2)]
    assert lines == [
        ("system", "start-up recovery", "1 to reverse, 0 enquiries lost, "
         "0 settlement requests abandoned", "done"),
        ("system", "sale lose_reply", f"trace {sale.stan}: outcome unknown after a restart",
         "REVERSAL_DUE")]
