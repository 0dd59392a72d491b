"""A reversal says what its original said (issue 13, items 19 and 21; docs/dialect.md).

The terminal talks to the acquirer simulator through a wire tap, so every assertion is on the
bytes that crossed, decoded: the 0400 copies the original request's 3, 4, 11, 22, 25, 49 and 60
(with 60.4/60.5), 38 and 61 where the original carried them, for reversals sent at once, after a
restart, and of voids, completions and pre-auth voids. The journal keeps how the card was read
(field 22 and 60.4/60.5); older rows get the value the older firmware sent.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import PASSWORD, pin_for, run, swipe
from wiretap import WireTap

from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.engine.model import OriginalRef, TxnRequest
from firmware.host.codec import decode
from firmware.host.messages import Message, TxnKind
from firmware.journal.schema import MIGRATIONS, SCHEMA_VERSION
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault

# What a 0400 must carry unchanged from its original request (dialect section 5).
COPIED = ("3", "4", "11", "22", "25", "41", "42", "49", "60")


def requests(tap: WireTap) -> list[Message]:
    return [decode(f.payload).message for f in tap.frames() if f.to_host]


def original_and_reversal(tap: WireTap, mti: str) -> tuple[Message, Message]:
    sent = requests(tap)
    orig = [m for m in sent if m.mti == mti][-1]
    revs = [m for m in sent if m.mti == "0400" and m.fields["11"] == orig.fields["11"]]
    assert revs, f"no reversal of the {mti} with STAN {orig.fields['11']}"
    return orig, revs[-1]


def assert_copies(orig: Message, rev: Message) -> None:
    for k in COPIED:
        assert rev.fields.get(k) == orig.fields.get(k), (k, orig.fields.get(k), rev.fields.get(k))


async def _terminal(data_dir: Path) -> Terminal:
    t = Terminal(AppConfig(data_dir=data_dir))
    await t.start()
    return t


def _sale_io(card: str) -> OperatorInput:
    return OperatorInput(card=swipe(card), pin=pin_for(card))


@pytest.mark.parametrize(("card", "f22"), [("cup_debit", "021"), ("cup_credit", "022")])
def test_reversal_sent_at_once_keeps_the_swiped_entry_mode(tapped_dir, sim, tap, card, f22):
    """B19: a swiped sale whose reply is lost is reversed with its own 22 (021/022), not 012."""
    async def go():
        t = await _terminal(tapped_dir)
        try:
            sim.add_fault("drop", mti="0200", count=1, process=True)
            return await t.financial(TxnRequest(TxnKind.SALE, 1234), _sale_io(card))
        finally:
            await t.close()

    result = run(go())
    assert result.status == "reversed", result
    orig, rev = original_and_reversal(tap, "0200")
    assert orig.fields["22"] == f22
    assert_copies(orig, rev)
    assert rev.fields["2"] == swipe(card).pan and "35" not in rev.fields
    assert rev.fields["39"] == "98"


def test_reversal_after_a_restart_keeps_the_swiped_entry_mode(tapped_dir, sim, tap):
    """B19: the reversal owed across a restart is rebuilt from the journal alone and still
    says 021 and the original's 60.4/60.5."""
    async def first():
        t = await _terminal(tapped_dir)
        try:
            sim.add_fault("drop", mti="0200", count=1, process=True)
            sim.add_fault("drop", mti="0400", count=-1, process=False)
            return await t.financial(TxnRequest(TxnKind.SALE, 2345), _sale_io("cup_debit"))
        finally:
            await t.close()

    async def second():
        sim.clear_faults()
        t = await _terminal(tapped_dir)  # start-up sends what the host is owed first
        try:
            return t.journal.get(owed.record.id)
        finally:
            await t.close()

    owed = run(first())
    assert owed.status == "reversal_pending", owed
    after = run(second())
    assert after.state.value == "REVERSED"
    orig, rev = original_and_reversal(tap, "0200")
    assert orig.fields["22"] == "021"
    assert_copies(orig, rev)


