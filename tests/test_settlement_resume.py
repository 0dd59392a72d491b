"""Settlement resumes after a power loss at each of its steps, and after a lost link.

The batch is built unbalanced on purpose, so that the 0510 asks for a batch upload:
one domestic and one foreign sale are booked by the host while their replies are lost
(sim fault "close" after processing) and their reversals are refused ("96" rule);
the supervisor then resolves both reversals manually, so the terminal's totals
exclude them and the host's include them. Twelve more sales, domestic and foreign,
make the upload take two 0320 messages (8 items each at most) before the upload end.

cup-iso8583.md section 8 and cancel-semantics.md "Settlement": with no recorded
reply to the 0500, nothing changed (the row is ABANDONED and settlement may start
again); once the reply is recorded, a restart resumes at the step reached, never
re-sends a record already flagged uploaded, advances the batch number exactly once
and the host closes the batch exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest
from faultkit import (
    ActionRecorder,
    LedgerSpy,
    PowerCut,
    PowerLoss,
    durable_batch,
    durable_records,
    durable_settlements,
    power_loss,
    shut,
)
from helpers import PASSWORD, TID, provision, run, sale, terminal

from board.sim.acquirer import SimulatorThread
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal

REPLY_TIMEOUT = 1.0
CARDS = ("cup_credit", "visa", "cup_debit", "mastercard", "cup_credit", "jcb")
N_SALES = 12  # + 2 resolved manually; all 12 are uploaded (both sides unbalanced)

# The settlement flow's actions for this batch (proven by
# test_unbalanced_settlement_performs_the_expected_actions with a recording hook).
SETTLE_ACTIONS: tuple[str, ...] = (
    "AllocateStan", "BeginSettlement", "SendRequest/0500", "RecordSettlementReply",
    "LoadUploadItems", "AllocateStan", "SendRequest/0320/201", "MarkUploaded",
    "LoadUploadItems", "AllocateStan", "SendRequest/0320/201", "MarkUploaded",
    "LoadUploadItems", "AllocateStan", "RecordEndStan", "SendRequest/0320/202", "FinishSettlement", "Finish",
)
REPLY_RECORDED_AT = SETTLE_ACTIONS.index("RecordSettlementReply")
FINISHED_AT = SETTLE_ACTIONS.index("FinishSettlement")

@dataclass
class Batch:
    number: str  # the terminal's batch being settled
    host_batch: int
    traces: set[int]  # the approved sales the upload must carry
    resolved: set[int]  # the sales the host booked and the terminal resolved manually


async def build_unbalanced_batch(t: Terminal, sim: SimulatorThread) -> Batch:
    assert t.journal is not None
    resolved: set[int] = set()
    sim.add_rule("96", mti="0400")  # every reversal refused: they stay REVERSAL_DUE
    for i, card in enumerate(("cup_credit", "visa")):
        sim.add_fault("close", mti="0200")  # booked by the host, reply lost
        lost = await sale(t, 7700 + i, card=card)
        assert lost.status == "reversal_pending", lost
        assert lost.record is not None
        t.journal.resolve_manually(lost.record.id, "supervisor", "bank confirmed by phone")
        resolved.add(int(lost.record.stan))
    sim.clear_rules()
    sim.clear_faults()
    traces: set[int] = set()
    for i in range(N_SALES):
        card = CARDS[i % len(CARDS)]
        r = await sale(t, 1000 + 37 * i, card=card)  # cup_debit: its PIN is typed
        assert r.status == "approved", r
        assert r.record is not None
        traces.add(int(r.record.stan))
    status = sim.ledger.terminal_status(TID)
    assert status is not None
    return Batch(t.journal.current_batch(), status.batch, traces, resolved)


def assert_settled_once(data_dir: Path, sim: SimulatorThread, spy: LedgerSpy, b: Batch) -> None:
    """Batch + 1 on both sides exactly once; every record uploaded once the host has it."""
    done = [s for s in durable_settlements(data_dir) if s.state == "DONE"]
    assert [s.batch for s in done] == [b.number], durable_settlements(data_dir)
    assert not [s for s in durable_settlements(data_dir)
                if s.state in ("REQUESTED", "UPLOADING", "ENDING")]
    assert durable_batch(data_dir) == f"{int(b.number) + 1:06d}"
    status = sim.ledger.terminal_status(TID)
    assert status is not None and status.batch == b.host_batch + 1
    assert [batch for _, batch in spy.closes] == [b.host_batch], spy.closes
    closed = [s for s in sim.ledger.settlements(TID) if s["batch"] == b.host_batch]
    assert len(closed) == 1 and closed[0]["closed"], closed
    assert closed[0]["upload_count"] == len(b.traces)
    uploaded = [u["trace"] for u in sim.ledger.uploads(TID, b.host_batch)]
    assert sorted(uploaded) == sorted(b.traces)
    flagged = {int(r.stan) for r in durable_records(data_dir)
               if r.batch == b.number and r.uploaded}
    assert flagged == b.traces


def assert_books_differ_only_by_the_resolved(t: Terminal, sim: SimulatorThread, b: Batch) -> None:
    assert t.journal is not None
    mine = {int(r.stan) for r in t.journal.records(batch=b.number) if r.state.value == "APPROVED"}
    theirs = {r.stan for r in sim.ledger.approved(TID, b.host_batch)}
    assert theirs - mine == b.resolved and mine <= theirs


def test_unbalanced_settlement_performs_the_expected_actions(tmp_path: Path, sim: SimulatorThread,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)
    spy = LedgerSpy(sim.ledger, monkeypatch)

    async def go() -> None:
        t = await terminal(data_dir)
        try:
            b = await build_unbalanced_batch(t, sim)
            rec = ActionRecorder()
            t.fault_hook = rec
            result = await t.settle(PASSWORD)
            assert (result.status, result.message_key) == ("settled", "settled_unbalanced"), result
            assert tuple(rec.labels) == SETTLE_ACTIONS
            results = [(s["result_dom"], s["result_for"]) for s in sim.ledger.settlements(TID)]
            assert results == [("2", "2")]
            assert len(spy.uploads) == len(b.traces)  # each record sent exactly once
            assert_settled_once(data_dir, sim, spy, b)
            assert_books_differ_only_by_the_resolved(t, sim, b)
        finally:
            await shut(t)

    run(go())


def _case(k: int) -> object:
    case_id = f"k{k:02d}-{SETTLE_ACTIONS[k].replace('/', '_')}"
    return pytest.param(k, id=case_id)


@pytest.mark.parametrize("k", [_case(k) for k in range(len(SETTLE_ACTIONS))])
def test_power_loss_at_each_settlement_step_then_restart(
        tmp_path: Path, sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, k: int) -> None:
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)
    spy = LedgerSpy(sim.ledger, monkeypatch)

    async def go() -> None:
        dead: Terminal | None = None
        t2: Terminal | None = None
        try:
            dead = await terminal(data_dir)
            b = await build_unbalanced_batch(dead, sim)
            cut = PowerCut(k)
            dead.fault_hook = cut
            with pytest.raises(PowerLoss):
                await dead.settle(PASSWORD)
            assert cut.cut_before == SETTLE_ACTIONS[k], cut.labels
            await power_loss(dead)

            rows = durable_settlements(data_dir)
            marked = {int(r.stan) for r in durable_records(data_dir) if r.uploaded}
            assert len(rows) == (1 if k > SETTLE_ACTIONS.index("BeginSettlement") else 0), rows
            reply_recorded = k > REPLY_RECORDED_AT
            if rows:
                want = "REQUESTED" if not reply_recorded else "UPLOADING"
                if k > SETTLE_ACTIONS.index("RecordEndStan"):
                    want = "ENDING"  # the upload-end STAN is durable before it is sent
                if k > FINISHED_AT:
                    want = "DONE"
                assert rows[0].state == want, rows
                assert rows[0].uploaded_count == len(marked)

            spy.phase = "after"
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="posfw.app"):
                t2 = await terminal(data_dir)
            assert t2.journal is not None
            assert not set(spy.traces("after")) & marked, "a record flagged uploaded was sent again"

            if not reply_recorded:
                # Nothing changed: the request row (if any) is abandoned, no upload, no close.
                assert [r.state for r in durable_settlements(data_dir)] == ["ABANDONED"] * len(rows)
                assert t2.journal.open_settlement() is None
                assert t2.journal.current_batch() == b.number
                assert not spy.closes and not spy.uploads
                status = sim.ledger.terminal_status(TID)
                assert status is not None and status.batch == b.host_batch
                again = await t2.settle(PASSWORD)
                assert (again.status, again.message_key) == ("settled", "settled_unbalanced"), again
            else:
                # start() resumed the settlement from the cursor before anything else.
                if k <= FINISHED_AT:
                    assert "resuming an interrupted settlement" in caplog.text
                assert t2.journal.open_settlement() is None, t2.journal.open_settlement()
                assert t2.notice is None
            assert_settled_once(data_dir, sim, spy, b)
            assert_books_differ_only_by_the_resolved(t2, sim, b)
            # The next batch is usable at once.
            nxt = await sale(t2, 555)
            assert nxt.status == "approved", nxt
            assert nxt.record is not None and nxt.record.batch == f"{int(b.number) + 1:06d}"
        finally:
            await shut(t2, dead)

    run(go())


@pytest.mark.parametrize("resume_by", ["settle", "restart", "sale"])
def test_link_lost_mid_upload_blocks_sales_then_resumes(
        tmp_path: Path, sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch,
        resume_by: str) -> None:
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)
    spy = LedgerSpy(sim.ledger, monkeypatch)

    def drop_second_upload(index: int, action: object) -> None:
        if rec.labels.count("SendRequest/0320/201") == 2 and rec.labels[-1] == "SendRequest/0320/201":
            sim.add_fault("close", mti="0320", count=-1)  # until cleared: the link keeps dying

    rec = ActionRecorder(drop_second_upload)

    async def go() -> None:
        t: Terminal | None = None
        t2: Terminal | None = None
        try:
            t = await terminal(data_dir)
            b = await build_unbalanced_batch(t, sim)
            assert t.journal is not None
            t.fault_hook = rec
            first = await t.settle(PASSWORD)
            assert (first.status, first.message_key) == ("interrupted", "settlement_interrupted"), first
            t.fault_hook = None
            row = t.journal.open_settlement()
            assert row is not None and row.state == "UPLOADING" and row.uploaded_count == 8, row
            assert t.status()["settlement_open"] is True
            marked = {int(r.stan) for r in t.journal.records(batch=b.number) if r.uploaded}
            assert len(marked) == 8

            # While the settlement is open (and cannot finish), a sale is refused, unbooked.
            n_records, n_host = len(t.journal.records()), len(sim.ledger.rows(TID))
            refused = await sale(t, 900)
            assert (refused.status, refused.message_key) == ("refused", "settlement_interrupted"), refused
            assert len(t.journal.records()) == n_records and len(sim.ledger.rows(TID)) == n_host
            assert t.journal.open_settlement() is not None
            assert t.journal.current_batch() == b.number

            sim.clear_faults()
            spy.phase = "after"
            if resume_by == "settle":
                done = await t.settle(PASSWORD)
                assert (done.status, done.message_key) == ("settled", "settled_unbalanced"), done
                live = t
            elif resume_by == "restart":
                await t.close()
                t2 = await terminal(data_dir)
                live = t2
            else:
                ok = await sale(t, 900)
                assert ok.status == "approved", ok
                assert ok.record is not None and ok.record.batch == f"{int(b.number) + 1:06d}"
                live = t
            assert live.journal is not None and live.journal.open_settlement() is None
            assert not set(spy.traces("after")) & marked, "a record flagged uploaded was sent again"
            assert set(spy.traces("after")) == b.traces - marked
            assert_settled_once(data_dir, sim, spy, b)
            assert_books_differ_only_by_the_resolved(live, sim, b)
        finally:
            await shut(t2, t)

    run(go())


def test_link_lost_after_the_host_closed_the_batch_then_resumes(
        tmp_path: Path, sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """The host processes the upload end (closes the batch) and the link dies before the
    0330 arrives: the next settle must finish the settlement, not loop on it."""
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)
    spy = LedgerSpy(sim.ledger, monkeypatch)

    def drop_end_reply(index: int, action: object) -> None:
        if rec.labels[-1] == "SendRequest/0320/202":
            sim.add_fault("close", mti="0320", count=1)  # after processing: the host closed it

    rec = ActionRecorder(drop_end_reply)

    async def go() -> None:
        t: Terminal | None = None
        try:
            t = await terminal(data_dir)
            b = await build_unbalanced_batch(t, sim)
            assert t.journal is not None
            t.fault_hook = rec
            first = await t.settle(PASSWORD)
            assert (first.status, first.message_key) == ("interrupted", "settlement_interrupted"), first
            t.fault_hook = None
            assert spy.closes == [("before", b.host_batch)]
            spy.phase = "after"
            done = await t.settle(PASSWORD)
            assert (done.status, done.message_key) == ("settled", "settled_unbalanced"), done
            assert not spy.traces("after")
            assert_settled_once(data_dir, sim, spy, b)
            nxt = await sale(t, 555)
            assert nxt.status == "approved", nxt
        finally:
            await shut(t)

    run(go())


# Power lost just before the second MarkUploaded: the first 8 items are flagged, the
# last 4 reached the host unflagged. These are the actions start() then performs.
FIRST_CUT = len(SETTLE_ACTIONS) - 1 - SETTLE_ACTIONS[::-1].index("MarkUploaded")
RESUME_ACTIONS: tuple[str, ...] = (
    "LoadUploadItems", "AllocateStan", "SendRequest/0320/201", "MarkUploaded",
    "LoadUploadItems", "AllocateStan", "RecordEndStan", "SendRequest/0320/202", "FinishSettlement", "Finish",
)


def _resume_case(j: int) -> object:
    case_id = f"j{j}-{RESUME_ACTIONS[j].replace('/', '_')}"
    return pytest.param(j, id=case_id)


@pytest.mark.parametrize("j", [_resume_case(j) for j in range(len(RESUME_ACTIONS))])
def test_power_loss_again_during_the_start_up_resume(
        tmp_path: Path, sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch, j: int) -> None:
    """A second power loss while start() is resuming: the third start still finishes once."""
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)
    spy = LedgerSpy(sim.ledger, monkeypatch)

    async def go() -> None:
        first: Terminal | None = None
        second: Terminal | None = None
        third: Terminal | None = None
        try:
            first = await terminal(data_dir)
            b = await build_unbalanced_batch(first, sim)
            first.fault_hook = PowerCut(FIRST_CUT)
            with pytest.raises(PowerLoss):
                await first.settle(PASSWORD)
            await power_loss(first)
            marked = {int(r.stan) for r in durable_records(data_dir) if r.uploaded}
            assert len(marked) == 8

            spy.phase = "second"
            second = Terminal(AppConfig(data_dir=data_dir))
            cut = PowerCut(j)
            second.fault_hook = cut
            with pytest.raises(PowerLoss):
                await second.start()
            assert tuple(cut.labels) == RESUME_ACTIONS[:j + 1]
            await power_loss(second)
            marked_again = {int(r.stan) for r in durable_records(data_dir) if r.uploaded}

            spy.phase = "third"
            third = await terminal(data_dir)
            assert third.journal is not None and third.journal.open_settlement() is None
            assert not set(spy.traces("second")) & marked
            assert not set(spy.traces("third")) & marked_again
            assert_settled_once(data_dir, sim, spy, b)
            assert_books_differ_only_by_the_resolved(third, sim, b)
        finally:
            await shut(third, second, first)

    run(go())
