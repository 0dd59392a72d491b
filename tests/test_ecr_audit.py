"""Refused ECR requests are audited with the peer that sent them, and the peer's source reaches
password checks and settlement (issue 12, item 20, the ECR part); a flood of garbage is
collapsed, not written line by line into the journal.
"""

from __future__ import annotations

from ecrkit import Link
from helpers import PASSWORD, TerminalProcess, open_journal

PEER = "ecr tcp 127.0.0.1"


def audit_of(data_dir) -> list[tuple[str, str, str, str]]:
    journal = open_journal(data_dir)
    try:
        return [(who, action, detail, outcome) for _, who, action, detail, outcome
                in reversed(journal.audit_lines(10_000))]
    finally:
        journal.close()


def test_refusals_are_audited_by_source_and_a_flood_is_collapsed(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        link = Link(term.port)
        for n in range(300):
            link.send(b"garbage %d" % n)
            assert link.reply()["result"] == "error"
        link.send(b'{"op": "sale", "amount": 5, "card": "nope", "id": "bad-card"}')
        assert "unknown test card" in link.reply()["message"]
        link.close()
    finally:
        term.stop()  # the link closes: the counted refusals are written
    refused = [line for line in audit_of(data_dir) if line[3] == "refused"]
    assert all(who == PEER for who, *_ in refused), refused
    assert len(refused) == 2, refused  # the first at once, the rest as one line with a count
    first, summary = refused
    assert first[1] == "ecr request refused" and "not valid JSON" in first[2]
    assert summary[1] == "ecr requests refused" and summary[2].startswith("300 more in 60 s")
    assert "unknown test card" in summary[2]  # the last one refused, what and why


def test_password_checks_and_settlement_name_the_peer_that_asked(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        sale = term.request(op="sale", amount=700, card="visa")
        term.request(op="void", voucher=sale["voucher"], password="999999")
        term.request(op="settle", password="999999")
        term.request(op="held_park", amount=100, ref="T9")
        term.request(op="held_cancel", order=1, reason="other", password="999999")
        term.request(op="resolve_reversal", voucher="000001", password="999999", reason="x")
        settled = term.request(op="settle", password=PASSWORD)
    finally:
        term.stop()
    assert settled["result"] == "settled"
    passwords = [(who, action, outcome) for who, action, _, outcome in audit_of(data_dir)
                 if action.startswith("password for")]
    assert len(passwords) == 5 and all(who == PEER for who, *_ in passwords), passwords
    assert [outcome for *_, outcome in passwords] == ["wrong"] * 4 + ["ok"]
