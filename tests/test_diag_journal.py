"""The journal check against real journal files: seeded through the Journal API, broken by
raw SQL on the file, and a file with damaged pages."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from firmware.diag.journal_check import STUCK_PRINTING_S, age_words, check_journal, counter_covers
from firmware.engine.model import HostResult, PendingDraft
from firmware.engine.states import TxnEvent
from firmware.host.messages import TxnKind
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.printing.queue import CopyKind, JobKind, PrintState

PAN = "6225880000000001"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def draft(kind: TxnKind = TxnKind.SALE, amount: int = 1000, **kw) -> PendingDraft:
    return PendingDraft(kind=kind, amount=amount, currency="156", pan=PAN,
                        pan_masked=PAN[:6] + "******" + PAN[-4:], foreign=False, entry_mode="swipe",
                        pin_entered=False, operator="01", local_date="0314", local_time="092653", **kw)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(tmp_path: Path, clock: Clock):
    j = Journal.open(tmp_path / "journal.db", CardVault(b"k" * 32), clock=clock)
    yield j
    j.close()


def approved_sale(journal: Journal) -> int:
    rec = journal.begin(draft())
    journal.apply(rec.id, TxnEvent.APPROVE, HostResult("00", rrn="123456789012", auth_code="A1B2C3"))
    return rec.id


def raw(journal: Journal, *statements: str) -> None:
    """Change the file behind the firmware's back, the way a bug or a bad restore would."""
    db = sqlite3.connect(journal.path)
    try:
        for statement in statements:
            db.execute(statement)
        db.commit()
    finally:
        db.close()


def test_a_clean_journal_passes_with_every_check_named(journal, clock):
    approved_sale(journal)
    approved_sale(journal)
    journal.allocate_stan()  # a sign-on: the counter runs ahead of the records
    result = check_journal(journal, "en", clock.now)
    assert result.passed and result.name == "journal"
    assert result.reason == "Journal OK - all checks passed"
    assert result.next_step == "Nothing to do"
    assert result.lines == (
        "Integrity: ok",
        "STAN 000003 >= 000002: ok",
        "No STAN used twice",
        "invoice 000002 >= 000002: ok",
        "No invoice used twice",
        "Audit chain: unbroken",
        "PENDING at rest: 0",
        "No open settlement",
        "No print job stuck",
        "Archive: empty",
        "CA keys: 0, version none (never downloaded)",
        "Chip AIDs: 2, version built-in",
    )


def test_an_empty_journal_passes(journal, clock):
    result = check_journal(journal, "zh_CN", clock.now)
    assert result.passed and result.reason == "流水正常 - 全部检查通过"
    assert "流水号 000000: 本批未用" in result.lines


def test_pending_at_rest_fails_with_restart(journal, clock):
    approved_sale(journal)
    journal.begin(draft())  # the power went before the reply: recovery has not run
    result = check_journal(journal, "en", clock.now)
    assert not result.passed
    assert result.reason == "Unfinished transaction left - recovery did not run"
    assert result.next_step == "Restart the terminal"
    assert "PENDING at rest: 1" in result.lines
    during = check_journal(journal, "en", clock.now, operation_running=True)
    assert during.passed and "PENDING (operation running): 1" in during.lines


def test_reversals_and_advices_due_pass_but_say_what_is_waiting(journal, clock):
    journal.begin(draft())
    clock.now += 3 * 3600 + 5 * 60
    journal.recover()  # the PENDING becomes a reversal due
    rec = journal.reversals_due()[0]
    journal.apply(rec.id, TxnEvent.REVERSAL_FAILED)
    journal.apply(rec.id, TxnEvent.REVERSAL_FAILED)
    advice = journal.begin(draft(kind=TxnKind.REFUND, advice=True, orig_rrn="123456789012",
                                 orig_date="0313"))
    journal.apply(advice.id, TxnEvent.ADVICE_FAILED)
    clock.now += 10 * 60
    result = check_journal(journal, "en", clock.now)
    assert result.passed
    assert result.reason == "Journal OK - 2 item(s) still waiting"
    assert result.next_step == "The terminal retries by itself; check the network if this stays"
    assert "Reversals due: 1, oldest 3h15m, 2 tries" in result.lines
    assert "Advices unsent: 1, oldest 10m, 1 tries" in result.lines
    zh = check_journal(journal, "zh_CN", clock.now)
    assert "待冲正: 1, 最早3小时15分, 已试2次" in zh.lines


def test_stan_counter_behind_the_batch_fails(journal, clock):
    approved_sale(journal)
    approved_sale(journal)
    raw(journal, "UPDATE counters SET value = 1 WHERE name = 'stan'")  # a restored old counter
    result = check_journal(journal, "en", clock.now)
    assert not result.passed
    assert result.reason == "STAN counter behind numbers already used"
    assert result.next_step == "Call support before the next sale"
    assert "STAN 000001 < 000002: BAD" in result.lines


