"""What reversals, advices and batch uploads carry, read from the wire (issue 14).

A real terminal talks to the acquirer simulator through a wire tap (tests/wiretap.py); every
assertion is on the frames that crossed, decoded. The expectations come from docs/dialect.md
("Reversals", "Refunds", "Settlement and batch upload") and from what the test itself did
(the card it swiped, the amount it asked for, the auth code the host's reply carried), never
from the firmware's builders:

- a 0400 carries exactly the fields of the dialect's table: 2 (the PAN), 3, 4, 11, 22, 25,
  41, 42, 49 and 60 of its original, 38 when known, 61 when the original carried it, 39 the
  reason (98 timeout, A0 MAC failure, 06 otherwise) and 64 -- and never 14, 26, 35, 36, 37,
  52, 53; its amount is its own original's, not a neighbour's;
- a reversal owed across a restart, and a stored refund advice resent, say what the first
  send said;
- a batch upload carries each counted record of the unbalanced side (sale, voided sale and its
  void, completion and completion void, refund) once, with its trace, PAN and amount, and
  nothing else (pre-auth, declined, reversed);
- every MACed request's field 64 is the CUP ECB MAC of its bytes under the session's MAK,
  computed here with `cryptography`'s DES, not with firmware/host/mac.py.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from helpers import PASSWORD, TID, pin_for, run, swipe, terminal
from wiretap import Frame, WireTap

from board.sim.cards import TEST_CARDS
from firmware.app.core.contract import OperatorInput
from firmware.engine.model import HostResult, OriginalRef, PendingDraft, TxnRequest
from firmware.engine.states import TxnEvent
from firmware.host.codec import decode
from firmware.host.messages import Message, TxnKind, mask_pan

FRAMING = 5 + 6  # TPDU and header before the MTI
NEVER_IN_A_REVERSAL = {"14", "26", "35", "36", "37", "52", "53"}
COPIED = ("3", "4", "11", "22", "25", "41", "42", "49", "60")


def io(card: str) -> OperatorInput:
    return OperatorInput(card=swipe(card), pin=pin_for(card), password=PASSWORD)


def sent(tap: WireTap) -> list[Message]:
    return [decode(f.payload).message for f in tap.frames() if f.to_host]


def replies(tap: WireTap) -> list[Message]:
    return [decode(f.payload).message for f in tap.frames() if not f.to_host]


def by_stan(messages: list[Message], mti: str, stan: str) -> list[Message]:
    return [m for m in messages if m.mti == mti and m.fields.get("11") == stan]


def assert_reversal(rev: Message, orig: Message, *, pan: str, amount: int | None, reason: str,
                    auth: str | None) -> None:
    """The dialect's 0400 table, field by field, against the original request on the wire and
    what the test knows (the PAN, the amount asked for, the auth code the host named)."""
    assert rev.mti == "0400"
    want = {"2", *(k for k in COPIED if k in orig.fields), "39", "64"}
    want |= {"38"} if auth is not None else set()
    want |= {"61"} if "61" in orig.fields else set()
    want |= {k for k in ("23", "55") if k in orig.fields}
    assert set(rev.fields) == want, (sorted(rev.fields), sorted(want))
    assert not NEVER_IN_A_REVERSAL & set(rev.fields)
    for k in COPIED:
        assert rev.fields.get(k) == orig.fields.get(k), (k, orig.fields.get(k), rev.fields.get(k))
    assert rev.fields["2"] == pan
    if amount is not None:
        assert rev.fields["4"] == f"{amount:012d}"
    assert rev.fields["39"] == reason
    assert rev.fields.get("38") == auth
    if "61" in orig.fields:
        assert rev.fields["61"] == orig.fields["61"]


# -- reversals sent at once -------------------------------------------------------------------

LOSSES = [
    pytest.param({"fault": "drop", "process": True}, "98", id="timeout-98"),
    pytest.param({"fault": "bad_mac"}, "A0", id="mac-failure-A0"),
    pytest.param({"fault": "close", "process": True}, "06", id="link-lost-06"),
]


@pytest.mark.parametrize(("fault", "reason"), LOSSES)
def test_a_sale_whose_reply_is_lost_is_reversed_with_its_own_fields_and_the_reason(
        tapped_dir, sim, tap, fault, reason):
    """A sale the host booked but whose reply never counted (no reply: 98; a reply that failed
    its MAC: A0, with the auth code that reply named in 38; the link lost: 06) is reversed with
    its own amount -- not the neighbouring sale's -- and the dialect's fields only."""
    async def go():
        t = await terminal(tapped_dir)
        try:
            before = await t.financial(TxnRequest(TxnKind.SALE, 1111), io("cup_credit"))
            sim.add_fault(mti="0200", count=1, **fault)
            lost = await t.financial(TxnRequest(TxnKind.SALE, 2222), io("cup_debit"))
            after = await t.financial(TxnRequest(TxnKind.SALE, 3333), io("cup_credit"))
            return before, lost, after
        finally:
            await t.close()

    before, lost, after = run(go())
    assert (before.status, lost.status, after.status) == ("approved", "reversed", "approved")
    stan = lost.record.stan
    orig, = by_stan(sent(tap), "0200", stan)
    rev, = by_stan(sent(tap), "0400", stan)
    auth = None
    if reason == "A0":  # the refused reply named an auth code: the host finds what it approved
        auth = by_stan(replies(tap), "0210", stan)[0].fields["38"]
    assert_reversal(rev, orig, pan=TEST_CARDS["cup_debit"].pan, amount=2222, reason=reason,
                    auth=auth)


def test_a_voids_reversal_names_the_sale_it_voided(tapped_dir, sim, tap):
    """A void whose reply is lost: the 0400 carries the void's own 3 (200000), 22 (012, the card
    from the journal), the sale's auth code in 38 and the sale's batch and trace in 61, and the
    amount of the sale it voided (not the other sale's)."""
    async def go():
        t = await terminal(tapped_dir)
        try:
            s1 = await t.financial(TxnRequest(TxnKind.SALE, 4321), io("cup_credit"))
            s2 = await t.financial(TxnRequest(TxnKind.SALE, 1234), io("cup_credit"))
            sim.add_fault("drop", mti="0200", count=1, process=True)
            v = await t.financial(TxnRequest(TxnKind.VOID, original=OriginalRef(
                invoice=s1.record.invoice)), io("cup_credit"))
            return s1, s2, v
        finally:
            await t.close()

    s1, s2, v = run(go())
    assert (s1.status, s2.status, v.status) == ("approved", "approved", "reversed"), v
    orig, = by_stan(sent(tap), "0200", v.record.stan)
    rev, = by_stan(sent(tap), "0400", v.record.stan)
    assert_reversal(rev, orig, pan=TEST_CARDS["cup_credit"].pan, amount=4321, reason="98",
                    auth=s1.record.auth_code)
    assert (rev.fields["3"], rev.fields["22"], rev.fields["60"][:2]) == ("200000", "012", "23")
    assert rev.fields["61"] == s1.record.batch + s1.record.stan


def test_a_completions_reversal_carries_the_completion_amount_not_the_preauths(
        tapped_dir, sim, tap):
    """Pre-auth 10000, completion 9000 lost: the 0400 says 9000, the pre-auth's auth code and
    61 with the pre-auth's batch, trace and date."""
    async def go():
        t = await terminal(tapped_dir)
        try:
            pa = await t.financial(TxnRequest(TxnKind.PREAUTH, 10000), io("visa"))
            sim.add_fault("drop", mti="0200", count=1, process=True)
            c = await t.financial(TxnRequest(TxnKind.COMPLETION, 9000, original=OriginalRef(
                invoice=pa.record.invoice)), io("visa"))
            return pa, c
        finally:
            await t.close()

    pa, c = run(go())
    assert (pa.status, c.status) == ("approved", "reversed"), c
    orig, = by_stan(sent(tap), "0200", c.record.stan)
    rev, = by_stan(sent(tap), "0400", c.record.stan)
    assert_reversal(rev, orig, pan=TEST_CARDS["visa"].pan, amount=9000, reason="98",
                    auth=pa.record.auth_code)
    assert rev.fields["61"] == pa.record.batch + pa.record.stan + pa.record.local_date


# -- a reversal owed across a restart ---------------------------------------------------------

@pytest.mark.parametrize(("fault", "reason"), LOSSES[:2])
def test_a_reversal_owed_at_start_up_says_what_the_first_one_said(tapped_dir, sim, tap, fault,
                                                                  reason):
    """The host never answered the reversal; the terminal restarts and sends it from its journal
    alone: the same reason, the same auth code (A0: the refused reply's), the same amount and
    fields as the first 0400, and the dialect's fields against the original."""
    async def first():
        t = await terminal(tapped_dir)
        try:
            await t.financial(TxnRequest(TxnKind.SALE, 1500), io("cup_credit"))
            sim.add_fault(mti="0200", count=1, **fault)
            sim.add_fault("drop", mti="0400", count=-1, process=False)
            return await t.financial(TxnRequest(TxnKind.SALE, 2500), io("cup_credit"))
        finally:
            await t.close()

    async def second():
        sim.clear_faults()
        t = await terminal(tapped_dir)  # start-up sends the owed reversal first
        try:
            return t.journal.get(owed.record.id)
        finally:
            await t.close()

    owed = run(first())
    assert owed.status == "reversal_pending", owed
    during = len(by_stan(sent(tap), "0400", owed.record.stan))
    assert during >= 1
    after = run(second())
    assert after.state.value == "REVERSED"
    stan = owed.record.stan
    orig, = by_stan(sent(tap), "0200", stan)
    revs = by_stan(sent(tap), "0400", stan)
    assert len(revs) > during  # one more, at start-up
    auth = by_stan(replies(tap), "0210", stan)[0].fields["38"] if reason == "A0" else None
    for rev in revs:
        assert_reversal(rev, orig, pan=TEST_CARDS["cup_credit"].pan, amount=2500,
                        reason=reason, auth=auth)
    assert {k: v for k, v in revs[-1].fields.items() if k != "64"} == {
        k: v for k, v in revs[0].fields.items() if k != "64"}


# -- a refund advice stored and resent --------------------------------------------------------

def test_a_stored_refund_advice_is_resent_byte_for_byte(tapped_dir, sim, tap):
    """A refund the host answered "try again" (96) is stored; the next transaction first sends
    it again with the same STAN and the same bytes (field 64 included: same session), carrying
    the original's RRN in 37, its batch, trace and date in 61, the card organisation in 63,
    the refund's amount, 3 = 200000 and the card as keyed (012)."""
    async def go():
        t = await terminal(tapped_dir)
        try:
            s = await t.financial(TxnRequest(TxnKind.SALE, 8000), io("visa"))
            sim.add_rule("96", mti="0220", count=1)
            r = await t.financial(TxnRequest(TxnKind.REFUND, 2700, original=OriginalRef(
                rrn=s.record.rrn, date=s.record.local_date)), io("visa"))
            nxt = await t.financial(TxnRequest(TxnKind.SALE, 100), io("cup_credit"))
            return s, r, nxt, t.journal.get(r.record.id)
        finally:
            await t.close()

    s, r, nxt, refund = run(go())
    assert (s.status, r.status, nxt.status) == ("approved", "stored", "approved"), r
    assert refund.state.value == "APPROVED"
    frames = [f for f in tap.frames() if f.to_host and decode(f.payload).message.mti == "0220"]
    assert len(frames) == 2 and frames[0].payload == frames[1].payload
    advice = decode(frames[0].payload).message
    f = advice.fields
    assert set(f) == {"2", "3", "4", "11", "22", "25", "37", "41", "42", "49", "60", "61", "63",
                      "64"}, sorted(f)
    assert (f["2"], f["3"], f["4"], f["11"], f["22"], f["25"]) == (
        TEST_CARDS["visa"].pan, "200000", f"{2700:012d}", r.record.stan, "012", "00")
    assert (f["37"], f["61"], f["63"]) == (
        s.record.rrn, s.record.batch + s.record.stan + s.record.local_date, "VIS")
    assert f["60"][:2] == "25"


# -- a batch upload of every kind of record ---------------------------------------------------

def test_the_batch_upload_carries_every_counted_record_once_and_nothing_else(tapped_dir, sim,
                                                                             tap):
    """Foreign side unbalanced: the upload carries the sale, the voided sale and its void, the
    completion and the completion void, the refund and the record the host never saw -- each
    with flag 01, its own trace, its PAN and its amount -- and not the pre-auth, the declined
    sale or the reversed one."""
    visa = TEST_CARDS["visa"].pan

    async def go():
        t = await terminal(tapped_dir)
        j = t.journal

        async def do(kind, amount=None, original=None):
            return await t.financial(TxnRequest(kind, amount, original=original), io("visa"))

        def ref(r):
            return OriginalRef(invoice=r.record.invoice)

        try:
            counted, skipped = [], []
            sale = await do(TxnKind.SALE, 5100)
            counted.append(sale)
            voided = await do(TxnKind.SALE, 5200)
            counted += [voided, await do(TxnKind.VOID, original=ref(voided))]
            pa = await do(TxnKind.PREAUTH, 6000)
            skipped.append(pa)
            comp = await do(TxnKind.COMPLETION, 5300, original=ref(pa))
            counted += [comp, await do(TxnKind.COMPLETION_VOID, original=ref(comp))]
            counted.append(await do(TxnKind.REFUND, 1700, original=OriginalRef(
                rrn=sale.record.rrn, date=sale.record.local_date)))
            sim.add_rule("05", kind="sale", count=1)
            skipped.append(await do(TxnKind.SALE, 5400))
            sim.add_fault("drop", mti="0200", count=1, process=True)
            skipped.append(await do(TxnKind.SALE, 5500))
            assert [r.status for r in counted] == ["approved"] * 6, counted
            assert [r.status for r in skipped] == ["approved", "declined", "reversed"], skipped
            unseen = j.begin(PendingDraft(TxnKind.SALE, 777, "156", visa, mask_pan(visa), True,
                                          "swipe", False, "01", "1201", "101010"))
            j.apply(unseen.id, TxnEvent.APPROVE, HostResult("00", rrn="999999999999",
                                                            auth_code="000001"))
            records = [j.get(r.record.id) for r in counted] + [j.get(unseen.id)]
            result = await t.settle(PASSWORD)
            return result, records, [r.record.stan for r in skipped]
        finally:
            await t.close()

    result, records, skipped = run(go())
    assert (result.status, result.message_key) == ("settled", "settled_unbalanced"), result
    uploads = [m for m in sent(tap) if m.mti == "0320" and m.fields["60"][8:11] == "201"]
    items = []
    for u in uploads:
        f48 = u.fields["48"]
        n, body = int(f48[:2]), f48[2:]
        assert len(body) == 40 * n
        items += [(body[i:i + 2], body[i + 2:i + 8], body[i + 8:i + 28], int(body[i + 28:i + 40]))
                  for i in range(0, len(body), 40)]
    want = [("01", r.stan, visa.rjust(20, "0"), r.amount) for r in records]
    assert sorted(items) == sorted(want)
    assert {r.kind for r in records} == {TxnKind.SALE, TxnKind.VOID, TxnKind.COMPLETION,
                                         TxnKind.COMPLETION_VOID, TxnKind.REFUND}
    assert not {stan for _, stan, _, _ in items} & set(skipped)
    end, = [m for m in sent(tap) if m.mti == "0320" and m.fields["60"][8:11] != "201"]
    assert (end.fields["48"], end.fields["60"][8:11]) == (f"{len(want):04d}", "202")


# -- field 64 on the wire, computed independently ---------------------------------------------

def _des(key8: bytes, block: bytes) -> bytes:
    # TripleDES with one 8-byte key is single DES: the reference shares nothing with psec.
    return Cipher(TripleDES(key8), modes.ECB()).encryptor().update(block)


def independent_mac(mak: bytes, data: bytes) -> bytes:
    """The CUP ECB MAC, written from docs/dialect.md: XOR the 8-byte blocks (the last one
    zero-padded), expand to 16 hex characters, DES the first 8 under the MAK's left half, XOR
    with the last 8, DES again, the first 8 hex characters of the result."""
    fold = bytearray(8)
    for i in range(0, len(data), 8):
        for j, b in enumerate(data[i:i + 8]):
            fold[j] ^= b
    text = fold.hex().upper().encode()
    first = _des(mak[:8], text[:8])
    second = _des(mak[:8], bytes(a ^ b for a, b in zip(first, text[8:], strict=True)))
    return second.hex().upper().encode()[:8]


def test_field_64_of_every_maced_message_on_the_wire_is_the_cup_mac_under_the_sessions_mak(
        tapped_dir, sim, tap):
    """Every request the dialect MACs (0200, 0100, 0220, 0400) and every reply it MACs, as it
    crossed the wire: field 64 (the last 8 bytes) is the MAC of the bytes from the MTI to just
    before it, under the MAK the host installed at sign-on -- computed here, independently."""
    async def go():
        t = await terminal(tapped_dir)
        try:
            s = await t.financial(TxnRequest(TxnKind.SALE, 1010), io("cup_debit"))
            await t.financial(TxnRequest(TxnKind.PREAUTH, 2020), io("visa"))
            await t.financial(TxnRequest(TxnKind.REFUND, 505, original=OriginalRef(
                rrn=s.record.rrn, date=s.record.local_date)), io("cup_debit"))
            sim.add_fault("drop", mti="0200", count=1, process=True)
            await t.financial(TxnRequest(TxnKind.SALE, 3030), io("cup_credit"))
            return sim.ledger.working_keys(TID)
        finally:
            await t.close()

    _, mak, _ = run(go())
    maced: list[tuple[Frame, Message]] = [
        (f, m) for f in tap.frames() if (m := decode(f.payload).message).fields.get("64")]
    assert {m.mti for f, m in maced if f.to_host} == {"0100", "0200", "0220", "0400"}
    assert {m.mti for f, m in maced if not f.to_host} == {"0110", "0210", "0230", "0410"}
    for frame, message in maced:
        body = frame.payload[FRAMING:]
        assert bytes.fromhex(message.fields["64"]) == body[-8:]
        assert body[-8:] == independent_mac(mak, body[:-8]), (message.mti, frame.to_host)
        # One changed byte anywhere in what is MACed, or a MAC under the other half of the
        # key, does not verify: the check is not vacuous.
        flipped = bytes([body[0] ^ 0x01]) + body[1:-8]
        assert independent_mac(mak, flipped) != body[-8:]
        assert independent_mac(mak[8:], body[:-8]) != body[-8:]
