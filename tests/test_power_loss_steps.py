"""Power loss between any two actions of a financial operation.

`Terminal.fault_hook` sees every action of a flow just before it is carried out.
For each operation (sale, void, refund, pre-auth, completion, balance) and each
action index k, the power goes just before action k: the Terminal object is
abandoned (its socket dies, its journal is never closed), a new Terminal starts
on the same files (recovery: PENDING -> REVERSAL_DUE, reversals and advices sent),
one more sale is made, and the batch must settle balanced on the first try with
the journal and the host's ledger agreeing record for record. k equal to the
number of actions is the power going just after the operator was told the result.

What the operator may be told is checked too: a record whose reply was not
durable before the loss is never APPROVED afterwards (a refund advice becomes
APPROVED only when its re-sent advice is acknowledged after the restart).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from faultkit import PowerCut, PowerLoss, action_label, durable_records, power_loss, shut
from helpers import (
    PASSWORD,
    TID,
    assert_agree,
    provision,
    refund,
    run,
    sale,
    swipe,
    terminal,
    void,
)

from board.sim.acquirer import SimulatorThread
from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.engine.model import OriginalRef, TxnRecord, TxnRequest, TxnResult
from firmware.host.messages import TxnKind

REPLY_TIMEOUT = 1.0

# The actions each operation performs when nothing goes wrong (proven by
# test_each_operation_performs_the_expected_actions with a recording hook).
ACTIONS: dict[str, tuple[str, ...]] = {
    "sale": ("AskCard", "WritePending", "SendRequest/0200", "WriteOutcome", "Finish"),
    "void": ("AskAuthorisation", "WritePending", "SendRequest/0200", "WriteOutcome", "Finish"),
    "refund": ("AskAuthorisation", "AskCard", "WritePending", "SendRequest/0220", "WriteOutcome",
               "Finish"),
    "preauth": ("AskCard", "WritePending", "SendRequest/0100", "WriteOutcome", "Finish"),
    "completion": ("WritePending", "SendRequest/0200", "WriteOutcome", "Finish"),
    "balance": ("AskCard", "AskPin", "WritePending", "SendRequest/0200", "WriteOutcome", "Finish"),
}
OPS = tuple(ACTIONS)


def _case_id(op: str, k: int) -> str:
    steps = ACTIONS[op]
    label = steps[k].replace("/", "_") if k < len(steps) else "after_result"
    return f"{op}-k{k}-{label}"


CASES = [pytest.param(op, k, id=_case_id(op, k)) for op in OPS for k in range(len(ACTIONS[op]) + 1)]


async def prepare(t: Terminal, op: str) -> dict[str, TxnRecord]:
    """The transactions an operation needs first (its original)."""
    if op in ("void", "refund"):
        first = await sale(t, 1500)
        assert first.status == "approved", first
        assert first.record is not None
        return {"original": first.record}
    if op == "completion":
        pa = await t.financial(TxnRequest(TxnKind.PREAUTH, 3000), OperatorInput(card=swipe("visa")))
        assert pa.status == "approved", pa
        assert pa.record is not None
        return {"original": pa.record}
    return {}


async def perform(t: Terminal, op: str, setup: dict[str, TxnRecord]) -> TxnResult:
    orig = setup.get("original")
    if op == "sale":
        return await sale(t, 1000)
    if op == "void":
        assert orig is not None
        return await void(t, orig.invoice)
    if op == "refund":
        assert orig is not None and orig.rrn is not None
        return await refund(t, 500, orig.rrn, orig.local_date)
    if op == "preauth":
        return await t.financial(TxnRequest(TxnKind.PREAUTH, 2000), OperatorInput(card=swipe("visa")))
    if op == "completion":
        assert orig is not None
        return await t.financial(
            TxnRequest(TxnKind.COMPLETION, 2500, original=OriginalRef(invoice=orig.invoice)),
            OperatorInput(),
        )
    if op == "balance":
        return await t.financial(TxnRequest(TxnKind.BALANCE),
                                 OperatorInput(card=swipe("cup_debit"), pin="123456"))
    raise AssertionError(op)


@pytest.mark.parametrize("op", OPS)
def test_each_operation_performs_the_expected_actions(tmp_path: Path, sim: SimulatorThread,
                                                      op: str) -> None:
    """The action counts the power-loss cases are built on, recorded from a clean run."""
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)
    labels: list[str] = []

    async def go() -> TxnResult:
        t = await terminal(data_dir)
        try:
            setup = await prepare(t, op)
            t.fault_hook = lambda action: labels.append(action_label(action))
            return await perform(t, op, setup)
        finally:
            await shut(t)

    result = run(go())
    assert result.status == "approved", result
    assert tuple(labels) == ACTIONS[op]


@pytest.mark.parametrize(("op", "k"), CASES)
def test_power_loss_before_action_k_then_restart_settles_balanced(
        tmp_path: Path, sim: SimulatorThread, op: str, k: int) -> None:
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)
    steps = ACTIONS[op]
    sent_index = next(i for i, s in enumerate(steps) if s.startswith("SendRequest"))
    outcome_index = steps.index("WriteOutcome")

    async def go() -> None:
        dead: Terminal | None = None
        t2: Terminal | None = None
        try:
            dead = await terminal(data_dir)
            setup = await prepare(dead, op)
            known = {r.id for r in durable_records(data_dir)}
            cut = PowerCut(k)
            dead.fault_hook = cut
            result: TxnResult | None = None
            if k < len(steps):
                with pytest.raises(PowerLoss):
                    await perform(dead, op, setup)
                assert cut.cut_before == steps[k], (cut.labels, steps)
            else:
                result = await perform(dead, op, setup)
                assert result.status == "approved", result
            assert cut.labels == list(steps[:k + 1] if k < len(steps) else steps)
            await power_loss(dead)

            # What the journal file holds at the moment of the loss.
            new = [r for r in durable_records(data_dir) if r.id not in known]
            assert len(new) == (1 if k > steps.index("WritePending") else 0), new
            before = new[0] if new else None
            if before is not None:
                expected = "ADVICE_DUE" if op == "refund" else "PENDING"
                if k > outcome_index:
                    expected = "APPROVED"
                assert before.state == expected, (before, cut.labels)

            # A new terminal on the same files: start() recovers and clears what is owed.
            t2 = await terminal(data_dir)
            assert t2.service_problem is None
            assert t2.last_result is None  # nothing was reported to the operator by the restart
            assert t2.journal is not None
            assert not any(t2.journal.unresolved_counts().values())
            assert t2.journal.open_settlement() is None

            if before is not None:
                after = t2.journal.get(before.id)
                host = sim.ledger.find(TID, int(before.batch), int(before.stan))
                sent = k > sent_index
                if before.state == "PENDING":
                    # The reply never became durable: never APPROVED, whatever the host did.
                    want = "FAILED" if op == "balance" else "REVERSED"
                    assert after.state.value == want, (after, cut.labels)
                    assert (host is not None) == sent, host
                    if op != "balance":
                        assert sim.ledger.reversal_seen(TID, int(before.batch), int(before.stan))
                        assert host is None or host.state != "approved", host
                    audit = [line[2] for line in t2.journal.audit_lines(200)]
                    assert "start-up recovery" in audit
                elif before.state == "ADVICE_DUE":
                    # The advice is sent again after the restart; its acknowledgement is recorded.
                    assert after.state.value == "APPROVED", after
                    assert after.advice_attempts >= 1
                    assert host is not None and host.state == "approved" and host.kind == "refund"
                else:
                    assert after.state.value == before.state
                    assert host is not None and host.state == "approved", host
                if op == "void":
                    original = t2.journal.get(setup["original"].id)
                    want_orig = "VOIDED" if after.state.value == "APPROVED" else "APPROVED"
                    assert original.state.value == want_orig, (original, after)
                if op == "completion":
                    assert t2.journal.get(setup["original"].id).state.value == "APPROVED"

            follow = await sale(t2, 700)
            assert follow.status == "approved", follow
            settled = await t2.settle(PASSWORD)
            assert settled.status == "settled", settled
            assert settled.message_key == "settled_balanced", (op, k, settled)
            assert_agree(t2.journal, sim.ledger)
            closed = sim.ledger.settlements(TID)
            assert [s["closed"] for s in closed] == [True], closed
        finally:
            await shut(t2, dead)

    run(go())


@pytest.mark.parametrize("decision", ["00", "05"], ids=["host_approved", "host_declined"])
def test_power_loss_before_the_advice_reply_is_recorded_keeps_the_hosts_outcome(
        tmp_path: Path, sim: SimulatorThread, decision: str) -> None:
    """The refund advice reached the host and was decided; the power went before the reply
    was written. After the restart the journal must hold the host's decision (and its RRN),
    never an approval the host did not give."""
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)
    k = ACTIONS["refund"].index("WriteOutcome")

    async def go() -> None:
        dead: Terminal | None = None
        t2: Terminal | None = None
        try:
            dead = await terminal(data_dir)
            setup = await prepare(dead, "refund")
            sim.add_rule(decision, mti="0220", count=1)
            dead.fault_hook = PowerCut(k)
            with pytest.raises(PowerLoss):
                await perform(dead, "refund", setup)
            await power_loss(dead)
            before = durable_records(data_dir)[-1]
            assert before.kind == "refund" and before.state == "ADVICE_DUE"
            host = sim.ledger.find(TID, int(before.batch), int(before.stan))
            assert host is not None and host.response_code == decision

            t2 = await terminal(data_dir)
            assert t2.journal is not None
            after = t2.journal.get(before.id)
            want = "APPROVED" if decision == "00" else "DECLINED"
            assert (after.state.value, after.response_code, after.rrn) == (want, decision, host.rrn)
            settled = await t2.settle(PASSWORD)
            assert settled.message_key == "settled_balanced", settled
            assert_agree(t2.journal, sim.ledger)
        finally:
            await shut(t2, dead)

    run(go())


REVERSAL_ACTIONS = ("SendRequest/0400", "WriteOutcome")


@pytest.mark.parametrize("op", ["sale", "void", "completion"])
@pytest.mark.parametrize("j", range(len(REVERSAL_ACTIONS)),
                         ids=[a.replace("/", "_") for a in REVERSAL_ACTIONS])
def test_power_loss_again_during_the_start_up_reversal(
        tmp_path: Path, sim: SimulatorThread, op: str, j: int) -> None:
    """The host approved; the power went before the reply was written; the power goes again
    while start() sends the reversal. The third start still reverses it exactly once."""
    data_dir = provision(tmp_path / "t", sim.port, reply_timeout=REPLY_TIMEOUT)

    async def go() -> None:
        first: Terminal | None = None
        second: Terminal | None = None
        third: Terminal | None = None
        try:
            first = await terminal(data_dir)
            setup = await prepare(first, op)
            first.fault_hook = PowerCut(ACTIONS[op].index("WriteOutcome"))
            with pytest.raises(PowerLoss):
                await perform(first, op, setup)
            await power_loss(first)
            victim = durable_records(data_dir)[-1]
            assert victim.state == "PENDING"
            host = sim.ledger.find(TID, int(victim.batch), int(victim.stan))
            assert host is not None and host.state == "approved"

            second = Terminal(AppConfig(data_dir=data_dir))
            cut = PowerCut(j)
            second.fault_hook = cut
            with pytest.raises(PowerLoss):
                await second.start()
            assert tuple(cut.labels) == REVERSAL_ACTIONS[:j + 1]
            await power_loss(second)
            assert durable_records(data_dir)[-1].state == "REVERSAL_DUE"

            third = await terminal(data_dir)
            assert third.journal is not None
            assert third.journal.get(victim.id).state.value == "REVERSED"
            host = sim.ledger.find(TID, int(victim.batch), int(victim.stan))
            assert host is not None and host.state == "reversed"
            assert len([r for r in sim.ledger.reversals(TID)
                        if (r["batch"], r["stan"]) == (int(victim.batch), int(victim.stan))]) == 1
            follow = await sale(third, 700)
            assert follow.status == "approved", follow
            settled = await third.settle(PASSWORD)
            assert settled.message_key == "settled_balanced", settled
            assert_agree(third.journal, sim.ledger)
        finally:
            await shut(third, second, first)

    run(go())