def test_invoice_counter_behind_fails(journal, clock):
    approved_sale(journal)
    approved_sale(journal)
    raw(journal, "UPDATE counters SET value = 0 WHERE name = 'invoice'")
    result = check_journal(journal, "en", clock.now)
    assert not result.passed and result.reason == "invoice counter behind numbers already used"


def test_counters_that_wrapped_are_not_taken_for_counters_behind(journal, clock):
    raw(journal, "UPDATE counters SET value = 999998 WHERE name IN ('stan', 'invoice')")
    approved_sale(journal)
    approved_sale(journal)  # STAN 999999 then 000001
    assert [r.stan for r in journal.records()] == ["999999", "000001"]
    assert check_journal(journal, "en", clock.now).passed
    assert counter_covers(1, [999999, 1]) and not counter_covers(1, [999999, 1, 2])
    assert not counter_covers(5, [3, 9]) and counter_covers(9, [3, 9]) and counter_covers(0, [])


def _duplicate_row(journal: Journal, set_clause: str) -> None:
    columns = [row[1] for row in journal._db.execute("PRAGMA table_info(txn)") if row[1] != "id"]
    names = ", ".join(columns)
    raw(journal, "DROP INDEX txn_batch_stan",
        f"INSERT INTO txn ({names}) SELECT {names} FROM txn WHERE id = 1",
        f"UPDATE txn SET {set_clause} WHERE id = (SELECT MAX(id) FROM txn)")


def test_a_stan_used_twice_in_a_batch_fails(journal, clock):
    approved_sale(journal)
    approved_sale(journal)
    _duplicate_row(journal, "invoice = '000003'")
    raw(journal, "UPDATE counters SET value = 3 WHERE name = 'invoice'")
    result = check_journal(journal, "en", clock.now)
    assert not result.passed and result.reason == "Same STAN used twice"
    assert "STAN 000001 x2 in batch 000001" in result.lines


def test_an_invoice_used_twice_fails(journal, clock):
    approved_sale(journal)
    approved_sale(journal)
    raw(journal, "UPDATE txn SET invoice = '000001' WHERE id = 2")
    result = check_journal(journal, "en", clock.now)
    assert not result.passed and result.reason == "Same invoice used twice"
    assert "invoice 000001 x2 in batch 000001" in result.lines


def test_an_interrupted_settlement_is_a_warning(journal, clock):
    approved_sale(journal)
    stan = journal.allocate_stan()
    sid = journal.begin_settlement(journal.current_batch(), stan, *journal.totals(), operator="01")
    journal.record_settlement_reply(sid, "2", "1")
    result = check_journal(journal, "en", clock.now)
    assert result.passed and result.next_step == "Run Settlement to finish it"
    assert "Settlement batch 000001: UPLOADING" in result.lines
    assert "STAN 000002 >= 000002: ok" in result.lines  # the settlement's STAN counts as used


def test_print_jobs_paused_stuck_or_waiting_for_confirmation(journal, clock):
    paused = journal.enqueue_print(JobKind.TEST, (CopyKind.MERCHANT,), title="test page")
    journal.update_print_job(paused.id, PrintState.PRINTING)
    journal.update_print_job(paused.id, PrintState.PAUSED, reason="printer_paper_out")
    stuck = journal.enqueue_print(JobKind.TEST, (CopyKind.MERCHANT,), title="test 2")
    journal.update_print_job(stuck.id, PrintState.PRINTING)
    result = check_journal(journal, "en", clock.now)
    assert result.passed and result.next_step == "Check the printer paper and cover"
    assert f"Print job {paused.id} test page: PAUSED" in result.lines
    assert not any(f"Print job {stuck.id}" in line for line in result.lines)  # printing just now
    clock.now += STUCK_PRINTING_S
    later = check_journal(journal, "en", clock.now)
    assert f"Print job {stuck.id} test 2: PRINTING" in later.lines
    assert later.reason == "Journal OK - 2 item(s) still waiting"


def test_receipt_cut_by_power_loss_waits_for_the_operator(journal, clock):
    sale = approved_sale(journal)
    job = journal.enqueue_print(JobKind.RECEIPT, (CopyKind.MERCHANT, CopyKind.CARDHOLDER), txn_id=sale,
                                title="sale 000001")
    journal.update_print_job(job.id, PrintState.PRINTING, printed_any=True)
    journal.recover_prints()
    result = check_journal(journal, "en", clock.now)
    assert result.passed and result.next_step == "At idle: ENTER reprints, CANCEL voids"
    assert f"Print job {job.id} sale 000001: waits for ENTER" in result.lines


