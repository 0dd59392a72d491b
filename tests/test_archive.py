"""The journal's archive (firmware/journal/archive.py, docs/journal.md "The archive"): settled
batches past the newest `keep` move into one SQLite file per month; every record stays findable
where the money rules need it (a refund's original and its earlier refunds, a completion's
pre-auth, a held order's sale and trail), ids are never reused, the audit chain runs on across
files, and an archive file that was changed behind the journal's back is reported.

Power cuts during a move are in tests/test_archive_kill.py; the terminal's own settlement path
(hot_batches, retention) in tests/test_archive_terminal.py.
"""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
from test_state_lists import draft

from firmware.engine.model import HostResult
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.messages import SideTotals, TxnKind
from firmware.journal import archive
from firmware.journal.held import HeldOrders
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.printing.layout import CopyKind
from firmware.printing.queue import JobKind, PrintState

DAY = 86_400.0
# 2027-01-10 12:00 local: batches a month apart land in files of different months.
JAN = time.mktime((2027, 1, 10, 12, 0, 0, 0, 0, -1))
KEY = b"k" * 32


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settle(j: Journal) -> int:
    """Close the open batch as a settlement the host agreed with does (no report printed)."""
    sid = j.begin_settlement(j.current_batch(), j.allocate_stan(), SideTotals(0, 0, 0, 0),
                             SideTotals(0, 0, 0, 0), operator="01")
    j.record_settlement_reply(sid, "1", "1")
    j.finish_settlement(sid, report_copies=())
    return sid


def approved(j: Journal, kind: TxnKind, amount: int, rrn: str, **kw: object):
    record = j.begin(draft(kind, amount, **kw))
    return j.apply(record.id, TxnEvent.APPROVE, HostResult("00", rrn=rrn, auth_code="123456"))


def every_record(j: Journal) -> list[tuple]:
    """(id, batch, kind, state, amount) of every record, hot and archived, in id order: what
    the books hold, wherever it is kept."""
    rows = [tuple(r) for r in j.read("SELECT id, batch, kind, state, amount FROM txn")]
    moved = {r.settlement_id for r in j.archive_log() if r.state == "MOVED"}
    for path in archive.files_in(j.archive_dir):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            marks = ",".join("?" * len(moved)) or "NULL"
            rows += conn.execute("SELECT id, batch, kind, state, amount FROM txn WHERE "
                                 f"settlement_id IN ({marks})", tuple(moved)).fetchall()
    return sorted(rows)


@pytest.fixture
def books(tmp_path):
    """Four settled batches, a month apart (Jan..Apr), three sales each, and an open batch."""
    clock = Clock(JAN)
    j = Journal.open(tmp_path / "journal.db", CardVault(KEY), clock=clock)
    sales = []
    for month in range(4):
        clock.now = JAN + month * 31 * DAY
        for k in range(3):
            sales.append(approved(j, TxnKind.SALE, 1000 * (month + 1) + k, f"{month:06d}{k:06d}"))
        settle(j)
    clock.now = JAN + 4 * 31 * DAY
    sales.append(approved(j, TxnKind.SALE, 9999, "000099000099"))
    yield j, clock, sales
    j.close()


def test_batches_past_the_newest_kept_move_into_monthly_files_and_the_books_are_unchanged(books):
    j, _clock, sales = books
    before = every_record(j)
    audit_before = j.read("SELECT id, chain FROM audit ORDER BY id")
    moves = j.archive_settled(keep_batches=2)
    assert [(m.batch, m.records, m.moved) for m in moves] == [("000001", 3, True), ("000002", 3, True)]
    assert every_record(j) == before  # every record once: nothing lost, nothing twice
    hot_batches = {b for (b,) in j.read("SELECT DISTINCT batch FROM txn")}
    assert hot_batches == {"000003", "000004", "000005"}
    assert [p.name for p in archive.files_in(j.archive_dir)] == [
        "journal-2027-01.sqlite", "journal-2027-02.sqlite"]
    # The audit rows up to each settlement went with it; the chain holds across the files.
    first_hot = j.read("SELECT MIN(id) FROM audit")[0][0]
    assert first_hot > 1 and j.audit_chain_break() is None
    assert j.check_archives().ok, j.archive_check
    moved_audit = dict(audit_before[: first_hot - 1])
    for path in archive.files_in(j.archive_dir):
        with sqlite3.connect(path) as conn:
            for rid, value in conn.execute("SELECT id, chain FROM audit"):
                assert moved_audit.pop(rid) == value
    assert not moved_audit
    # Moving again moves nothing: the newest two settled batches stay.
    assert j.archive_settled(keep_batches=2) == []
    # A new record is numbered above every archived one, even once the hot ones are gone.
    assert approved(j, TxnKind.SALE, 5, "000000777777").id == sales[-1].id + 1


