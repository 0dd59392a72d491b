"""Every host response code in the catalog, answered to a real sale (issue 14).

Only 00 moves money. The terminal talks to the acquirer simulator over loopback TCP; a decision
rule makes the host answer each code of firmware/engine/codes.py in turn (and one code the
catalog does not know). For every code but 00 the sale must end declined, with that code and
its words in both languages, the journal must hold it as DECLINED and nothing may be owed;
at the end the terminal's journal and the host's ledger agree sale for sale.

55 (wrong PIN) is declined with the PIN's own words (tries left); tests/test_wrong_pin.py owns
the re-prompt and the count of tries.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from helpers import assert_agree, run, sale, terminal

from firmware.engine.codes import CODES, ActionClass, ResponseCode, lookup
from firmware.host.channel import SIGN_ON_CODES
from firmware.i18n import text

# A code the catalog does not know: it must decline too, as "Transaction failed (XX)".
UNKNOWN = "N7"
EVERY_CODE = [*sorted(CODES), UNKNOWN]
APPROVAL_CODES = {c for c, rc in CODES.items() if rc.action is ActionClass.SUCCESS}


def test_the_catalog_has_one_approval_code_and_it_is_00():
    """The table below relies on it: any other success code would need its own rule."""
    assert {"00"} == APPROVAL_CODES
    assert {"01", "05", "51", "55"} <= set(CODES)


DIALECT = Path(__file__).resolve().parent.parent / "docs" / "dialect.md"


def documented_codes() -> dict[str, ResponseCode]:
    """The rows of the "Response codes (field 39)" table in docs/dialect.md."""
    section = DIALECT.read_text(encoding="utf-8").split("## Response codes (field 39)", 1)[1]
    section = section.split("\n#", 1)[0]
    rows = re.findall(r"^\| ([0-9A-Z]{2}) \| ([^|]+?) \| ([^|]+?) \| ([a-z_]+) \|$", section,
                      re.MULTILINE)
    table = {c: ResponseCode(c, en, zh, ActionClass(a)) for c, en, zh, a in rows}
    assert len(table) == len(rows), "a code is listed twice in docs/dialect.md"
    return table


def test_every_response_code_has_the_documented_words_and_class():
    """The catalog is the table in docs/dialect.md, row for row: each code's English and Chinese
    words (what the operator reads on a decline) and its class (what may follow: a stored refund
    answered "do not retry" is finally declined, "retry" keeps it). A code dropped, given
    another code's words or class, or garbled fails here; a code the catalog does not know reads
    "Transaction failed (XX)" in both languages, of class system."""
    documented = documented_codes()
    assert len(documented) >= 40  # the parser found the table
    assert documented == CODES
    assert [*documented] == [*CODES]  # in the same order (the doc is read top to bottom)
    assert lookup(UNKNOWN) == ResponseCode(UNKNOWN, f"Transaction failed ({UNKNOWN})",
                                           f"交易失败 ({UNKNOWN})", ActionClass.SYSTEM)
    assert lookup(UNKNOWN).text("zh_CN") == f"交易失败 ({UNKNOWN})"
    assert lookup("05").text("en") == "Do not honour" and lookup("05").text("zh") == "不予承兑"
    with pytest.raises(dataclasses.FrozenInstanceError):  # one entry serves every decline:
        CODES["05"].en = "Approved"  # type: ignore[misc]  # nothing may reword it at run time


def test_the_operator_is_told_to_sign_on_again_exactly_when_the_link_does():
    """The codes whose words say "sign on again" are the codes after which the host link signs
    on before the next request (22, 77, 99, A0): never told to sign on for nothing, never a
    silent re-sign-on the words do not explain."""
    told = {c for c, rc in CODES.items() if rc.en.endswith("sign on again")}
    assert told == set(SIGN_ON_CODES) == {"22", "77", "99", "A0"}
    assert all(CODES[c].action is ActionClass.OPERATOR for c in told)


def test_only_00_approves_a_sale_every_other_host_code_declines_it(data_dir, sim):
    """A sale answered 01 (refer to issuer), 05 (do not honour) or any other code but 00 is
    declined with that code's words; it is never approved, printed or owed to the host."""
    outcomes: dict[str, tuple] = {}

    async def go():
        t = await terminal(data_dir)
        try:
            for i, code in enumerate(EVERY_CODE):
                sim.add_rule(code, kind="sale")  # every sale until cleared (55 re-prompts)
                try:
                    r = await sale(t, 1000 + i, card="cup_debit")  # a PIN card
                finally:
                    sim.clear_rules()
                record = t.journal.get(r.record.id) if r.record is not None else None
                outcomes[code] = (r, record, t.journal.unresolved_counts())
            last = await sale(t, 999)  # the terminal still sells after every one of them
            assert last.status == "approved", last
            assert_agree(t.journal, sim.ledger)
        finally:
            await t.close()

    run(go())
    assert sorted(outcomes) == sorted(EVERY_CODE)
    for code, (r, record, owed) in outcomes.items():
        assert record is not None, (code, r)
        if code in APPROVAL_CODES:
            assert (r.status, r.response_code, record.state.value) == ("approved", code,
                                                                      "APPROVED"), (code, r)
            assert record.auth_code and record.rrn, (code, record)
            continue
        assert r.status == "declined", (code, r)
        assert r.response_code == code, (code, r)
        assert record.state.value == "DECLINED", (code, record.state)
        assert record.response_code == code
        assert not any(owed.values()), (code, owed)  # a decline is final: nothing to reverse
        if code == "55":  # wrong PIN: its own words (tries left, or tries used)
            assert r.message_key in ("pin_wrong_left", "pin_tries_used"), r
            continue
        assert r.message_key == code, (code, r)
        words = (CODES[code].en if code in CODES else f"Transaction failed ({code})")
        assert r.detail == words, (code, r.detail)
        assert text(r.message_key, "en") == words
        zh = CODES[code].zh if code in CODES else f"交易失败 ({code})"
        assert text(r.message_key, "zh") == zh
