"""Every transaction type end to end over real TCP against the acquirer simulator.

Each test checks the fields that went on the wire, the journal record that a
receipt would be printed from, and that the simulator's ledger agrees.
"""

from __future__ import annotations

import pytest
from helpers import (
    PASSWORD,
    TID,
    WireSpy,
    assert_agree,
    refund,
    run,
    sale,
    swipe,
    terminal,
    void,
)

from firmware.app.core.contract import OperatorInput
from firmware.engine.model import OriginalRef, TxnRequest
from firmware.host.messages import TxnKind


def scenario(data_dir, body):
    async def go():
        t = await terminal(data_dir)
        spy = WireSpy(t)
        try:
            return await body(t, spy)
        finally:
            # The journal stays open for the assertions; the link is closed.
            await t.link.channel.close()

    return run(go())


def test_sale_fields_on_the_wire_and_receipt_data(data_dir, sim):
    async def body(t, spy):
        r = await sale(t, 1234, card="visa", reference="TILL-7")
        return r, spy, t.journal

    r, spy, journal = scenario(data_dir, body)
    assert r.status == "approved"
    req = spy.sent[-1]
    assert req.mti == "0200"
    f = req.fields
    assert f["3"] == "000000" and f["25"] == "00" and f["4"] == "000000001234"
    assert f["22"] == "022"  # swiped, no PIN
    assert f["60"][:2] == "22" and f["60"][2:8] == r.record.batch and f["60"][8:11] == "000"
    assert "35" in f and "2" not in f and "52" not in f
    assert f["41"] == TID and f["49"] == "156"
    rec = r.record
    assert rec.rrn and len(rec.rrn) == 12 and rec.auth_code and rec.card_org == "VIS"
    assert rec.pan_masked.startswith("400000") and "*" in rec.pan_masked
    assert rec.reference == "TILL-7" and rec.foreign
    assert_agree(journal, sim.ledger)


@pytest.mark.parametrize("card,amount,code", [
    ("cup_credit", 2051, "51"),  # amounts ending in 51: insufficient funds
    ("blocked", 1000, "14"),
])
def test_host_declines_are_recorded_with_reason(data_dir, sim, card, amount, code):
    async def body(t, spy):
        return await sale(t, amount, card=card), t.journal

    r, journal = scenario(data_dir, body)
    assert r.status == "declined" and r.response_code == code
    assert r.record.state.value == "DECLINED"
    assert r.detail  # the reason in words
    assert_agree(journal, sim.ledger)


@pytest.mark.parametrize("card,amount,key", [
    ("bad_luhn", 100, "card_invalid"),
    ("expired", 100, "card_expired"),
    ("cup_chip", 100, "insert_chip"),
    ("cup_credit", 10_000_001, "amount_over_limit"),
    ("cup_credit", 0, "invalid_amount"),
])
def test_local_checks_refuse_before_anything_is_sent(data_dir, sim, card, amount, key):
    async def body(t, spy):
        before = len(spy.sent)
        r = await sale(t, amount, card=card)
        return r, spy.sent[before:], t.journal.records()

    r, sent, records = scenario(data_dir, body)
    assert r.status == "refused" and r.message_key == key, r
    assert sent == [] and records == []


def test_void_marks_the_original_in_the_same_commit(data_dir, sim):
    async def body(t, spy):
        s = await sale(t, 5000)
        v = await void(t, s.record.invoice)
        return s, v, spy, t.journal

    s, v, spy, journal = scenario(data_dir, body)
    assert v.status == "approved", v
    f = spy.sent[-1].fields
    assert spy.sent[-1].mti == "0200" and f["3"] == "200000" and f["60"][:2] == "23"
    assert f["37"] == s.record.rrn and f["38"] == s.record.auth_code
    assert f["61"] == s.record.batch + s.record.stan
    assert journal.get(s.record.id).state.value == "VOIDED"
    assert_agree(journal, sim.ledger)