def test_ids_are_never_reused_when_every_hot_record_has_moved(tmp_path):
    clock = Clock(JAN)
    j = Journal.open(tmp_path / "journal.db", CardVault(KEY), clock=clock)
    try:
        first = approved(j, TxnKind.SALE, 100, "000000000001")
        settle(j)
        settle(j)  # an empty batch: the newest settled batch holds no record
        j.archive_settled(keep_batches=1)
        assert j.read("SELECT COUNT(*) FROM txn") == [(0,)]
        assert approved(j, TxnKind.SALE, 200, "000000000002").id == first.id + 1
        j.audit("01", "test", "after every audit row moved", "done")
        assert j.audit_chain_break() is None
    finally:
        j.close()
    reopened = Journal.open(tmp_path / "journal.db", CardVault(KEY), clock=clock)
    try:
        assert approved(reopened, TxnKind.SALE, 300, "000000000003").id == first.id + 2
    finally:
        reopened.close()


def test_a_refund_of_an_archived_sale_counts_every_earlier_refund_wherever_it_is(tmp_path):
    """The money rule between operations: a sale refunded in part, both archived, then refunded
    again from the open batch: the journal finds the sale by its RRN, its card, and both
    refunds, so the cap (the sale's amount) holds across the archive."""
    clock = Clock(JAN)
    j = Journal.open(tmp_path / "journal.db", CardVault(KEY), clock=clock)
    try:
        sale = approved(j, TxnKind.SALE, 1000, "100000000001")
        first = approved(j, TxnKind.REFUND, 300, "100000000002", orig_rrn=sale.rrn,
                         orig_date="0110", orig_id=sale.id)
        settle(j)
        clock.now += 31 * DAY
        settle(j)
        clock.now += 31 * DAY
        moved = j.archive_settled(keep_batches=1)
        assert [m.batch for m in moved if m.moved] == ["000001"]
        assert j.read("SELECT COUNT(*) FROM txn WHERE id IN (?, ?)", (sale.id, first.id)) == [(0,)]
        found = j.find_by_rrn(sale.rrn)
        assert found is not None and (found.id, found.amount) == (sale.id, 1000)
        assert j.decrypt_pan(sale.id) == draft(TxnKind.SALE, 1).pan
        second = approved(j, TxnKind.REFUND, 500, "100000000003", orig_rrn=sale.rrn,
                          orig_date="0110", orig_id=sale.id)
        follow = j.follow_ups(found)
        assert [(f.id, f.amount) for f in follow] == [(first.id, 300), (second.id, 500)]
        assert j.get(first.id).state is TxnState.APPROVED
        assert j.get_settlement(1).batch == "000001"
    finally:
        j.close()


def test_a_completion_finds_its_archived_preauth_and_a_held_order_its_sale_and_trail(books):
    j, clock, _sales = books
    orders = HeldOrders(j, clock=clock)
    order = orders.mark_paying(orders.park(700, "table 9", "", "01", "156").id, "01")
    paid = approved(j, TxnKind.SALE, 700, "200000000001", held_order_id=order.id)
    pre = approved(j, TxnKind.PREAUTH, 800, "200000000002")
    trail_before = orders.trail(order.id)
    for _ in range(3):
        settle(j)
        clock.now += 31 * DAY
    j.archive_settled(keep_batches=1)
    assert j.read("SELECT COUNT(*) FROM txn WHERE id IN (?, ?)", (paid.id, pre.id)) == [(0,)]
    found = j.find_by_invoice(pre.invoice, kind=TxnKind.PREAUTH)
    assert found is not None and found.id == pre.id
    by_voucher = j.find_by_invoice(paid.invoice, paid.batch)  # a reprint naming its batch
    assert by_voucher is not None and by_voucher.id == paid.id
    assert j.find_by_invoice(paid.invoice) is None  # the open batch's voucher numbers only
    assert orders.get(order.id).state == "PAID"
    assert orders.trail(order.id) == trail_before  # its lines moved; the trail reads them there
    # The order can still be cancelled: its sale is read from the archive.
    assert orders.begin_cancel(order.id, "customer_cancelled", "01", "refund").state == "CANCELLING"