def test_reversals_of_the_preauth_family_copy_38_and_61(tapped_dir, sim, tap):
    """B21: a completion's reversal carries the original's 38 and 61 (with the date), like the
    pre-auth void's and the completion void's."""
    io = lambda: OperatorInput(card=swipe("visa"), password=PASSWORD)  # noqa: E731

    async def go():
        t = await _terminal(tapped_dir)
        try:
            pa = await t.financial(TxnRequest(TxnKind.PREAUTH, 10000), io())
            ref = OriginalRef(invoice=pa.record.invoice)
            sim.add_fault("drop", mti="0200", count=1, process=True)
            lost = await t.financial(TxnRequest(TxnKind.COMPLETION, 9000, original=ref), io())
            comp = await t.financial(TxnRequest(TxnKind.COMPLETION, 9000, original=ref), io())
            sim.add_fault("drop", mti="0200", count=1, process=True)
            cvoid = await t.financial(TxnRequest(
                TxnKind.COMPLETION_VOID, original=OriginalRef(invoice=comp.record.invoice)), io())
            pa2 = await t.financial(TxnRequest(TxnKind.PREAUTH, 2000), io())
            sim.add_fault("drop", mti="0100", count=1, process=True)
            pvoid = await t.financial(TxnRequest(
                TxnKind.PREAUTH_VOID, original=OriginalRef(invoice=pa2.record.invoice)), io())
            return pa, lost, comp, cvoid, pvoid
        finally:
            await t.close()

    pa, lost, comp, cvoid, pvoid = run(go())
    assert [r.status for r in (pa, lost, comp, cvoid, pvoid)] == [
        "approved", "reversed", "approved", "reversed", "reversed"]
    sent = requests(tap)
    by_stan = {m.fields["11"]: m for m in sent if m.mti in ("0100", "0200")}
    revs = {m.fields["11"]: m for m in sent if m.mti == "0400"}
    for result, orig_date in ((lost, pa.record.local_date), (cvoid, comp.record.local_date),
                              (pvoid, pa.record.local_date)):
        orig, rev = by_stan[result.record.stan], revs[result.record.stan]
        assert_copies(orig, rev)
        assert rev.fields["38"] == orig.fields["38"]
        assert rev.fields["61"] == orig.fields["61"]
        assert rev.fields["61"][12:] == orig_date  # 61.3: the pre-auth family names the date
    assert by_stan[cvoid.record.stan].fields["61"] == (
        comp.record.batch + comp.record.stan + comp.record.local_date)


def test_a0_reversal_sends_back_the_auth_code_of_the_refused_reply(tapped_dir, sim, tap):
    """B21: the reply failed its MAC, but it named an auth code: the 0400 carries it in 38."""
    async def go():
        t = await _terminal(tapped_dir)
        try:
            sim.add_fault("bad_mac", mti="0200", count=1)
            result = await t.financial(TxnRequest(TxnKind.SALE, 3456), _sale_io("cup_credit"))
            return result, t.journal.get(result.record.id)
        finally:
            await t.close()

    result, record = run(go())
    assert result.status == "reversed" and record.reversal_reason == "A0"
    assert record.auth_code is None  # never shown as an approval
    replies = [decode(f.payload).message for f in tap.frames() if not f.to_host]
    reply = [m for m in replies if m.mti == "0210"][-1]
    orig, rev = original_and_reversal(tap, "0200")
    assert_copies(orig, rev)
    assert rev.fields["39"] == "A0" and rev.fields["38"] == reply.fields["38"]


def test_refund_sends_back_the_card_organisation_of_its_original(tapped_dir, sim, tap):
    """B21: a refund's 63 is the card organisation its original's reply named."""
    async def go():
        t = await _terminal(tapped_dir)
        try:
            s = await t.financial(TxnRequest(TxnKind.SALE, 5000), _sale_io("visa"))
            io = OperatorInput(card=swipe("visa"), password=PASSWORD)
            r = await t.financial(TxnRequest(TxnKind.REFUND, 1000, original=OriginalRef(
                rrn=s.record.rrn, date=s.record.local_date)), io)
            return s, r
        finally:
            await t.close()

    s, r = run(go())
    assert s.status == "approved" and r.status == "approved", (s, r)
    refund = [m for m in requests(tap) if m.mti == "0220"][-1]
    assert refund.fields["63"] == s.record.card_org == "VIS"


# -- the journal keeps how the card was read; older rows get what the older firmware sent

def _our_migration() -> int:
    for number, steps in enumerate(MIGRATIONS):
        if any(isinstance(s, str) and "ADD COLUMN pos_entry" in s for s in steps):
            return number
    raise AssertionError("no migration adds pos_entry")


@pytest.mark.parametrize(("entry_mode", "pin", "pos_entry", "read_cap"), [
    ("swipe", 1, "021", ""), ("swipe", 0, "022", ""), ("fallback", 1, "021", "52"),
    ("keyed", 0, "012", ""), ("chip", 1, "051", ""), ("contactless", 0, "072", ""),
])
def test_older_rows_get_what_the_older_firmware_sent(tmp_path, entry_mode, pin, pos_entry,
                                                     read_cap):
    path = tmp_path / "journal.db"
    con = sqlite3.connect(path)
    for number, steps in enumerate(MIGRATIONS[:_our_migration()]):
        for step in steps:
            step(con.cursor()) if callable(step) else con.execute(step)
        con.execute(f"PRAGMA user_version = {number + 1}")
    con.execute(
        "INSERT INTO txn (kind, state, stan, batch, invoice, amount, currency, pan_masked, "
        "foreign_card, entry_mode, pin_entered, operator, local_date, local_time, created_at, "
        "updated_at, reversal_reason) VALUES ('sale', 'REVERSAL_DUE', '000001', '000001', "
        "'000001', 100, '156', '622202******0012', 0, ?, ?, '01', '1201', '101010', 0, 0, '98')",
        (entry_mode, pin))
    con.commit()
    con.close()
    j = Journal.open(path, CardVault(bytes(32)))
    try:
        assert j._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        record = j.reversals_due()[0]
        assert (record.pos_entry, record.read_cap) == (pos_entry, read_cap)
    finally:
        j.close()
