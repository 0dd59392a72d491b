"""Every field of every ECR op is checked at the protocol edge, with the reason in words
(issue 12, item 13): no internal exception text ever reaches the till.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from ecrkit import ecr_terminal, until
from helpers import PASSWORD, TID, TerminalProcess, run

from firmware.app.services.registry import ecr_ops
from firmware.ecr.protocol import FIELD_CHECKS, MAX_LINE, OPS, EcrError, parse_request

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


# -- the ops and limits docs/ecr.md promises a till (issue 14: protocol.py table mutants) ----

ECR_DOC = Path(__file__).resolve().parent.parent / "docs" / "ecr.md"


def _doc_ops() -> dict[str, tuple[set[str], set[str]]]:
    """The "Requests" table of docs/ecr.md: op -> (required fields, optional fields)."""
    section = ECR_DOC.read_text().split("## Requests", 1)[1].split("\n## ", 1)[0]
    ops: dict[str, tuple[set[str], set[str]]] = {}
    for names, cell in re.findall(r"^\| (`[a-z_]+`(?: / `[a-z_]+`)*) \|\s*([^|]*?)\s*\|", section,
                                  re.MULTILINE):
        # "(`x`, `list`, `z`)" and "(MMDD)" say what a field holds, they name no field.
        cell = re.sub(r"\([^)]*\)", "", cell)
        required = {m[1] for item in cell.split(",")
                    if (m := re.fullmatch(r"\s*`([a-z_]+)`\s*", item))}
        optional = {m[1] for item in cell.split(",")
                    if (m := re.fullmatch(r"\s*\*`([a-z_]+)`\*\s*", item))}
        assert len(required) + len(optional) == len([i for i in cell.split(",") if i.strip()]), \
            f"docs/ecr.md: cannot read the fields of {names}: {cell!r}"
        for op in re.findall(r"`([a-z_]+)`", names):
            ops[op] = (required, optional)
    return ops


def test_every_op_takes_exactly_the_fields_docs_ecr_md_lists():
    """A till is wired to the Requests table of docs/ecr.md: every op there exists, needs
    exactly the fields it marks required and takes exactly the ones it marks optional, and no
    op exists that the table does not list (a dropped op, or one that lost or gained a field,
    breaks a till that followed the docs)."""
    code = {op: (set(required), set(optional))
            for op, (required, optional) in {**OPS, **ecr_ops()}.items()}
    assert code == _doc_ops()


@pytest.mark.parametrize("op", sorted(OPS))
def test_each_core_op_runs_with_its_required_fields_and_refuses_without_each(op: str):
    """Each op of the table parses with its required fields (and every optional one); leaving
    out any one required field is refused with words naming it."""
    required, optional = OPS[op]
    good = {"op": op, **{name: GOOD[name] for name in (*required, *optional)}}
    parsed = parse_request(json.dumps(good).encode())
    # What the op runs with: the values as sent, voucher and batch numbers padded to 6 digits.
    padded = {"voucher", "orig_voucher", "batch", "orig_batch"}
    assert (parsed.op, parsed.args) == (op, {k: str(v).zfill(6) if k in padded else v
                                             for k, v in good.items() if k != "op"})
    for name in required:
        with pytest.raises(EcrError, match=f"{op} needs {name}"):
            parse_request(json.dumps({k: v for k, v in good.items() if k != name}).encode())


# A valid value of every field (what a till following docs/ecr.md sends).
GOOD: dict[str, object] = {
    "amount": 1, "voucher": "1", "orig_voucher": 2, "orig_batch": "000001", "batch": 1,
    "orig_date": "0229", "orig_rrn": "ABC123def456", "password": "123456", "old": "1",
    "new": "654321", "pin": "1234", "card": "cup_debit", "ref": "T-1", "note": "", "reason": "r",
    "path": "/mnt/usb", "kind": "x", "job": 1, "order": 1, "print": True, "all": False,
}

# field -> (largest value refused below, smallest taken, largest taken, smallest refused above),
# as the "Checks, repeats and limits" section of docs/ecr.md gives them (None: no such value).
LIMITS: dict[str, tuple[object, object, object, object]] = {
    "amount": (0, 1, 999_999_999_999, 10**12),
    "voucher": ("", "1", "999999", "1000000"),
    "batch": ("", 0, 999_999, 1_000_000),
    "orig_voucher": ("", "0", "999999", "0000000"),
    "orig_batch": ("", "0", "999999", "0000000"),
    "orig_rrn": ("", "a", "Z" * 12, "1" * 13),
    "password": ("", "1", "1" * 12, "1" * 13),
    "old": ("", "0", "9" * 12, "9" * 13),
    "new": ("", "0", "9" * 12, "9" * 13),
    "pin": ("123", "1234", "1" * 12, "1" * 13),
    "job": (0, 1, 999_999_999, 1_000_000_000),
    "order": (0, 1, 999_999_999, 1_000_000_000),
    "card": ("", "a", "_" * 32, "a" * 33),
    "ref": ("", " ", "x" * 32, "x" * 33),
    "note": (None, "", "x" * 64, "x" * 65),
    "reason": ("", "x", "x" * 128, "x" * 129),
    "path": ("", "/", "x" * 255, "x" * 256),
    "kind": ("", "z", "x" * 8, "x" * 9),
}


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_each_field_takes_exactly_the_range_docs_ecr_md_gives(name: str):
    """Every limit of docs/ecr.md holds at both ends: the smallest and the largest value it
    allows are taken as they are, one less or one more is refused with words naming the field
    (an amount of 10^12 fen would not fit field 4; a 13-digit password is not one)."""
    below, low, high, above = LIMITS[name]
    check = FIELD_CHECKS[name]
    for value in (low, high):
        taken = check(name, value)
        assert taken == (str(value).zfill(6) if check is FIELD_CHECKS["voucher"] else value)
    for value in (below, above):
        if value is not None:
            with pytest.raises(EcrError, match=f"^{name} must"):
                check(name, value)


def test_a_card_name_is_letters_digits_and_underscore_only():
    """A test card is named by letters, digits and _ only (emulated boards): anything else,
    a path or a dot, is refused."""
    assert FIELD_CHECKS["card"]("card", "Visa_2") == "Visa_2"
    for bad in ("../x", "a.b", "a-b", "a b"):
        with pytest.raises(EcrError, match="card must be text of 1-32 letters, digits and _"):
            FIELD_CHECKS["card"]("card", bad)


@pytest.mark.parametrize(("request_id", "echoed"), [
    (2**53 - 1, True), (-(2**53 - 1), True), (2**53, False), (-(2**53), False),
    ("x" * 64, True), ("x", True), ("x" * 65, False), ("", False), ("a\nb", False),
    (True, False), (1.5, False), ([1], False),
])
def test_an_id_is_echoed_only_when_a_till_can_read_it_back_exactly(request_id, echoed: bool):
    """An id is a whole number up to 2^53-1 (either sign: what a JSON library holds exactly)
    or 1-64 printable characters; a request with any other id is refused, and its refusal
    carries no id."""
    line = json.dumps({"op": "status", "id": request_id}).encode()
    if echoed:
        assert parse_request(line).id == request_id
    else:
        with pytest.raises(EcrError, match=r"^id must be") as caught:
            parse_request(line)
        assert "id" not in caught.value.reply()


def test_a_wrong_value_is_shown_whole_up_to_40_characters_then_cut_to_40():
    """A refusal shows the wrong value as sent when it is at most 40 characters long, else its
    first 37 characters and "..." (40 in all): a till may send anything, of any length."""
    whole = "x" * 38  # shown as 'xxx...x': 40 characters with the quotes
    with pytest.raises(EcrError) as caught:
        FIELD_CHECKS["kind"]("kind", whole)
    assert str(caught.value).endswith(f"got {whole!r}")
    with pytest.raises(EcrError) as caught:
        FIELD_CHECKS["kind"]("kind", whole + "y")
    assert str(caught.value).endswith("got " + repr(whole + "y")[:37] + "...")


def test_an_unknown_field_is_named_as_sent_up_to_40_printable_characters():
    """A field the op does not take is named bare when it is at most 40 printable characters;
    a longer or unprintable name is shown as a value (quoted, cut to 40)."""
    for name, shown in (("f" * 40, "f" * 40), ("f" * 41, repr("f" * 41)[:37] + "..."),
                        ("a\tb", repr("a\tb"))):
        with pytest.raises(EcrError) as caught:
            parse_request(json.dumps({"op": "status", name: 1}).encode())
        assert str(caught.value) == f"status does not take {shown}"


def test_a_refusal_is_ok_false_result_error_with_words_and_only_an_echoable_id_and_known_op():
    """A refused request is answered ok false, result "error", with words; it names its id and
    op only where they can be sent back as they came (an op that is not text is not named)."""
    with pytest.raises(EcrError) as caught:
        parse_request(b'{"op": ["sale"], "id": 5, "amount": 1}')
    assert caught.value.reply() == {"id": 5, "ok": False, "result": "error",
                                    "message": str(caught.value)}
    assert str(caught.value).startswith("op must be text")
    with pytest.raises(EcrError) as caught:
        parse_request(b'{"op": "gift", "id": "T-2"}')
    assert set(caught.value.reply()) == {"id", "ok", "result", "message"}


def test_a_line_of_4096_bytes_parses_and_a_longer_one_is_refused_in_words():
    """A request line of up to 4096 bytes is read; a longer one is refused, saying so."""
    head = b'{"op": "status", "id": "'
    line = head + b"x" * (MAX_LINE - len(head) - 2) + b'"}'
    with pytest.raises(EcrError, match="id must be"):  # read (and refused for its long id)
        parse_request(line)
    with pytest.raises(EcrError, match=f"request longer than {MAX_LINE} bytes"):
        parse_request(line + b" ")


def test_an_old_field_name_is_answered_with_its_new_name_only_where_the_op_takes_it():
    """A till still sending trace/orig_trace is told the new name (voucher/orig_voucher) when
    the op takes it; an op that takes neither just does not take the old field."""
    with pytest.raises(EcrError, match="void does not take trace: name the original by its "
                                       "voucher number \\(voucher,"):
        parse_request(b'{"op": "void", "trace": "1", "password": "1"}')
    with pytest.raises(EcrError, match=r"refund does not take orig_trace: .*\(orig_voucher,"):
        parse_request(b'{"op": "refund", "orig_trace": "1", "amount": 1, "orig_rrn": "1", '
                      b'"orig_date": "0101", "password": "1"}')
    with pytest.raises(EcrError) as caught:
        parse_request(b'{"op": "status", "trace": "1"}')
    assert str(caught.value) == "status does not take trace"


def test_the_financial_ops_are_exactly_the_transaction_kinds_the_host_link_sends():
    """Every ECR op that moves money is one transaction kind of the host dialect, by the same
    name, and every kind has its op: none is run as a non-financial op, none is missing."""
    from firmware.ecr.protocol import FINANCIAL_OPS
    from firmware.host.messages import TxnKind

    assert set(FINANCIAL_OPS) == {kind.value for kind in TxnKind}


def test_the_print_queue_answers_while_an_operation_runs_paper_is_not_money(data_dir, sim):
    """One operation runs at a time (docs/ecr.md): while a sale waits for its card, a money op
    is answered busy, but each print queue op (reprint, print_test, print_jobs, print_confirm,
    print_cancel) is answered at once with its own result: paper is not money. The sale is
    then cancelled, and nothing reached the host."""
    async def ask(server, **request: object) -> dict:
        return await server.dispatch(parse_request(json.dumps(request).encode()))

    async def go() -> tuple[dict, dict]:
        async with ecr_terminal(data_dir) as (t, server):
            waiting = asyncio.create_task(ask(server, op="sale", amount=300))  # no card yet
            await until(lambda: t.busy, "the sale to wait for its card")
            answers = {"settle": await ask(server, op="settle", password=PASSWORD),
                       "reprint": await ask(server, op="reprint"),
                       "print_test": await ask(server, op="print_test")}
            job = answers["print_test"]["job"]
            answers["print_jobs"] = await ask(server, op="print_jobs")
            answers["print_confirm"] = await ask(server, op="print_confirm", job=job + 1,
                                                 print=True)
            answers["print_cancel"] = await ask(server, op="print_cancel", job=job)
            assert t.busy  # all of it while the sale still waited
            t.cancel("test")
            return answers, await waiting

    answers, sale = run(go())
    assert answers["settle"]["result"] == "busy", answers["settle"]
    assert answers["reprint"]["result"] == "none", answers["reprint"]  # no receipt yet
    assert answers["print_test"]["result"] == "queued", answers["print_test"]
    job = answers["print_test"]["job"]
    assert [j["job"] for j in answers["print_jobs"]["jobs"]] == [job], answers["print_jobs"]
    confirm = answers["print_confirm"]  # the queue's own words: that job does not exist
    assert (confirm["result"], confirm["message"]) == ("error", f"no print job {job + 1}")
    assert answers["print_cancel"]["result"] == "drop", answers["print_cancel"]
    assert sale["result"] == "cancelled", sale
    assert sim.ledger.rows(TID) == []
