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