def test_void_needs_the_supervisor_password_and_audits_wrong_tries(data_dir, sim):
    async def body(t, spy):
        s = await sale(t, 700)
        sent_before = len(spy.sent)
        v = await void(t, s.record.invoice, password="111111")
        return s, v, spy.sent[sent_before:], t.journal

    s, v, sent, journal = scenario(data_dir, body)
    assert v.status == "refused" and v.message_key == "password_wrong"
    assert sent == []
    assert journal.get(s.record.id).state.value == "APPROVED"
    assert any(line[4] == "wrong" for line in journal.audit_lines())


def test_void_twice_and_void_of_unknown_are_refused_locally(data_dir, sim):
    async def body(t, spy):
        s = await sale(t, 900)
        await void(t, s.record.invoice)
        again = await void(t, s.record.invoice)
        unknown = await void(t, "999999")
        return again, unknown

    again, unknown = scenario(data_dir, body)
    assert again.message_key == "original_already_voided"
    assert unknown.message_key == "original_not_found"


def test_refund_is_an_advice_acknowledged_by_the_host(data_dir, sim):
    async def body(t, spy):
        s = await sale(t, 8000)
        r = await refund(t, 3000, s.record.rrn, s.record.local_date)
        over = await refund(t, 6000, s.record.rrn, s.record.local_date)
        return s, r, over, spy, t.journal

    s, r, over, spy, journal = scenario(data_dir, body)
    assert r.status == "approved", r
    req = [m for m in spy.sent if m.mti == "0220"][-1]
    assert req.fields["3"] == "200000" and req.fields["60"][:2] == "25"
    assert req.fields["37"] == s.record.rrn
    assert req.fields["61"] == s.record.batch + s.record.stan + s.record.local_date
    assert over.message_key == "refund_over_original"  # 3000 + 6000 > 8000
    assert_agree(journal, sim.ledger)


def test_balance_inquiry_with_pin_returns_the_balance(data_dir, sim):
    async def body(t, spy):
        io = OperatorInput(card=swipe("cup_debit"), pin="123456")
        r = await t.financial(TxnRequest(TxnKind.BALANCE), io)
        return r, spy

    r, spy = scenario(data_dir, body)
    assert r.status == "approved", r
    assert r.balance is not None and r.balance > 0
    f = spy.sent[-1].fields
    assert f["3"] == "310000" and "4" not in f and f["22"] == "021"
    assert f["26"] == "12" and len(f["52"]) == 16 and f["53"].startswith("26")


def test_wrong_pin_allows_reentry_then_approves(data_dir, sim):
    async def body(t, spy):
        tries = iter(["000000", "123456"])
        io = OperatorInput(card=swipe("cup_debit"), pin=next(tries))
        # The PIN pad asks again after a 55: feed the second PIN when the first is used.
        orig_perform = t._perform

        async def perform(action, io_, flow, cancellable):
            if type(action).__name__ == "AskPin" and io_.pin is None:
                io_.pin = next(tries, None)
            return await orig_perform(action, io_, flow, cancellable)

        t._perform = perform
        r = await t.financial(TxnRequest(TxnKind.SALE, 4321), io)
        return r, t.journal

    r, journal = scenario(data_dir, body)
    assert r.status == "approved", r
    states = [rec.state.value for rec in journal.records()]
    assert states == ["DECLINED", "APPROVED"]
    assert journal.records()[0].response_code == "55"
    assert_agree(journal, sim.ledger)


def test_preauth_completion_and_voids(data_dir, sim):
    async def body(t, spy):
        io = lambda: OperatorInput(card=swipe("visa"), password=PASSWORD)  # noqa: E731
        pa = await t.financial(TxnRequest(TxnKind.PREAUTH, 10000), io())
        comp = await t.financial(
            TxnRequest(TxnKind.COMPLETION, 9000, original=OriginalRef(invoice=pa.record.invoice)), io())
        cvoid = await t.financial(
            TxnRequest(TxnKind.COMPLETION_VOID, original=OriginalRef(invoice=comp.record.invoice)), io())
        pa2 = await t.financial(TxnRequest(TxnKind.PREAUTH, 2000), io())
        pvoid = await t.financial(
            TxnRequest(TxnKind.PREAUTH_VOID, original=OriginalRef(invoice=pa2.record.invoice)), io())
        return pa, comp, cvoid, pa2, pvoid, spy, t.journal

    pa, comp, cvoid, pa2, pvoid, spy, journal = scenario(data_dir, body)
    for r in (pa, comp, cvoid, pa2, pvoid):
        assert r.status == "approved", r
    by_mti = [(m.mti, m.fields.get("3"), m.fields.get("25"), m.fields.get("60", "")[:2])
              for m in spy.sent if m.mti in ("0100", "0200")]
    assert by_mti == [("0100", "030000", "06", "10"), ("0200", "000000", "06", "20"),
                      ("0200", "200000", "06", "21"), ("0100", "030000", "06", "10"),
                      ("0100", "200000", "06", "11")]
    assert journal.get(comp.record.id).state.value == "VOIDED"
    assert journal.get(pa2.record.id).state.value == "VOIDED"
    assert_agree(journal, sim.ledger)


