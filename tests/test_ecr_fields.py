"""Every field of every ECR op is checked at the protocol edge, with the reason in words
(issue 12, item 13): no internal exception text ever reaches the till.
"""

from __future__ import annotations

import json

import pytest
from helpers import PASSWORD, TID, TerminalProcess

from firmware.app_companions import ecr_ops
from firmware.ecr.protocol import FIELD_CHECKS, OPS, EcrError, parse_request

HUGE = 10**30

# (request, the field the refusal must name); each gave "internal error: ..." or an exception's
# text ("Python int too large to convert to SQLite INTEGER") before.
REFUSED_OVER_THE_LINK = [
    ({"op": "print_confirm", "job": HUGE, "print": True}, "job"),
    ({"op": "print_cancel", "job": HUGE}, "job"),
    ({"op": "held_resume", "order": HUGE}, "order"),
    ({"op": "held_trail", "order": HUGE}, "order"),
    ({"op": "held_cancel", "order": HUGE, "reason": "other", "password": PASSWORD}, "order"),
    ({"op": "held_park", "amount": HUGE, "ref": "T1"}, "amount"),
    ({"op": "sale", "amount": 100, "card": "cup_debit", "pin": "12ab56"}, "pin"),
    ({"op": "sale", "amount": 100, "card": "cup_debit", "pin": "12"}, "pin"),
    ({"op": "deregister", "password": PASSWORD, "path": ["/mnt"]}, "path"),
    ({"op": "held_park", "amount": 100, "ref": "T1", "note": "line\nbreak"}, "note"),
    ({"op": "held_park", "amount": 100, "ref": "x" * 33}, "ref"),
    ({"op": "refund", "amount": 1, "orig_rrn": "12345678901234", "orig_date": "0101",
      "password": PASSWORD}, "orig_rrn"),
    ({"op": "refund", "amount": 1, "orig_rrn": "123456789012", "orig_date": "1340",
      "password": PASSWORD}, "orig_date"),
    ({"op": "void", "voucher": "000001", "password": "secret"}, "password"),
]


def test_bad_fields_are_refused_in_words_over_the_link(data_dir, sim):
    term = TerminalProcess(data_dir)
    term.start()
    try:
        for request, name in REFUSED_OVER_THE_LINK:
            reply = term.request(timeout=10, **request)
            assert reply["ok"] is False and reply["result"] == "error", (request, reply)
            text = json.dumps(reply)
            assert reply["message"].startswith(name), (request, reply)
            for leak in ("Python", "SQLite", "internal error", "Traceback", "12ab56"):
                assert leak not in text, (request, reply)
        assert term.request(op="status")["ok"] is True
    finally:
        term.stop()
    assert sim.ledger.rows(TID) == []


def test_every_field_of_every_op_has_a_check():
    fields = {name for ops in (OPS, ecr_ops()) for required, optional in ops.values()
              for name in (*required, *optional)}
    assert fields <= set(FIELD_CHECKS), sorted(fields - set(FIELD_CHECKS))


def test_a_field_nobody_checks_is_refused_not_passed_through():
    with pytest.raises(EcrError, match="not checked by this firmware"):
        parse_request(b'{"op": "gift", "colour": "red"}', {"gift": (("colour",), ())})


@pytest.mark.parametrize(("line", "words"), [
    (b'{"op": "held_park", "amount": 1, "ref": "T\\u0000"}', "ref must be text of 1-32 printable"),
    (b'{"op": "held_park", "amount": 1, "ref": ""}', "ref must be text of 1-32"),
    (b'{"op": "held_park", "amount": 1, "ref": 7}', "ref must be text"),
    (b'{"op": "print_confirm", "job": 0, "print": true}', "job must be a print job number"),
    (b'{"op": "print_confirm", "job": 3, "print": 1}', "print must be true or false"),
    (b'{"op": "held_trail", "order": "3"}', "order must be a held order number"),
    (b'{"op": "sale", "amount": 1000000000000}', "at most 999999999999"),
    (b'{"op": "sale", "amount": 1, "pin": "\\uff11\\uff12\\uff13\\uff14"}', "pin must be a PIN of 4-12"),
    (b'{"op": "sale", "amount": 1, "card": "../../etc"}', "card must be text"),
    (b'{"op": "resolve_reversal", "voucher": "1", "password": "1", "reason": ""}', "reason must be"),
    (b'{"op": "print_report", "kind": "xxxxxxxxx"}', "kind must be text"),
    (b'{"op": "set_password", "old": "000000", "new": 123456}', "new must be"),
])
def test_field_refusals_say_what_is_wrong(line: bytes, words: str):
    with pytest.raises(EcrError, match=words):
        parse_request(line, ecr_ops())


def test_a_refusal_names_its_request_where_it_can():
    with pytest.raises(EcrError) as caught:
        parse_request(b'{"op": "sale", "id": "T-1", "amount": -1}')
    assert caught.value.reply()["id"] == "T-1" and caught.value.reply()["op"] == "sale"