def test_an_unprinted_batch_report_keeps_its_batch_and_a_receipt_or_z_report_does_not(books):
    """An X report (subtotals) renders from the batch's rows when it prints: the batch waits for
    it. A receipt and a Z report render from the record and the settlement, found in the
    archive too: a board without a printer (jobs wait in its queue) still archives, and both
    still render from what was archived."""
    j, _clock, sales = books
    receipt = j.enqueue_print(JobKind.RECEIPT, (CopyKind.MERCHANT,), txn_id=sales[0].id)
    z_report = j.enqueue_report(JobKind.SETTLEMENT, settlement_id=1)
    x_report = j._insert_job  # an X report of batch 000001 queued before it was settled
    with j.transaction() as cur:
        x_id = x_report(cur, JobKind.SUBTOTALS, (CopyKind.MERCHANT,), batch="000001")
    totals = j.settled_totals_by_kind(1)
    moves = j.archive_settled(keep_batches=3)
    assert [(m.batch, m.moved) for m in moves] == [("000001", False)]
    assert "report" in moves[0].reason
    assert j.read("SELECT COUNT(*) FROM txn WHERE batch = '000001'") == [(3,)]
    j.update_print_job(x_id, PrintState.PRINTING)
    j.update_print_job(x_id, PrintState.DONE)
    moves = j.archive_settled(keep_batches=3)
    assert [(m.batch, m.moved) for m in moves] == [("000001", True)]
    assert j.read("SELECT id FROM print_job ORDER BY id") == [(receipt.id,), (z_report.id,)]
    assert j.get(j.print_job(receipt.id).txn_id).amount == sales[0].amount
    assert totals == {("domestic", "sale"): (3, 1000 + 1001 + 1002)}
    assert j.settled_totals_by_kind(1) == totals and j.settlement_operator(1) == "01"


def test_a_changed_archive_row_or_a_removed_audit_row_is_reported(books):
    j, _clock, _sales = books
    j.archive_settled(keep_batches=1)
    assert j.check_archives().ok
    path = j.archive_dir / "journal-2027-02.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE txn SET amount = amount + 1 WHERE id = (SELECT MIN(id) FROM txn)")
    found = j.check_archives()
    assert not found.ok and any("batch 000002 does not match" in p for p in found.problems), found
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE txn SET amount = amount - 1 WHERE id = (SELECT MIN(id) FROM txn)")
    assert j.check_archives().ok
    with sqlite3.connect(j.archive_dir / "journal-2027-01.sqlite") as conn:
        victim = conn.execute("SELECT MAX(id) FROM audit").fetchone()[0] - 1
        conn.execute("DELETE FROM audit WHERE id = ?", (victim,))
    found = j.check_archives()
    assert not found.ok
    assert any("journal-2027-01.sqlite" in p for p in found.problems), found.problems


def test_files_past_retention_are_purged_audited_and_the_chain_still_verifies(books):
    j, clock, _sales = books
    j.archive_settled(keep_batches=1)
    assert len(archive.files_in(j.archive_dir)) == 3
    # Retention 50 days, now 15 May: January's file (its month ended 1 Feb) and February's (1 Mar)
    # are more than 50 days past their month; March's (1 Apr, 44 days) is not.
    clock.now = time.mktime((2027, 5, 15, 12, 0, 0, 0, 0, -1))
    gone = j.purge_archives(retention_days=50)
    assert gone == ["journal-2027-01.sqlite", "journal-2027-02.sqlite"]
    assert [p.name for p in archive.files_in(j.archive_dir)] == ["journal-2027-03.sqlite"]
    assert {r.state for r in j.archive_log() if r.file in gone} == {"PURGED"}
    assert j.find_by_rrn("000000000000") is None  # January's first sale is gone with its file
    assert j.find_by_rrn("000002000000") is not None  # March's is still found
    assert j.check_archives().ok and j.audit_chain_break() is None
    assert any(a[2] == "purge archive" for a in j.audit_lines(5))