def test_settlement_balanced_advances_the_batch(data_dir, sim):
    async def body(t, spy):
        s1 = await sale(t, 1000)
        await sale(t, 2000, card="visa")
        await void(t, s1.record.invoice)
        batch = t.journal.current_batch()
        r = await t.settle(PASSWORD)
        after = await sale(t, 300)
        return batch, r, after, spy, t.journal

    batch, r, after, spy, journal = scenario(data_dir, body)
    assert r.status == "settled" and r.message_key == "settled_balanced", r
    s = journal.last_settlement()
    assert s.balanced and s.batch == batch
    assert after.record.batch == f"{int(batch) + 1:06d}"
    mtis = spy.mtis()
    assert "0500" in mtis and mtis.count("0320") == 1  # balanced: only the upload end
    end = [m for m in spy.sent if m.mti == "0320"][-1]
    assert end.fields["60"][8:11] == "207"
    assert sim.ledger.settlements(TID)[-1]["result_dom"] == "1"
    assert_agree(journal, sim.ledger)


def test_settlement_password_is_required(data_dir, sim):
    async def body(t, spy):
        await sale(t, 1000)
        return await t.settle("000001"), t.journal

    r, journal = scenario(data_dir, body)
    assert r.status == "refused" and journal.last_settlement() is None


def test_factory_password_blocks_payments_until_changed(tmp_path, sim):
    import json

    from helpers import provision
    d = provision(tmp_path / "fresh", sim.port)
    s = json.loads((d / "settings.json").read_text())
    s["security"]["password_changed"] = False
    (d / "settings.json").write_text(json.dumps(s))

    async def body(t, spy):
        first = await sale(t, 100)
        changed = await t.set_password(PASSWORD, "135790", "ecr")
        second = await sale(t, 100)
        return first, changed, second

    first, changed, second = scenario(d, body)
    assert first.status == "refused" and first.message_key == "change_password"
    assert changed.status == "approved"
    assert second.status == "approved"


def test_after_settlement_void_is_refused_and_refund_works(data_dir, sim):
    async def body(t, spy):
        s = await sale(t, 6000)
        settled = await t.settle(PASSWORD)
        v = await void(t, s.record.invoice, password=PASSWORD)
        # The original is kept (retention) and found by its reference for the refund.
        r = await refund(t, 6000, s.record.rrn, s.record.local_date)
        return settled, v, r, t.journal

    settled, v, r, journal = scenario(data_dir, body)
    assert settled.status == "settled"
    assert v.status == "refused" and v.message_key in ("original_not_found", "original_settled")
    assert r.status == "approved", r
    assert r.record.orig_batch != r.record.batch
    assert_agree(journal, sim.ledger)


def test_echo_sign_off_and_sign_on_again(data_dir, sim):
    async def body(t, spy):
        ok, rtt, code = await t.echo()
        off = await t.sign_off()
        after_off = t.status()["signed_on"]
        s = await sale(t, 1100)  # signs on again by itself first
        return ok, rtt, code, off, after_off, s, spy.mtis()

    ok, rtt, code, off, after_off, s, mtis = scenario(data_dir, body)
    assert ok and code == "00" and rtt >= 0
    assert off and after_off is False
    assert s.status == "approved"
    assert mtis == ["0820", "0820", "0800", "0200"]
