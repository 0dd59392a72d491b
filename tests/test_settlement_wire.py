"""Settlement on the wire: which side is out of balance, what is uploaded, and a refused upload
closes nothing (issue 14; docs/dialect.md "Settlement and batch upload").

A real terminal settles with the acquirer simulator through a wire tap. One side of the batch is
put out of balance on purpose: a record the host never booked is written into the terminal's
journal only (like tests/test_wire_conformance.py does), on the domestic side or on the foreign
one. The 0510's result digits then say which side the host finds unbalanced; the terminal must
keep them on the right side (journal row, audit line, the LCD's settlement lines) and upload
exactly that side's records, each as the dialect lays them out in field 48.

A host that refuses a batch upload (0320, 60.3 = 201) or its end (202/207) with anything but 00
has not closed the batch: the terminal's settlement stops "interrupted", the batch number stays,
the host's batch stays open; the next settle resumes at the step reached and closes it once.
"""

from __future__ import annotations

import pytest
from helpers import PASSWORD, TID, run, sale, terminal
from wiretap import WireTap

from board.sim.cards import TEST_CARDS
from firmware.engine.cardclass import is_foreign
from firmware.engine.model import HostResult, PendingDraft
from firmware.engine.states import TxnEvent
from firmware.host.codec import decode
from firmware.host.messages import Message, TxnKind, mask_pan
from firmware.printing.reports import settlement_lines
from firmware.printing.texts import label

RESULT_WORDS = {"1": "BALANCED", "2": "UNBALANCED"}
SIDE_CARDS = {"domestic": ("cup_credit", "cup_debit"), "foreign": ("visa", "mastercard")}


def requests(tap: WireTap, mti: str) -> list[Message]:
    return [m for m in (decode(f.payload).message for f in tap.frames() if f.to_host)
            if m.mti == mti]


def uploads_of(tap: WireTap) -> tuple[list[Message], list[Message]]:
    """(0320 uploads with items, 0320 upload ends), in the order sent."""
    sent = requests(tap, "0320")
    return ([m for m in sent if m.fields["60"][8:11] == "201"],
            [m for m in sent if m.fields["60"][8:11] in ("202", "207")])


def items_of(upload: Message) -> list[tuple[str, str, str, int]]:
    """Field 48 of a 0320/201 read by the dialect's layout: NN, then per record the side
    (00 domestic, 01 foreign), trace (6), PAN right-justified in 20 with zeros, amount (12)."""
    f48 = upload.fields["48"]
    n, body = int(f48[:2]), f48[2:]
    assert len(body) == n * 40, f48
    return [(body[i:i + 2], body[i + 2:i + 8], body[i + 8:i + 28].lstrip("0"),
             int(body[i + 28:i + 40])) for i in range(0, len(body), 40)]


def host_never_saw(t, card: str, amount: int) -> int:
    """An approved sale in the terminal's journal only: its side no longer balances."""
    pan = TEST_CARDS[card].pan
    j = t.journal
    rec = j.begin(PendingDraft(TxnKind.SALE, amount, "156", pan, mask_pan(pan), is_foreign(pan),
                               "swipe", False, "01", "1201", "101010"))
    j.apply(rec.id, TxnEvent.APPROVE, HostResult("00", rrn="999999999999", auth_code="000001"))
    return rec.id


@pytest.mark.parametrize("off", ["domestic", "foreign"])
def test_the_side_the_host_finds_unbalanced_is_the_one_reported_and_uploaded(
        tapped_dir, sim, tap, off):
    """Domestic balanced and foreign not (and the other way round): the journal, the audit and
    the settlement screen say which side is out of balance, and only that side's records go up
    in the batch upload, each with its own side flag, trace, PAN and amount."""
    other = "foreign" if off == "domestic" else "domestic"
    flag = {"domestic": "00", "foreign": "01"}[off]

    async def go():
        t = await terminal(tapped_dir)
        try:
            for i, card in enumerate(SIDE_CARDS["domestic"] + SIDE_CARDS["foreign"]):
                assert (await sale(t, 2000 + 11 * i, card=card)).status == "approved"
            host_never_saw(t, SIDE_CARDS[off][0], 777)
            batch = t.journal.current_batch()
            host_batch = sim.ledger.terminal_status(TID).batch
            records = t.journal.records(batch=batch)
            result = await t.settle(PASSWORD)
            row = t.journal.last_settlement()
            lines = settlement_lines(row, t.journal.totals_by_kind(batch), "en", 32)
            audit = [line[3] for line in t.journal.audit_lines(50) if line[2] == "settlement reply"]
            return result, row, lines, audit, records, batch, host_batch, t.journal.current_batch()
        finally:
            await t.close()

    result, row, lines, audit, records, batch, host_batch, after = run(go())
    assert (result.status, result.message_key) == ("settled", "settled_unbalanced"), result
    want = {off: "2", other: "1"}
    assert (row.result_domestic, row.result_foreign) == (want["domestic"], want["foreign"])
    assert audit[0] == f"domestic {want['domestic']} foreign {want['foreign']}", audit
    host = [s for s in sim.ledger.settlements(TID) if s["batch"] == host_batch]
    assert (host[0]["result_dom"], host[0]["result_for"]) == (want["domestic"], want["foreign"])
    for side in ("domestic", "foreign"):  # each side's line ends with its result in words
        said = [line for line in lines if line.startswith(label(f"side_{side}", "en"))]
        assert len(said) == 1 and said[0].endswith(RESULT_WORDS[want[side]]), (side, lines)

    uploads, ends = uploads_of(tap)
    sent = [item for u in uploads for item in items_of(u)]
    mine = [r for r in records if r.foreign == (off == "foreign")]
    expected = sorted((flag, r.stan, t_pan(r), r.amount) for r in mine)
    assert sorted(sent) == expected
    assert all(u.fields["60"][2:8] == batch for u in uploads + ends)
    assert [(e.fields["48"], e.fields["60"][8:11]) for e in ends] == [
        (f"{len(expected):04d}", "202")]
    assert after == f"{int(batch) + 1:06d}"


