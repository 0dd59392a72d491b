"""The ECR link's limits (issue 12, item 12): connections capped and closed when idle, so a
flood of half-open connections cannot take the descriptors the till needs.
"""

from __future__ import annotations

import json
import os
import time

from ecrkit import Link, set_comms
from helpers import TerminalProcess

from firmware.ecr.protocol import MAX_LINE, LineFramer, Overlong


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


# -- the line limit, in-process (the framer both the TCP and the serial link use)

def test_a_line_of_4096_bytes_is_a_request_one_byte_more_is_refused_once():
    """A request line is at most 4096 bytes (without its newline): one of exactly 4096 is
    handed on whole, one of 4097 is refused once, and the next line is a request again."""
    assert MAX_LINE == 4096
    framer = LineFramer()
    at_limit, over = b"a" * MAX_LINE, b"b" * (MAX_LINE + 1)
    out = framer.feed(at_limit + b"\n" + over + b"\n" + b'{"op":"status"}\n')
    assert out[0] == at_limit and isinstance(out[1], Overlong) and out[2:] == [b'{"op":"status"}']


def test_an_overlong_line_cut_into_reads_is_refused_once_and_its_tail_never_runs():
    """However an over-long line is cut into reads, it is refused once when more than 4096
    bytes are waiting with no newline, and all of it up to its newline is discarded: no tail of
    it runs as a request. 4096 bytes waiting is not yet too long."""
    framer = LineFramer()
    assert framer.feed(b"x" * MAX_LINE) == []  # at the limit: may still end here
    assert framer.feed(b"\n") == [b"x" * MAX_LINE]
    refused = framer.feed(b"y" * (MAX_LINE + 1))
    assert len(refused) == 1 and isinstance(refused[0], Overlong)
    assert framer.feed(b'{"op":"sale","amount":1}' * 10) == []  # the tail: discarded
    assert framer.feed(b'","amount":1}\n\n  \n{"op":"last"}\n{"op":') == [b'{"op":"last"}']
    assert framer.feed(b'"echo"}\n') == [b'{"op":"echo"}']


def test_blank_lines_are_skipped_and_every_line_of_one_read_is_handed_on_in_order():
    """Blank lines (spaces only, or empty, even first in a read) are no requests; several lines
    in one read are handed on in order."""
    framer = LineFramer()
    assert framer.feed(b'\n \t\n{"op":"status"}\n\n{"op":"last"}\n{"op"') == [
        b'{"op":"status"}', b'{"op":"last"}']
    assert framer.feed(b':"echo"}\n') == [b'{"op":"echo"}']


def test_a_peer_that_never_ends_its_line_cannot_make_the_terminal_hold_more_than_a_line():
    """A peer sending bytes without a newline, forever, is refused once, and the terminal keeps
    at most one line's worth (4096 bytes) of it, not all of it (the framer's buffer is read
    directly: memory is the rule here)."""
    framer = LineFramer()
    refusals = [r for _ in range(64) for r in framer.feed(b"z" * 1000)]
    assert len(refusals) == 1 and isinstance(refusals[0], Overlong)
    assert len(framer._buffer) <= MAX_LINE
