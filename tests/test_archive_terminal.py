"""The archive through the terminal (docs/journal.md "The archive"): real settlements against the
acquirer simulator move the batches past `transactions.hot_batches` into the archive, and the
money rules between operations still hold across it: a sale settled and archived is refunded
once in full through the real host, and a second refund of it is refused, on the terminal's
word, before anything is sent.
"""

from __future__ import annotations

from helpers import PASSWORD, provision, refund, run, sale, terminal

from firmware.journal import archive


def test_settlements_archive_old_batches_and_a_refund_of_an_archived_sale_is_capped(tmp_path, sim):
    data_dir = provision(tmp_path / "terminal", sim.port, hot_batches=1)

    async def go():
        t = await terminal(data_dir)
        try:
            sold = await sale(t, 8000)
            assert sold.status == "approved", sold
            for _ in range(3):  # the sale's batch, then two more (one with a sale in it)
                settled = await t.settle(PASSWORD)
                assert settled.status == "settled", settled
                if _ == 1:
                    assert (await sale(t, 100)).status == "approved"
            j = t.journal
            moved = [r for r in j.archive_log() if r.state == "MOVED"]
            hot = [r.id for r in j.records()]
            first = await refund(t, 8000, sold.record.rrn, sold.record.local_date)
            again = await refund(t, 1, sold.record.rrn, sold.record.local_date)
            files = [p.name for p in archive.files_in(j.archive_dir)]
            checked = j.check_archives()
            return sold, moved, hot, first, again, files, checked
        finally:
            await t.close()

    sold, moved, hot, first, again, files, checked = run(go())
    assert [r.batch for r in moved] == ["000001", "000002"]  # the newest settled batch stays
    assert sold.record.id not in hot
    assert len(files) == 1 and checked.ok, (files, checked)
    assert first.status in ("approved", "stored"), first
    assert again.status == "refused" and again.message_key == "refund_over_original", again


def test_the_terminal_checks_its_archive_in_idle_time_and_audits_a_damaged_file(
        tmp_path, sim, monkeypatch):
    """Not at start-up: a while after it (here 0.2 s instead of a minute), with no operation
    running. A file changed behind the journal's back is then reported in Diagnostics and
    audited."""
    import asyncio
    import sqlite3

    from firmware.app.core import terminal as core_terminal
    from firmware.diag.journal_check import check_journal

    data_dir = provision(tmp_path / "terminal", sim.port, hot_batches=1)

    async def go():
        t = await terminal(data_dir)
        try:
            assert (await sale(t, 500)).status == "approved"
            for _ in range(2):
                assert (await t.settle(PASSWORD)).status == "settled"
        finally:
            await t.close()
        (path,) = archive.files_in(archive.directory_for(data_dir / "journal.db"))
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE txn SET amount = amount + 1")
        monkeypatch.setattr(core_terminal, "ARCHIVE_CHECK_AFTER_START_S", 0.2)
        t = await terminal(data_dir)
        try:
            assert t.journal.archive_check is None  # start-up did not read the archive
            for _ in range(100):
                await asyncio.sleep(0.1)
                if t.journal.archive_check is not None:
                    break
            found = t.journal.archive_check
            diag = check_journal(t.journal, "en", 0.0)
            audit = t.journal.audit_lines(3)
        finally:
            await t.close()
        return found, diag, audit

    found, diag, audit = run(go())
    assert found is not None and not found.ok, found
    assert not diag.passed and "Archive file damaged or altered" in diag.reason
    assert any(a[2] == "archive check" and a[4] == "FAILED" for a in audit), audit