def test_a_damaged_file_fails_in_words(tmp_path, clock):
    path = tmp_path / "journal.db"
    journal = Journal.open(path, CardVault(b"k" * 32), clock=clock)
    for _ in range(60):
        approved_sale(journal)
    journal._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    journal.close()
    size = path.stat().st_size
    with open(path, "r+b") as damaged:  # garbage over every page but the first
        damaged.seek(4096)
        damaged.write(b"\xa5" * (size - 4096))
    # Journal.open refuses such a file; the check must still say what is wrong with one
    # that went bad while open.
    broken = Journal(sqlite3.connect(path, isolation_level=None), path, CardVault(b"k" * 32), clock)
    try:
        result = check_journal(broken, "en", clock.now)
        zh = check_journal(broken, "zh_CN", clock.now)
    finally:
        broken.close()
    assert not result.passed
    assert (result.reason, result.next_step) == ("Journal file damaged", "Stop trading and call support")
    assert result.lines and PAN not in " ".join(result.lines)
    # Issue 13 A5: the Chinese screen shows no English exception text, only an error's code.
    shown = " ".join((zh.reason, zh.next_step, *zh.lines))
    assert re.findall(r"[a-z]{3,}", shown) == [], shown


def test_an_audit_row_changed_behind_the_firmware_breaks_the_chain_at_that_row(journal, clock):
    approved_sale(journal)
    approved_sale(journal)
    lines = journal.read("SELECT id, detail FROM audit ORDER BY id")
    target = lines[1][0]
    # What an attacker with the file would do: lift the append-only trigger, edit, put it back.
    raw(journal, "DROP TRIGGER audit_no_update",
        f"UPDATE audit SET detail = 'trace 000001 amount 1 card x' WHERE id = {target}")
    result = check_journal(journal, "en", clock.now)
    assert not result.passed
    assert result.reason == f"Audit log altered at row {target}"
    assert result.next_step == "Keep the terminal as it is and call support"
    assert f"Audit chain breaks at row {target}" in result.lines
    zh = check_journal(journal, "zh_CN", clock.now)
    assert zh.reason == f"审计日志第{target}行被改动"


@pytest.mark.parametrize("tamper", ["delete", "insert"])
def test_an_audit_row_removed_or_slipped_in_breaks_the_chain(journal, clock, tamper):
    for _ in range(3):
        approved_sale(journal)
    ids = [row[0] for row in journal.read("SELECT id FROM audit ORDER BY id")]
    if tamper == "delete":
        raw(journal, "DROP TRIGGER audit_no_delete", f"DELETE FROM audit WHERE id = {ids[1]}")
        expected = ids[2]  # the row after the hole no longer follows from its predecessor
    else:
        raw(journal, "INSERT INTO audit (id, at, operator, action, detail, outcome, chain) VALUES "
                     f"({ids[-1] + 1}, {clock.now}, 'supervisor', 'void', 'trace 000001', 'ok', "
                     "'" + "0" * 64 + "')")
        expected = ids[-1] + 1
    assert journal.audit_chain_break() == expected
    assert check_journal(journal, "en", clock.now).reason == f"Audit log altered at row {expected}"


def test_the_chain_migration_chains_the_rows_an_older_journal_holds(tmp_path, clock):
    from firmware.journal import schema

    path = tmp_path / "old.db"
    chain_at = next(i for i, m in enumerate(schema.MIGRATIONS)
                    if "ALTER TABLE audit ADD COLUMN chain TEXT" in m)
    db = sqlite3.connect(path)
    for migration in schema.MIGRATIONS[:chain_at]:
        for step in migration:
            if callable(step):
                step(db.cursor())
            else:
                db.execute(step)
    db.execute(f"PRAGMA user_version = {chain_at}")
    db.executemany("INSERT INTO audit (at, operator, action, detail, outcome) VALUES (?,?,?,?,?)",
                   [(T0 + i, "01", "sale", f"trace {i:06d}", "PENDING") for i in range(5)])
    db.commit()
    db.close()
    journal = Journal.open(path, CardVault(b"k" * 32), clock=clock)
    try:
        assert journal.audit_chain_break() is None
        approved_sale(journal)  # new rows chain on from the migrated ones
        assert journal.audit_chain_break() is None
        assert check_journal(journal, "en", clock.now).passed
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            journal._db.execute("UPDATE audit SET chain = 'x'")  # the trigger is back
    finally:
        journal.close()


def test_age_words():
    assert [age_words(s, "en") for s in (0, 59, 60, 3599, 3600, 86400 + 7200)] == [
        "0m", "0m", "1m", "59m", "1h00m", "1d2h"]
    assert age_words(90 * 60, "zh_CN") == "1小时30分"


def test_no_card_data_in_any_line(journal, clock):
    journal.begin(draft())
    journal.recover()
    result = check_journal(journal, "en", clock.now)
    text = " ".join((result.reason, result.next_step, *result.lines))
    assert PAN not in text and "622588" not in text

