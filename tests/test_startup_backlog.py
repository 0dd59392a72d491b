"""Start-up never blocks the till, and one record that cannot be sent never disables the terminal
(issue 12, items 1 and 8). The terminal runs as a real process over its ECR port.
"""

from __future__ import annotations

import time

import pytest
from helpers import PASSWORD, TerminalProcess, open_journal, provision, run, sale, terminal
from wiretap import WireTap

from firmware.engine.model import PendingDraft
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.codec import decode
from firmware.host.messages import TxnKind
from firmware.journal.store import Journal

PAN = "6222020000000000012"


def _journal(data_dir) -> Journal:
    return open_journal(data_dir)


def _draft(kind: TxnKind, amount: int, **kw) -> PendingDraft:
    return PendingDraft(kind, amount, "156", PAN, "622202******0012", False, "swipe", False, "01",
                        "1201", "101010", **kw)


def test_the_ecr_link_opens_at_once_and_money_waits_for_the_reversals(tmp_path, sim):
    """Two reversals are owed and the host takes 2 s to answer each (3 s reply timeout): the
    port opened only after every one had been tried. Now `status` answers at once and money is
    refused in words until they are done."""
    data_dir = provision(tmp_path / "terminal", sim.port, reply_timeout=3.0)
    j = _journal(data_dir)
    for amount in (1000, 2000):
        record = j.begin(_draft(TxnKind.SALE, amount))
        j.apply(record.id, TxnEvent.LOSE_REPLY, reversal_reason="98")
    j.close()
    sim.add_fault("delay", mti="0400", count=2, seconds=2.0, process=True)
    term = TerminalProcess(data_dir)
    term.start(wait_idle=False)
    try:
        status = term.request(op="status")
        assert status["busy"] is True, status
        sale = term.request(op="sale", amount=500, card="cup_credit")
        assert sale["result"] == "busy" and not sale["ok"], sale
        assert "sending reversals" in sale["message"] or "starting up" in sale["message"], sale
        seen_left = set()
        deadline = time.monotonic() + 30
        while (status := term.request(op="status"))["busy"]:
            seen_left.add(status["backlog_left"])
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        assert seen_left & {1, 2}, seen_left  # the count of what is left, while it drains
        assert status["unresolved"]["REVERSAL_DUE"] == 0
        assert term.request(op="sale", amount=500, card="cup_credit")["result"] == "approved"
    finally:
        term.stop()


def test_a_record_that_cannot_be_sent_is_quarantined_and_the_terminal_works_on(tmp_path, sim):
    """A refund advice with no original RRN (written by an older firmware; the wire cannot carry
    it): start-up exited 1 on it, and every sale failed with the same internal error."""
    data_dir = provision(tmp_path / "terminal", sim.port)
    j = _journal(data_dir)
    bad = j.begin(_draft(TxnKind.REFUND, 700, advice=True, orig_date="1130"))
    j.close()
    term = TerminalProcess(data_dir)
    term.start()  # it starts: exit status 1 before
    try:
        status = term.request(op="status")
        assert status["unresolved"]["QUARANTINED"] == 1
        [aside] = status["quarantined"]
        assert aside["voucher"] == bad.invoice and "RRN" in aside["problem"]
        assert term.request(op="sale", amount=1200, card="cup_credit")["result"] == "approved"
        refused = term.request(op="settle", password=PASSWORD)
        assert refused["result"] == "refused" and refused["message"], refused
        review = term.request(op="review")["review"]
        assert any(p["kind"] == "quarantined" for p in review["pending"])
        assert any(a["kind"] == "quarantined" and a["actions"] == ["resolve"]
                   for a in review["anomalies"])
        wrong = term.request(op="resolve_reversal", voucher=bad.invoice, password="135791",
                             reason="refund made by bank transfer")
        assert wrong["ok"] is False
        resolved = term.request(op="resolve_reversal", voucher=bad.invoice, password=PASSWORD,
                                reason="refund made by bank transfer")
        assert resolved["ok"] is True and resolved["state"] == "RESOLVED_MANUALLY", resolved
        settled = term.request(op="settle", password=PASSWORD)
        assert settled["result"] == "settled", settled
    finally:
        term.stop()
    j = _journal(data_dir)
    try:
        actions = [(a, d, o) for _, _, a, d, o in j.audit_lines(100)]
        assert any(a == "refund quarantine" and "RRN" in d for a, d, _ in actions)
        assert any(a == "manual quarantined record resolution" and "bank transfer" in d
                   for a, d, _ in actions)
    finally:
        j.close()


def _reversals_on_the_wire(tap: WireTap) -> list[str]:
    """The STAN of every 0400 the terminal sent, in order, as the bytes crossed."""
    sent = [decode(f.payload).message for f in tap.frames() if f.to_host]
    return [m.fields["11"] for m in sent if m.mti == "0400"]


@pytest.mark.parametrize("retries", [1, 3])
def test_an_owed_reversal_is_sent_exactly_reversal_retries_times_per_pass_then_kept(
        tmp_path, sim, retries: int):
    """docs/states.md: each backlog pass (start-up, before each online transaction, before
    settlement) sends an owed reversal up to `reversal_retries` times, stopping at 00 or 25.
    Here the host refuses every 0400 with 96: start-up sends exactly `retries` of them, never one
    more or one fewer, and then gives up for this pass; the record stays REVERSAL_DUE with each
    attempt counted, and settlement is refused after its own pass of `retries` more. Once the
    host takes reversals again, the next sale's pass reverses it with one 0400."""
    tap = WireTap(sim.port)
    data_dir = provision(tmp_path / "terminal", tap.port, reversal_retries=retries)
    j = _journal(data_dir)
    owed = j.apply(j.begin(_draft(TxnKind.SALE, 4100)).id, TxnEvent.LOSE_REPLY,
                   reversal_reason="98")
    j.close()
    sim.add_rule("96", mti="0400")  # until cleared

    async def go():
        t = await terminal(data_dir)  # start-up: sign-on, then the backlog pass
        try:
            at_start = (_reversals_on_the_wire(tap), t.journal.get(owed.id))
            settle = await t.settle(PASSWORD)
            at_settle = (_reversals_on_the_wire(tap), t.journal.get(owed.id), settle)
            sim.clear_rules()
            sold = await sale(t, 600)
            return at_start, at_settle, (_reversals_on_the_wire(tap), t.journal.get(owed.id), sold)
        finally:
            await t.close()

    try:
        (sent, kept), (sent2, kept2, settle), (sent3, done, sold) = run(go())
    finally:
        tap.close()
    assert sent == [owed.stan] * retries
    assert kept.state is TxnState.REVERSAL_DUE and kept.reversal_attempts == retries
    assert sent2 == [owed.stan] * (2 * retries)
    assert kept2.state is TxnState.REVERSAL_DUE and kept2.reversal_attempts == 2 * retries
    assert (settle.status, settle.message_key) == ("refused", "settlement_blocked"), settle
    assert "1 reversal(s)" in settle.detail
    assert sent3 == [owed.stan] * (2 * retries + 1)
    assert done.state is TxnState.REVERSED and done.reversal_attempts == 2 * retries + 1
    assert sold.status == "approved"
