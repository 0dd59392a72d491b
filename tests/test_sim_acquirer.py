"""The acquirer simulator's host behaviour, driven with raw frames over loopback TCP.

Messages are built with firmware.host.messages and encoded with firmware.host.codec
(the one wire spec); board.sim.testkit only keeps STAN, batch and the sign-on keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from board.sim.acquirer import SimulatorThread, balance_field54
from board.sim.cards import TEST_CARDS
from board.sim.testkit import TEST_MID, TEST_TID, TEST_TMK, SimTerminal
from firmware.host.codec import Decoded
from firmware.host.errors import KeyCheckError
from firmware.host.keys import parse_signon_keys
from firmware.host.messages import (
    FinancialParams,
    SideTotals,
    TxnKind,
    UploadItem,
    batch_upload_end,
    batch_upload_request,
    echo_request,
    financial_request,
    parse_settlement_field48,
    settlement_field48,
    settlement_request,
    signoff_request,
)

DEBIT = TEST_CARDS["cup_debit"]
CREDIT = TEST_CARDS["cup_credit"]
VISA = TEST_CARDS["visa"]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimulatorThread]:
    with SimulatorThread(tmp_path / "acquirer.db",
                         terminals=[(TEST_TID, TEST_MID, TEST_TMK)]) as s:
        yield s


@pytest.fixture
def term(sim: SimulatorThread) -> Iterator[SimTerminal]:
    with SimTerminal(sim.port) as t:
        assert t.sign_on().fields["39"] == "00"
        yield t


def refs(p: FinancialParams, reply: Decoded, *, date: bool = False) -> dict[str, str]:
    """orig_* keywords pointing at the transaction p answered by reply."""
    out = {"orig_rrn": reply.fields["37"], "orig_auth": reply.fields["38"],
           "orig_batch": p.batch, "orig_stan": p.stan}
    if date:
        out["orig_date"] = reply.fields["13"]
    return out


def sale(t: SimTerminal, amount: int = 1000, card=CREDIT, **kw) -> tuple[FinancialParams, Decoded]:
    p = t.params(TxnKind.SALE, amount, card, **kw)
    return p, t.request(p)


# ---- sign-on and management ----------------------------------------------------------

def test_sign_on_keys_verify_under_the_tmk(sim: SimulatorThread) -> None:
    with SimTerminal(sim.port) as t:
        reply = t.sign_on()
        f = reply.fields
        assert reply.message.mti == "0810" and f["39"] == "00"
        assert {"11", "12", "13", "32", "37", "41", "42", "60", "62"} <= set(f)
        assert "64" not in f
        assert f["60"] == "00000001003"
        assert len(f["62"]) == 80 and t.keys is not None and t.keys.tdk is None
        with pytest.raises(KeyCheckError):
            parse_signon_keys(f["62"], bytes(16))
        tdk_reply = t.sign_on(with_tdk=True)
        assert len(tdk_reply.fields["62"]) == 120 and t.keys.tdk is not None
    status = sim.ledger.terminal_status(TEST_TID)
    assert status is not None and status.signed_on and status.batch == 1


def test_unknown_terminal_gets_97(sim: SimulatorThread) -> None:
    with SimTerminal(sim.port, tid="99999999") as t:
        assert t.sign_on().fields["39"] == "97"
        t.send(echo_request(t.term, t.batch))
        assert t.recv().fields["39"] == "97"


def test_not_signed_on_gets_22_and_sign_on_again(sim: SimulatorThread) -> None:
    with SimTerminal(sim.port) as t:
        reply = t.request(t.params(TxnKind.SALE, 1000, CREDIT))
        assert reply.fields["39"] == "22"
        assert reply.message.header.processing == "3"
        assert "64" not in reply.fields
    assert sim.ledger.rows(TEST_TID) == []


def test_echo_and_sign_off(term: SimTerminal, sim: SimulatorThread) -> None:
    reply = term.exchange(echo_request(term.term, term.batch), mac=False)
    assert reply.message.mti == "0830" and reply.fields["39"] == "00"
    reply = term.exchange(signoff_request(term.next_stan(), term.term, term.batch), mac=False)
    assert reply.fields["39"] == "00"
    assert not sim.ledger.terminal_status(TEST_TID).signed_on
    assert term.request(term.params(TxnKind.SALE, 1000, CREDIT)).fields["39"] == "22"


# ---- sale and declines ---------------------------------------------------------------

def test_sale_is_approved_with_mac_and_booked(term: SimTerminal, sim: SimulatorThread) -> None:
    p, reply = sale(term, 12345, DEBIT, pin="123456")
    f = reply.fields
    assert reply.message.mti == "0210" and f["39"] == "00"
    assert len(f["37"]) == 12 and f["37"].isdigit() and len(f["38"]) == 6
    assert f["11"] == p.stan and f["4"] == "000000012345"
    assert f["63"].startswith("CUP") and {"12", "13"} <= set(f)
    assert term.mac_ok(reply)
    assert reply.message.tpdu == bytes.fromhex("6000000003")  # addresses swapped
    [row] = sim.ledger.approved(TEST_TID)
    assert (row.kind, row.amount, row.stan, row.rrn, row.foreign) == ("sale", 12345, 2,
                                                                     f["37"], False)
    assert row.pan_masked == "622202*********0017"
    assert sim.ledger.find(TEST_TID, 1, p.stan) == row


def test_foreign_card_and_keyed_entry(term: SimTerminal, sim: SimulatorThread) -> None:
    _, reply = sale(term, 500, VISA, entry="keyed")
    assert reply.fields["39"] == "00" and reply.fields["63"].startswith("VIS")
    assert sim.ledger.approved(TEST_TID)[0].foreign


@pytest.mark.parametrize(("card", "amount", "pin", "code"), [
    ("cup_credit", 1051, None, "51"),      # amount ending in 51
    ("blocked", 1000, None, "14"),         # on the decline list
    ("bad_luhn", 1000, None, "14"),        # should never get here; the host refuses too
    ("expired", 1000, None, "54"),
    ("cup_debit", 1000, "654321", "55"),   # wrong PIN
    ("cup_debit", 1000, None, "55"),       # PIN required, none sent
])
def test_declines(term: SimTerminal, sim: SimulatorThread, card: str, amount: int,
                  pin: str | None, code: str) -> None:
    _, reply = sale(term, amount, TEST_CARDS[card], pin=pin)
    assert reply.fields["39"] == code
    assert "64" not in reply.fields and "38" not in reply.fields
    [row] = sim.ledger.rows(TEST_TID)
    assert row.state == "declined" and row.response_code == code
    assert sim.ledger.approved(TEST_TID) == []


def test_bad_mac_is_a0_and_not_processed(term: SimTerminal, sim: SimulatorThread) -> None:
    p = term.params(TxnKind.SALE, 1000, CREDIT)
    msg = financial_request(p)
    good_keys = term.keys
    term.keys = type(good_keys)(pik=good_keys.pik, mak=bytes(16))
    reply = term.exchange(msg)
    assert reply.fields["39"] == "A0"
    assert sim.ledger.rows(TEST_TID) == []
    term.keys = good_keys
    # Not remembered: the same STAN with a good MAC is processed normally.
    assert term.exchange(msg).fields["39"] == "00"


def test_duplicate_returns_the_stored_reply_once_booked(term: SimTerminal,
                                                        sim: SimulatorThread) -> None:
    p = term.params(TxnKind.SALE, 2000, CREDIT)
    msg = financial_request(p)
    first = term.exchange(msg)
    second = term.exchange(msg)
    assert first.fields == second.fields
    assert len(sim.ledger.rows(TEST_TID)) == 1
    # The same STAN for a different request is a duplicate, not a second sale.
    other = financial_request(FinancialParams(TxnKind.SALE, p.stan, p.batch, p.term, 3000,
                                              card=p.card))
    assert term.exchange(other).fields["39"] == "94"
    assert len(sim.ledger.rows(TEST_TID)) == 1


def test_batch_mismatch_is_77(term: SimTerminal) -> None:
    term.batch = "000007"
    _, reply = sale(term)
    assert reply.fields["39"] == "77"


def test_balance_inquiry_field54(term: SimTerminal, sim: SimulatorThread) -> None:
    p = term.params(TxnKind.BALANCE, 0, DEBIT, pin="123456")
    reply = term.request(p)
    assert reply.fields["39"] == "00" and term.mac_ok(reply)
    assert reply.fields["54"] == "1002156C" + f"{DEBIT.balance:012d}"
    assert reply.fields["54"] == balance_field54(DEBIT.balance)
    assert sim.ledger.totals(TEST_TID, 1) == (SideTotals(0, 0, 0, 0), SideTotals(0, 0, 0, 0))


def test_rules_override_and_count_down(term: SimTerminal, sim: SimulatorThread) -> None:
    sim.add_rule("05", kind="sale", count=1)
    sim.add_rule("61", amount_mod100=77)
    assert sale(term)[1].fields["39"] == "05"
    assert sale(term)[1].fields["39"] == "00"
    assert sale(term, 1077)[1].fields["39"] == "61"
    sim.add_rule("00", pan=TEST_CARDS["blocked"].pan)  # an approval rule skips built-ins
    assert sale(term, 1000, TEST_CARDS["blocked"])[1].fields["39"] == "00"
    sim.clear_rules()
    assert sale(term, 1077)[1].fields["39"] == "00"


# ---- void ------------------------------------------------------------------------------

def test_void_marks_the_original(term: SimTerminal, sim: SimulatorThread) -> None:
    p, reply = sale(term, 5000)
    vp = term.params(TxnKind.VOID, 5000, CREDIT, **refs(p, reply))
    void = term.request(vp)
    assert void.fields["39"] == "00" and term.mac_ok(void)
    original = sim.ledger.find(TEST_TID, 1, p.stan)
    void_row = sim.ledger.find(TEST_TID, 1, vp.stan)
    assert original.voided_by == void_row.id and void_row.orig_id == original.id
    # Gross totals: the voided sale stays in debit, the void is a credit.
    assert sim.ledger.totals(TEST_TID, 1)[0] == SideTotals(5000, 1, 5000, 1)
    again = term.request(term.params(TxnKind.VOID, 5000, CREDIT, **refs(p, reply)))
    assert again.fields["39"] == "12"


def test_void_of_unknown_or_wrong_amount(term: SimTerminal) -> None:
    p, reply = sale(term, 5000)
    bogus = refs(p, reply) | {"orig_stan": "000999"}
    assert term.request(term.params(TxnKind.VOID, 5000, CREDIT, **bogus)).fields["39"] == "25"
    wrong_auth = refs(p, reply) | {"orig_auth": "999999"}
    assert term.request(term.params(TxnKind.VOID, 5000, CREDIT,
                                    **wrong_auth)).fields["39"] == "25"
    assert term.request(term.params(TxnKind.VOID, 4000, CREDIT,
                                    **refs(p, reply))).fields["39"] == "64"


# ---- reversal --------------------------------------------------------------------------

def test_reversal_undoes_an_approved_sale(term: SimTerminal, sim: SimulatorThread) -> None:
    p, reply = sale(term, 7000)
    rev = term.reverse(p, "98", reply.fields["38"])
    assert rev.message.mti == "0410" and rev.fields["39"] == "00" and term.mac_ok(rev)
    assert sim.ledger.find(TEST_TID, 1, p.stan).state == "reversed"
    assert sim.ledger.approved(TEST_TID) == []
    assert sim.ledger.totals(TEST_TID, 1)[0] == SideTotals(0, 0, 0, 0)
    # A retried reversal (same STAN) gets the same answer and changes nothing.
    assert term.reverse(p, "98").fields["39"] == "00"
    assert len(sim.ledger.reversals(TEST_TID)) == 1


def test_reversal_of_unknown_is_25_and_the_late_original_is_refused(
        term: SimTerminal, sim: SimulatorThread) -> None:
    p = term.params(TxnKind.SALE, 3000, CREDIT)
    rev = term.reverse(p, "98")
    assert rev.fields["39"] == "25" and term.mac_ok(rev)  # every 0410 carries a MAC
    late = term.request(p)
    assert late.fields["39"] == "94"
    assert sim.ledger.approved(TEST_TID) == []


def test_reversal_of_a_declined_sale_is_harmless(term: SimTerminal,
                                                 sim: SimulatorThread) -> None:
    p, reply = sale(term, 1051)
    assert reply.fields["39"] == "51"
    assert term.reverse(p, "06").fields["39"] == "00"
    assert sim.ledger.find(TEST_TID, 1, p.stan).state == "declined"


def test_reversal_of_a_void_restores_the_original(term: SimTerminal,
                                                  sim: SimulatorThread) -> None:
    p, reply = sale(term, 4200)
    vp = term.params(TxnKind.VOID, 4200, CREDIT, **refs(p, reply))
    assert term.request(vp).fields["39"] == "00"
    assert sim.ledger.find(TEST_TID, 1, p.stan).voided
    assert term.reverse(vp, "98").fields["39"] == "00"
    assert not sim.ledger.find(TEST_TID, 1, p.stan).voided
    assert sim.ledger.totals(TEST_TID, 1)[0] == SideTotals(4200, 1, 0, 0)
    # The sale can be voided again.
    again = term.request(term.params(TxnKind.VOID, 4200, CREDIT, **refs(p, reply)))
    assert again.fields["39"] == "00"


def test_reversal_rule_keeps_failing_until_cleared(term: SimTerminal,
                                                   sim: SimulatorThread) -> None:
    p, _ = sale(term, 1000)
    sim.add_rule("96", mti="0400")
    assert term.reverse(p, "98").fields["39"] == "96"
    assert sim.ledger.find(TEST_TID, 1, p.stan).state == "approved"
    sim.clear_rules()
    assert term.reverse(p, "98").fields["39"] == "00"
    assert sim.ledger.find(TEST_TID, 1, p.stan).state == "reversed"


# ---- refund (advice) -----------------------------------------------------------------

def test_refund_advice_and_its_repeat(term: SimTerminal, sim: SimulatorThread) -> None:
    p, reply = sale(term, 10000)
    rp = term.params(TxnKind.REFUND, 4000, CREDIT, **refs(p, reply, date=True))
    msg = financial_request(rp)
    ack = term.exchange(msg)
    assert ack.message.mti == "0230" and ack.fields["39"] == "00" and term.mac_ok(ack)
    assert term.exchange(msg).fields == ack.fields
    refunds = [r for r in sim.ledger.approved(TEST_TID) if r.kind == "refund"]
    assert len(refunds) == 1 and refunds[0].orig_rrn == reply.fields["37"]
    # 4000 refunded of 10000: 7000 more would exceed the original.
    over = term.request(term.params(TxnKind.REFUND, 7000, CREDIT, **refs(p, reply, date=True)))
    assert over.fields["39"] == "61" and term.mac_ok(over)  # every 0230 carries a MAC
    rest = term.request(term.params(TxnKind.REFUND, 6000, CREDIT, **refs(p, reply, date=True)))
    assert rest.fields["39"] == "00"
    unknown = refs(p, reply, date=True) | {"orig_rrn": "000000000000"}
    assert term.request(term.params(TxnKind.REFUND, 10, CREDIT,
                                    **unknown)).fields["39"] == "25"
    assert sim.ledger.totals(TEST_TID, 1)[0] == SideTotals(10000, 1, 10000, 2)


# ---- pre-auth family ---------------------------------------------------------------

def test_preauth_then_completion(term: SimTerminal, sim: SimulatorThread) -> None:
    pp = term.params(TxnKind.PREAUTH, 20000, CREDIT)
    pre = term.request(pp)
    assert pre.message.mti == "0110" and pre.fields["39"] == "00"
    over = term.request(term.params(TxnKind.COMPLETION, 20001, CREDIT,
                                    **refs(pp, pre, date=True) | {"orig_rrn": None}))
    assert over.fields["39"] == "61"
    cp = term.params(TxnKind.COMPLETION, 18000, CREDIT,
                     **refs(pp, pre, date=True) | {"orig_rrn": None})
    done = term.request(cp)
    assert done.fields["39"] == "00"
    assert sim.ledger.find(TEST_TID, 1, cp.stan).orig_id == sim.ledger.find(
        TEST_TID, 1, pp.stan).id
    assert sim.ledger.totals(TEST_TID, 1)[0] == SideTotals(18000, 1, 0, 0)
    twice = term.request(term.params(TxnKind.COMPLETION, 100, CREDIT,
                                     **refs(pp, pre, date=True) | {"orig_rrn": None}))
    assert twice.fields["39"] == "12"
    pv = term.params(TxnKind.PREAUTH_VOID, 20000, CREDIT,
                     **refs(pp, pre, date=True) | {"orig_rrn": None})
    assert term.request(pv).fields["39"] == "12"  # already completed
    # Completion void: the completion is cancelled, the credit side counts it.
    cv = term.params(TxnKind.COMPLETION_VOID, 18000, CREDIT, **refs(cp, done, date=True))
    assert term.request(cv).fields["39"] == "00"
    assert sim.ledger.find(TEST_TID, 1, cp.stan).voided
    assert sim.ledger.totals(TEST_TID, 1)[0] == SideTotals(18000, 1, 18000, 1)


def test_preauth_void_needs_matching_auth(term: SimTerminal, sim: SimulatorThread) -> None:
    pp = term.params(TxnKind.PREAUTH, 9000, CREDIT)
    pre = term.request(pp)
    wrong = refs(pp, pre, date=True) | {"orig_rrn": None, "orig_auth": "000000"}
    assert term.request(term.params(TxnKind.PREAUTH_VOID, 9000, CREDIT,
                                    **wrong)).fields["39"] == "25"
    ok = term.request(term.params(TxnKind.PREAUTH_VOID, 9000, CREDIT,
                                  **refs(pp, pre, date=True) | {"orig_rrn": None}))
    assert ok.fields["39"] == "00" and term.mac_ok(ok)
    assert sim.ledger.find(TEST_TID, 1, pp.stan).voided
    assert term.request(term.params(TxnKind.COMPLETION, 100, CREDIT, **refs(
        pp, pre, date=True) | {"orig_rrn": None})).fields["39"] == "12"
    # Pre-auths move no money.
    assert sim.ledger.totals(TEST_TID, 1)[0] == SideTotals(0, 0, 0, 0)


# ---- settlement ----------------------------------------------------------------------

def _settle(term: SimTerminal, dom: SideTotals, foreign: SideTotals) -> Decoded:
    msg = settlement_request(term.next_stan(), term.term, term.batch, "001",
                             settlement_field48(dom, foreign))
    return term.exchange(msg, mac=False)


def test_settlement_balanced_then_upload_end_moves_the_batch(
        term: SimTerminal, sim: SimulatorThread) -> None:
    sale(term, 1000)
    sale(term, 2500, VISA)
    reply = _settle(term, SideTotals(1000, 1, 0, 0), SideTotals(2500, 1, 0, 0))
    assert reply.message.mti == "0510" and reply.fields["39"] == "00"
    assert "64" not in reply.fields
    dom, r_dom, foreign, r_for = parse_settlement_field48(reply.fields["48"])
    assert foreign == SideTotals(2500, 1, 0, 0)
    assert (r_dom, r_for) == ("1", "1") and dom == SideTotals(1000, 1, 0, 0)
    end = batch_upload_end(term.next_stan(), term.term, term.batch, 0, balanced=True)
    end_reply = term.exchange(end, mac=False)
    assert end_reply.message.mti == "0330" and end_reply.fields["39"] == "00"
    assert sim.ledger.terminal_status(TEST_TID).batch == 2
    [row] = sim.ledger.settlements(TEST_TID)
    assert row["closed"] and row["result_dom"] == "1" and row["batch"] == 1
    # The upload end repeated (lost reply): same answer, the batch moves only once.
    assert term.exchange(end, mac=False).fields == end_reply.fields
    assert sim.ledger.terminal_status(TEST_TID).batch == 2
    # The old batch is closed for new requests; sign-on hands out the new one.
    assert sale(term)[1].fields["39"] == "77"
    assert term.sign_on().fields["60"][2:8] == "000002"
    assert sale(term)[1].fields["39"] == "00"


def test_settlement_unbalanced_and_upload(term: SimTerminal, sim: SimulatorThread) -> None:
    p, first = sale(term, 1000)
    fp, _ = sale(term, 2500, VISA)
    reply = _settle(term, SideTotals(1000, 1, 0, 0), SideTotals(9999, 1, 0, 0))
    _, r_dom, _, r_for = parse_settlement_field48(reply.fields["48"])
    assert (r_dom, r_for) == ("1", "2")
    items = [UploadItem(True, fp.stan, VISA.pan, 2500)]
    up = term.exchange(batch_upload_request(term.next_stan(), term.term, term.batch, items),
                       mac=False)
    assert up.message.mti == "0330" and up.fields["39"] == "00"
    assert sim.ledger.uploads(TEST_TID, 1) == [
        {"trace": int(fp.stan), "pan_masked": "400000******0002", "amount": 2500,
         "foreign": True}]
    end = batch_upload_end(term.next_stan(), term.term, term.batch, 1, balanced=False)
    assert term.exchange(end, mac=False).fields["39"] == "00"
    [row] = sim.ledger.settlements(TEST_TID)
    assert (row["result_dom"], row["result_for"], row["upload_count"]) == ("1", "2", 1)
    assert row["host_totals"]["foreign"]["debit_amount"] == 2500
    assert sim.ledger.terminal_status(TEST_TID).batch == 2
    # After settlement a void of the old batch is refused; a refund still works.
    term.batch = "000002"
    void = term.request(term.params(TxnKind.VOID, 1000, CREDIT, **refs(p, first)))
    assert void.fields["39"] == "12"
    refund = term.request(term.params(TxnKind.REFUND, 1000, CREDIT,
                                      **refs(p, first, date=True)))
    assert refund.fields["39"] == "00"
    assert sim.ledger.totals(TEST_TID, 2)[0] == SideTotals(0, 0, 1000, 1)