def t_pan(record) -> str:
    """The full PAN of a test record: the test cards are known by their masked form."""
    for card in TEST_CARDS.values():
        if mask_pan(card.pan) == record.pan_masked:
            return card.pan
    raise AssertionError(record.pan_masked)


REFUSALS = [
    pytest.param(False, "207", "96", id="balanced-upload-end-refused-96"),
    pytest.param(True, "201", "30", id="batch-upload-refused-30"),
    pytest.param(True, "202", "05", id="unbalanced-upload-end-refused-05"),
]


@pytest.mark.parametrize(("unbalanced", "network", "code"), REFUSALS)
def test_a_refused_batch_upload_or_upload_end_does_not_close_the_batch(
        tapped_dir, sim, tap, unbalanced, network, code):
    """The host answered the 0320 (upload, or its end) with a code other than 00: the batch is
    not closed on either side, nothing is marked uploaded that the host refused, and the next
    settle resumes and closes it exactly once."""
    async def go():
        t = await terminal(tapped_dir)
        try:
            for card in ("cup_credit", "visa"):
                assert (await sale(t, 3100, card=card)).status == "approved"
            if unbalanced:
                host_never_saw(t, "visa", 555)
            batch = t.journal.current_batch()
            host_batch = sim.ledger.terminal_status(TID).batch
            sim.add_rule(code, mti="0320", network=network, count=1)
            first = await t.settle(PASSWORD)
            open_row = t.journal.open_settlement()
            flagged = [r.uploaded for r in t.journal.records(batch=batch)]
            mid = (t.journal.current_batch(), sim.ledger.terminal_status(TID).batch,
                   [s["closed"] for s in sim.ledger.settlements(TID)])
            again = await t.settle(PASSWORD)
            end = (t.journal.current_batch(), sim.ledger.terminal_status(TID).batch,
                   [s["closed"] for s in sim.ledger.settlements(TID)])
            return batch, host_batch, first, open_row, flagged, mid, again, end
        finally:
            await t.close()

    batch, host_batch, first, open_row, flagged, mid, again, end = run(go())
    assert (first.status, first.message_key, first.response_code) == (
        "interrupted", "settlement_interrupted", code), first
    assert open_row is not None and open_row.batch == batch
    assert open_row.state == ("UPLOADING" if network == "201" else "ENDING"), open_row
    assert mid == (batch, host_batch, [False]), mid  # nothing closed anywhere
    if network == "201":
        assert not any(flagged)  # the refused upload's records are sent again
    assert (again.status, again.message_key) == (
        "settled", "settled_unbalanced" if unbalanced else "settled_balanced"), again
    assert end == (f"{int(batch) + 1:06d}", host_batch + 1, [True]), end
    uploads, ends = uploads_of(tap)
    assert len(ends) == (1 if network == "201" else 2)
    assert len({e.fields["11"] for e in ends}) == 1  # a resent end keeps its STAN
    if unbalanced:
        traces = [item[1] for u in uploads for item in items_of(u)]
        assert len(traces) == (4 if network == "201" else 2), traces  # a refused one goes again


def test_nine_records_to_upload_go_up_as_a_0320_of_8_then_one_of_1(tapped_dir, sim, tap):
    """docs/dialect.md: a 0320 batch upload carries up to 8 records. Nine records on the side
    the host finds unbalanced go up as one 0320 of 8 and one of 1, in that order, every record
    exactly once, and the upload end counts 9."""
    async def go():
        t = await terminal(tapped_dir)
        try:
            for i in range(9):
                host_never_saw(t, "cup_debit", 100 + i)
            records = t.journal.records(batch=t.journal.current_batch())
            return await t.settle(PASSWORD), records
        finally:
            await t.close()

    result, records = run(go())
    assert (result.status, result.message_key) == ("settled", "settled_unbalanced"), result
    uploads, ends = uploads_of(tap)
    assert [len(items_of(u)) for u in uploads] == [8, 1]
    sent = sorted(item for u in uploads for item in items_of(u))
    assert sent == sorted(("00", r.stan, t_pan(r), r.amount) for r in records)
    assert [e.fields["48"] for e in ends] == ["0009"]


def test_the_settlement_names_the_operator_who_settled(tmp_path, sim):
    """The terminal's operator is 05 (setting transactions.operator): its settlement row, the
    audit line of the request and the settlement report name 05 (they said 01, the journal's
    default, whoever settled)."""
    from helpers import provision

    data_dir = provision(tmp_path / "terminal", sim.port, operator="05")

    async def go():
        t = await terminal(data_dir)
        try:
            sold = await sale(t, 1500)
            settled = await t.settle(PASSWORD)
            sid = t.journal.last_settlement().id
            return (sold, settled, t.journal.settlement_operator(sid),
                    [line[1:3] for line in t.journal.audit_lines()])
        finally:
            await t.close()

    sold, settled, operator, audit = run(go())
    assert sold.status == "approved" and settled.status == "settled", (sold, settled)
    assert operator == "05"
    assert ("05", "settlement") in audit and ("01", "settlement") not in audit
