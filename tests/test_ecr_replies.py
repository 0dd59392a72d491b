"""Every ECR line gets exactly one reply line (issue 12, item 9), and an unexpected failure
inside the terminal is said in words, never as the exception's text (item 13).
"""

from __future__ import annotations

import json
import logging

from ecrkit import Link, ecr_terminal
from helpers import TID, TerminalProcess, run

from firmware.ecr.protocol import UNENCODABLE, encode_response

NESTED = b"[" * 1500 + b"]" * 1500

# Lines that got no reply at all; the first was even approved.
NO_REPLY_BEFORE = [
    b'{"op": "sale", "amount": 100, "card": "visa", "id": "\\ud800"}',
    b'{"op": {"name": "sale"}, "amount": 100}',
    b'{"op": ["sale"], "amount": 100}',
    NESTED,
    b'{"op": "status", "id": 1, "deep": ' + b"[" * 1500 + b"]" * 1500 + b"}",
]
# Ids a reply cannot carry back exactly: the request must not run.
UNECHOABLE_IDS = [b'"\\udc80"', b'{"till": 1}', b"[1]", b"1.5", str(2**64).encode(), b'"' + b"x" * 65 + b'"']


def test_every_line_gets_exactly_one_reply_line_and_an_unechoable_id_runs_nothing(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        link = Link(term.port, timeout=10)
        for line in NO_REPLY_BEFORE:
            link.send(line)
            reply = link.reply()
            assert reply["ok"] is False and reply["result"] == "error", (line[:60], reply)
        for request_id in UNECHOABLE_IDS:
            link.send(b'{"op": "sale", "amount": 100, "card": "visa", "id": ' + request_id + b"}")
            reply = link.reply()
            assert reply["ok"] is False and "nothing was done" in reply["message"], reply
            assert "id" not in reply, reply  # it could not be echoed as sent
        # Nothing else is on the line: the next reply is the next request's.
        assert link.ask(op="status", id="last")["id"] == "last"
        link.close()
    finally:
        term.stop()
    assert sim.ledger.rows(TID) == []


def test_a_reply_that_cannot_be_encoded_falls_back_to_one_safe_line():
    payload = {"id": "\ud800", "op": "sale", "ok": True, "result": "approved", "voucher": "000007",
               "detail": "caf\udce9", "odd": object(), "ratio": float("nan")}
    line = encode_response(payload)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    reply = json.loads(line.decode("utf-8"))  # valid UTF-8, valid JSON
    assert reply["id"] is None and "could not be echoed" in reply["id_note"]
    assert (reply["ok"], reply["result"], reply["voucher"]) == (True, "approved", "000007")
    assert reply["detail"].startswith("caf") and reply["ratio"] is None


def test_lists_in_a_reply_are_scrubbed_item_by_item_and_keep_their_order():
    """A reply whose lists (receipt lines, a job list) hold text that cannot be encoded is sent
    with each item made valid, in order, nested lists included: nothing is dropped."""
    line = encode_response({"ok": True, "lines": ["caf\udce9", "total 10.00", ("b\ud800", 7)]})
    reply = json.loads(line.decode("utf-8"))
    assert reply["ok"] is True
    lines = reply["lines"]
    assert [type(x) for x in lines] == [str, str, list]
    assert lines[0].startswith("caf") and lines[1] == "total 10.00"
    assert lines[2][0].startswith("b") and lines[2][1] == 7


def test_a_reply_nothing_can_encode_is_the_fixed_line_that_says_the_request_may_have_run():
    """When even the scrubbed reply cannot be encoded (a list that holds itself), the till still
    gets exactly one line: the fixed "failed" reply telling it to check last and status, since
    the request may have run."""
    loop: list = []
    loop.append(loop)
    line = encode_response({"id": 4, "ok": True, "result": "approved", "lines": loop})
    assert line == UNENCODABLE
    reply = json.loads(line.decode("utf-8"))
    assert (reply["ok"], reply["result"]) == (False, "failed")
    assert "check last and status" in reply["message"]


def test_a_reply_the_link_cannot_encode_still_reaches_the_till(data_dir, sim):
    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            t.status = lambda: {"notice": "broken \udcff text", "when": object()}
            link = Link(server.port)
            reply = await _ask(link, b'{"op": "status", "id": 9}')
            after = await _ask(link, b'{"op": "last", "id": 10}')
            link.close()
            return reply, after

    reply, after = run(go())
    assert reply["id"] == 9 and reply["ok"] is True and reply["notice"].startswith("broken")
    assert after["id"] == 10


def test_an_unexpected_failure_is_said_in_words_and_its_traceback_goes_to_the_log(
        data_dir, sim, caplog):
    def explode() -> dict:
        raise RuntimeError("secret internals 0x7f3a")

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            t.status = explode
            link = Link(server.port)
            reply = await _ask(link, b'{"op": "status", "id": "s1"}')
            link.close()
            return reply

    with caplog.at_level(logging.ERROR, logger="posfw.ecr"):
        reply = run(go())
    assert reply["id"] == "s1" and reply["ok"] is False and reply["result"] == "failed"
    assert "failed inside the terminal" in reply["message"] and "last" in reply["message"]
    assert "secret" not in json.dumps(reply) and "RuntimeError" not in json.dumps(reply)
    logged = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert "secret internals 0x7f3a" in logged  # the traceback is in the log, for support


async def _ask(link: Link, line: bytes) -> dict:
    """One request from a till thread while the terminal runs on this event loop."""
    import asyncio

    link.send(line)
    return await asyncio.to_thread(link.reply)


def test_reply_words_go_out_as_utf8_characters_a_scrubbed_reply_as_escapes():
    """A reply is UTF-8 text as written: Chinese words are sent as their characters, not as
    \\u escapes (a till's log shows them as the operator saw them). Only a reply that had to be
    scrubbed is sent as plain ASCII with \\u escapes, so that nothing left in it can break the
    line; the till reads the same words from both."""
    plain = encode_response({"ok": True, "message": "交易成功"})
    assert "交易成功".encode() in plain and b"\\u" not in plain
    scrubbed = encode_response({"ok": True, "message": "交易成功", "odd": "\udcff"})
    assert scrubbed.isascii() and json.loads(scrubbed)["message"] == "交易成功"


def test_a_scrubbed_reply_keeps_every_value_that_was_already_json():
    """Scrubbing a reply changes only what could not be sent: its id (when sendable) stays
    without a note, null, true, whole and finite numbers stay as they are, an infinite number
    becomes null, and a value that is not JSON at all is sent as its text."""
    line = encode_response({"id": 9, "ok": True, "code": None, "amount": 1234, "rate": 2.5,
                            "limit": float("inf"), "low": float("-inf"), "bad": "x\udcff",
                            "odd": object(), "table": {7: "seven"}})
    reply = json.loads(line)
    assert reply["id"] == 9 and "id_note" not in reply
    assert (reply["ok"], reply["code"], reply["amount"], reply["rate"]) == (True, None, 1234, 2.5)
    assert reply["limit"] is None and reply["low"] is None
    assert reply["bad"].startswith("x") and reply["odd"].startswith("<object object")
    assert reply["table"] == {"7": "seven"}


def test_a_reply_holding_nan_or_infinity_is_still_strict_json_with_null_there():
    """JSON has no NaN or Infinity, and a till's JSON library refuses a line holding them: a
    reply whose only flaw is such a number (a rate worked out from nothing) is sent with null
    in its place, everything else as it was, and the line reads as strict JSON."""
    def strict(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")

    for number in (float("nan"), float("inf"), float("-inf")):
        line = encode_response({"id": 3, "ok": True, "result": "echo", "rtt_ms": number})
        reply = json.loads(line, parse_constant=strict)
        assert reply == {"id": 3, "ok": True, "result": "echo", "rtt_ms": None}, line
