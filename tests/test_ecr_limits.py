"""The ECR link's limits (issue 12, item 12): connections capped and closed when idle, so a
flood of half-open connections cannot take the descriptors the till needs.
"""

from __future__ import annotations

import json
import os
import time

from ecrkit import Link, set_comms
from helpers import TerminalProcess


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def until(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_connections_over_the_cap_get_one_line_in_words_and_are_closed(data_dir, sim):
    set_comms(data_dir, ecr_max_connections=3)
    term = TerminalProcess(data_dir)  # holds one connection of its own
    term.start()
    try:
        assert term.proc is not None
        held = [Link(term.port) for _ in range(2)]  # with the helper's: the cap
        assert held[0].ask(op="status", id=1)["ok"] is True
        baseline = open_fds(term.proc.pid)
        for _ in range(50):
            extra = Link(term.port, timeout=10)
            reply = json.loads(extra.raw_reply())
            assert reply["ok"] is False and "Too many ECR connections" in reply["message"], reply
            until(extra.closed_by_peer, "the over-cap connection to be closed")
            extra.close()
        until(lambda: open_fds(term.proc.pid) <= baseline, "the refused connections' descriptors")
        assert term.request(op="status")["ok"] is True  # the till's own connection still works
        held.pop().close()
        until(lambda: open_fds(term.proc.pid) < baseline, "the closed connection's descriptor")
        fresh = Link(term.port)
        assert fresh.ask(op="status", id=2)["id"] == 2  # its slot is free again
        fresh.close()
        for link in held:
            link.close()
    finally:
        term.stop()
    log = (data_dir / "terminal.log").read_text()
    assert log.count("ecr connection refused from ecr tcp 127.0.0.1") == 1  # then counted


def test_idle_connections_are_closed_but_not_while_their_request_runs(data_dir, sim):
    set_comms(data_dir, ecr_idle_timeout_s=1, ecr_max_connections=3)
    term = TerminalProcess(data_dir)
    term.start()
    try:
        idle = Link(term.port)
        waiting = Link(term.port)
        waiting.send(b'{"op": "sale", "amount": 300, "id": "S"}')  # waits for a card
        until(lambda: term.request(op="status")["busy"], "the sale to wait for its card")
        until(idle.closed_by_peer, "the idle connection to be closed")
        assert not waiting.closed_by_peer()  # its request is still running
        presented = Link(term.port)
        assert presented.ask(op="present_card", card="visa")["ok"] is True
        assert waiting.reply()["result"] == "approved"
        for link in (idle, waiting, presented):
            link.close()
    finally:
        term.stop()