def test_moved_batch_survives_a_reopen_and_a_missing_file_is_reported(books):
    j, clock, _sales = books
    j.archive_settled(keep_batches=2)
    path = j.path
    j.close()
    reopened = Journal.open(path, CardVault(KEY), clock=clock)
    try:
        assert reopened.find_by_rrn("000000000001") is not None
        (reopened.archive_dir / "journal-2027-01.sqlite").unlink()
        reopened._archives.forget()
        assert reopened.find_by_rrn("000000000001") is None
        found = reopened.check_archives()
        assert found.problems == ["journal-2027-01.sqlite is missing"]
    finally:
        reopened.close()


def test_the_deregistration_export_carries_the_archive_and_the_wipe_shreds_it(books, tmp_path):
    """The export copies every archive file (card data cleared) with its own records and totals
    in the manifest, and the CSV lists archived records too; a changed copy fails verify; a
    restore brings the archive back beside the new journal; the wipe shreds the files."""
    from firmware.journal import backup, wipe

    j, _clock, _sales = books
    j.archive_settled(keep_batches=2)
    everything = every_record(j)
    out = tmp_path / "usb"
    out.mkdir()
    target = backup.export(j.path, out, "12345678")
    verdict = backup.verify(target)
    assert verdict.ok, verdict
    manifest = json.loads((target / backup.MANIFEST_NAME).read_text())
    assert sorted(manifest["archives"]) == ["journal-2027-01.sqlite", "journal-2027-02.sqlite"]
    assert {r["records"] for r in manifest["archives"].values()} == {3}
    csv_ids = [int(line.split(",")[0]) for line in
               (target / backup.CSV_NAME).read_text().splitlines()[1:]]
    assert csv_ids == [r[0] for r in everything]
    restored = tmp_path / "restored" / "journal.db"
    restored.parent.mkdir()
    backup.restore(target, restored)
    assert [p.name for p in archive.files_in(restored.parent / "archive")] == [
        "journal-2027-01.sqlite", "journal-2027-02.sqlite"]
    copy = target / backup.ARCHIVE_SUBDIR / "journal-2027-02.sqlite"
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE txn SET amount = amount + 1")
    assert not backup.verify(target).ok
    assert wipe.wipe_archives(j.path) == 2
    assert archive.files_in(j.archive_dir) == []
    assert {r.state for r in j.archive_log()} == {"WIPED"}
    assert j.audit_chain_break() is None


def test_diagnostics_show_the_archive_check_and_fail_on_an_altered_file(books):
    from firmware.diag.journal_check import check_journal

    j, clock, _sales = books
    assert any("Archive: empty" in line for line in check_journal(j, "en", clock.now).lines)
    j.archive_settled(keep_batches=2)
    waiting = check_journal(j, "zh", clock.now)
    assert any("归档: 2个文件, 尚未检查" in line for line in waiting.lines), waiting.lines
    j.check_archives()
    ok = check_journal(j, "en", clock.now)
    assert ok.passed and any("2 file(s), 2 batch(es), 6 record(s) OK" in x for x in ok.lines)
    with sqlite3.connect(j.archive_dir / "journal-2027-01.sqlite") as conn:
        conn.execute("UPDATE txn SET amount = 1")
    j.check_archives()
    bad = check_journal(j, "en", clock.now)
    assert not bad.passed
    assert any("batch 000001 does not match" in line for line in bad.lines), bad.lines


def test_firmware_before_the_archive_refuses_a_journal_with_it_in_words(tmp_path, monkeypatch):
    """The archive's migration is breaking (schema.py): firmware of the schema before it would
    not find archived records, so it refuses the journal, touching nothing."""
    from firmware.journal import schema, store
    from firmware.journal.errors import JournalTooNew

    path = tmp_path / "journal.db"
    Journal.open(path, CardVault(KEY)).close()
    before = path.read_bytes()
    assert schema.ARCHIVE_SINCE not in schema.ADDITIVE
    monkeypatch.setattr(store, "SCHEMA_VERSION", schema.ARCHIVE_SINCE - 1)
    monkeypatch.setattr(store, "MIGRATIONS", schema.MIGRATIONS[:schema.ARCHIVE_SINCE - 1])
    with pytest.raises(JournalTooNew, match="written by newer firmware"):
        Journal.open(path, CardVault(KEY))
    assert path.read_bytes() == before
