"""Wire conformance: every message type the terminal sends, as it crossed the wire (issue 13, B22).

A real terminal (in-process, real TCP) runs a merchant's day against the acquirer simulator
through a wire tap: sign-on, echo, every financial type, the reversal of each reversible one,
a refund (an advice), an unbalanced settlement with its batch upload, a balanced one, sign-off
and deregistration. Each request frame is decoded with pyiso8583 and a spec written HERE from
the dialect table (docs/dialect.md; not the firmware's firmware/host/spec.py), then checked per
message type: which fields are there (M: must, C: may, anything else: must not), the fixed
values (3, 25, 60.1, 60.3, 60.4/60.5), lengths, and on which side the pad nibble of every
odd-length BCD field sits.

Types the firmware does not send are listed in NOT_SENT with the reason.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import iso8583
import pytest
from helpers import MID, PASSWORD, TID, TMK, pin_for, provision, swipe
from wiretap import WireTap

from board.sim.acquirer import SimulatorThread
from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.services.deregister import deregister
from firmware.app.terminal import Terminal
from firmware.engine.model import HostResult, OriginalRef, PendingDraft, TxnRequest
from firmware.engine.states import TxnEvent
from firmware.host.messages import TxnKind

# -- the dialect's field table, written independently of firmware/host/spec.py ---------------

LL, LLL = 1, 2


def _n(length: int) -> dict[str, Any]:
    """Fixed numeric: BCD, right-justified (a pad nibble first when the length is odd)."""
    return {"data_enc": "b", "len_enc": "bcd", "len_type": 0, "max_len": length,
            "len_count": "nibbles", "left_pad": "0", "desc": f"n{length}"}


def _n_var(len_type: int, max_len: int) -> dict[str, Any]:
    """Variable numeric (and track z): BCD, left-justified, trailing pad; length in digits."""
    return {"data_enc": "b", "len_enc": "bcd", "len_type": len_type, "max_len": max_len,
            "len_count": "nibbles", "right_pad": "0", "desc": f"n..{max_len}"}


def _a(length: int, len_type: int = 0, enc: str = "ascii") -> dict[str, Any]:
    return {"data_enc": enc, "len_enc": "bcd", "len_type": len_type, "max_len": length,
            "desc": f"ans{length}"}


def _b(length: int, len_type: int = 0) -> dict[str, Any]:
    return {"data_enc": "b", "len_enc": "bcd", "len_type": len_type, "max_len": length,
            "desc": f"b{length}"}


DIALECT: dict[str, dict[str, Any]] = {
    "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0, "desc": "none"},
    "t": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 2, "desc": "MTI"},
    "p": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8, "desc": "bitmap"},
    "2": _n_var(LL, 19), "3": _n(6), "4": _n(12), "11": _n(6), "12": _n(6), "13": _n(4),
    "14": _n(4), "15": _n(4),
    # 22 is the one fixed numeric whose pad nibble goes last (left-justified).
    "22": {**_n(3), "left_pad": None, "right_pad": "0"},
    "23": _n(3), "25": _n(2), "26": _n(2), "32": _n_var(LL, 11), "35": _n_var(LL, 37),
    "36": _n_var(LLL, 104), "37": _a(12), "38": _a(6), "39": _a(2), "41": _a(8), "42": _a(15),
    "44": _a(25, LL), "48": _n_var(LLL, 322), "49": _a(3), "52": _b(8), "53": _n(16),
    "54": _a(20, LLL), "55": _b(255, LLL), "60": _n_var(LLL, 17), "61": _n_var(LLL, 29),
    "62": _b(512, LLL), "63": _a(163, LLL, "gbk"), "64": _b(8),
}
DIALECT["22"] = {k: v for k, v in DIALECT["22"].items() if v is not None}
ODD_FIXED = {"22": 3, "23": 3}  # fixed numerics of odd length: checked for their pad side
VAR_BCD = ("2", "32", "35", "36", "48", "60", "61")
FRAMING = 5 + 6  # TPDU, then the 6-byte header: the ISO message starts after them


@dataclass(frozen=True)
class Sent:
    mti: str
    fields: dict[str, str]  # as the independent spec decodes them
    raw: dict[str, bytes]  # each field's data bytes as they were on the wire
    raw_len: dict[str, bytes]  # each variable field's length prefix


def decode(payload: bytes) -> Sent:
    doc, enc = iso8583.decode(payload[FRAMING:], DIALECT)
    fields = {k: v for k, v in doc.items() if k not in ("h", "t", "p")}
    return Sent(doc["t"], fields, {k: enc[k]["data"] for k in fields},
                {k: enc[k]["len"] for k in fields})


# -- what each message type must, may and must not carry (docs/dialect.md, section 3) ---------

@dataclass(frozen=True)
class Row:
    name: str
    mti: str
    proc: str | None  # field 3, None = absent
    cond: str | None  # field 25
    type_code: str  # 60.1
    network: tuple[str, ...]  # 60.3 values allowed
    must: frozenset[str]
    may: frozenset[str] = frozenset()
    maced: bool = False
    chip_tail: bool = False  # 60.4/60.5 follow (financial messages of a chip-capable terminal)
    f61_digits: int | None = None


SWIPE = frozenset({"35"})
SWIPE_MAY = frozenset({"36", "26", "52", "53"})
KEYED = frozenset({"2"})  # a card from the journal (void, completion, advice): 2, no 14
FIN = frozenset({"3", "11", "22", "25", "41", "42", "49", "60", "64"})


def _fin(name: str, mti: str, proc: str, cond: str, type_code: str, card: frozenset[str],
         extra: frozenset[str] = frozenset(), may: frozenset[str] = frozenset(),
         amount: bool = True, f61: int | None = None) -> Row:
    must = FIN | card | extra | ({"4"} if amount else set())
    card_may = SWIPE_MAY if card == SWIPE else frozenset()
    return Row(name, mti, proc, cond, type_code, ("000",), frozenset(must), may | card_may,
               maced=True, chip_tail=True, f61_digits=f61)


ROWS: dict[str, Row] = {r.name: r for r in (
    Row("sign-on", "0800", None, None, "00", ("003", "004"),
        frozenset({"11", "41", "42", "60", "63"})),
    Row("echo", "0820", None, None, "00", ("301",), frozenset({"41", "42", "60"})),
    Row("sign-off", "0820", None, None, "00", ("002",), frozenset({"11", "41", "42", "60"})),
    Row("deregister", "0820", None, None, "00", ("009",), frozenset({"11", "41", "42", "60"})),
    _fin("sale", "0200", "000000", "00", "22", SWIPE),
    _fin("balance", "0200", "310000", "00", "01", SWIPE, frozenset({"26", "52", "53"}),
         amount=False),
    _fin("void", "0200", "200000", "00", "23", KEYED, frozenset({"37", "38", "61"}), f61=12),
    _fin("refund", "0220", "200000", "00", "25", KEYED, frozenset({"37", "61"}),
         frozenset({"63"}), f61=16),
    _fin("pre-auth", "0100", "030000", "06", "10", SWIPE),
    _fin("pre-auth void", "0100", "200000", "06", "11", KEYED, frozenset({"38", "61"}), f61=16),
    _fin("completion", "0200", "000000", "06", "20", KEYED, frozenset({"38", "61"}), f61=16),
    _fin("completion void", "0200", "200000", "06", "21", KEYED, frozenset({"37", "38", "61"}),
         f61=16),
    Row("settlement", "0500", None, None, "00", ("201",),
        frozenset({"11", "41", "42", "48", "49", "60", "63"})),
    Row("batch upload", "0320", None, None, "00", ("201",),
        frozenset({"11", "41", "42", "48", "60"})),
    Row("batch upload end", "0320", None, None, "00", ("202", "207"),
        frozenset({"11", "41", "42", "48", "60"})),
    # The chip parameter download after the first sign-on (firmware/host/params_download.py).
    Row("CA key query", "0820", None, None, "00", ("372",),
        frozenset({"11", "41", "42", "60", "62"})),
    Row("CA key download", "0800", None, None, "00", ("370",),
        frozenset({"11", "41", "42", "60", "62"})),
    Row("CA key download end", "0800", None, None, "00", ("371",),
        frozenset({"11", "41", "42", "60"})),
    Row("AID query", "0820", None, None, "00", ("382",),
        frozenset({"11", "41", "42", "60", "62"})),
    Row("AID download", "0800", None, None, "00", ("380",),
        frozenset({"11", "41", "42", "60", "62"})),
    Row("AID download end", "0800", None, None, "00", ("381",),
        frozenset({"11", "41", "42", "60"})),
)}
REVERSIBLE = ("sale", "void", "pre-auth", "pre-auth void", "completion", "completion void")
REVERSAL_MUST = frozenset({"2", "3", "4", "11", "22", "25", "39", "41", "42", "49", "60", "64"})
REVERSAL_MAY = frozenset({"38", "61", "23", "55"})

# Every type of the dialect the firmware does not send, and why.
NOT_SENT = {
    "reversal of a balance enquiry": "a balance moves no money: not reversible (table, Rev = no)",
    "reversal of a refund": "a refund is an advice (0220): resent until acknowledged, never reversed",
    "offline sale / adjustment advices (0220 other than refund)": "the terminal approves nothing "
    "offline: every sale goes online first",
    "terminal parameter download (0800 60.3 = 360)": "settings come from settings.json",
    "issuer script result advice (0620)": "no chip kernel, so no issuer scripts run",
    "chip batch upload (0320 with 55)": "no chip transactions (no chip kernel yet)",
}


def classify(m: Sent) -> str:
    """The message type of a decoded request, from MTI, 3, 25, 60.1 and 60.3."""
    f60 = m.fields.get("60", "")
    type_code, network = f60[:2], f60[8:11]
    if m.mti == "0400":
        return "reversal of " + next(
            r.name for r in ROWS.values()
            if r.name in REVERSIBLE and (r.proc, r.cond, r.type_code) ==
            (m.fields.get("3"), m.fields.get("25"), type_code))
    candidates = [r for r in ROWS.values() if r.mti == m.mti and r.type_code == type_code
                  and r.proc == m.fields.get("3") and r.cond == m.fields.get("25")
                  and network in r.network]
    if m.mti == "0320":
        candidates = [r for r in candidates if (len(m.fields["48"]) == 4)
                      == (r.name == "batch upload end")]
    assert len(candidates) == 1, (m.mti, m.fields.get("3"), f60, [r.name for r in candidates])
    return candidates[0].name


# -- the day on the wire -------------------------------------------------------------------

async def _merchant_day(data_dir: Path, sim: SimulatorThread) -> None:
    t = Terminal(AppConfig(data_dir=data_dir))
    await t.start()  # sign-on

    def io(card: str, password: bool = False) -> OperatorInput:
        return OperatorInput(card=swipe(card), pin=pin_for(card),
                             password=PASSWORD if password else None)

    async def run(kind: TxnKind, amount: int | None = None, card: str = "cup_credit",
                  original: OriginalRef | None = None, lose_reply: str | None = None,
                  expect: str = "approved") -> Any:
        if lose_reply:
            sim.add_fault("drop", mti=lose_reply, count=1, process=True)
        r = await t.financial(TxnRequest(kind, amount, original=original), io(card, True))
        assert r.status == expect, (kind, r)
        return r

    def ref(r: Any) -> OriginalRef:
        return OriginalRef(invoice=r.record.invoice)

    try:
        ok, _, _ = await t.echo()
        assert ok
        s1 = await run(TxnKind.SALE, 1000)
        await run(TxnKind.SALE, 2000, card="cup_debit")  # with a PIN: 26, 52, 53
        await run(TxnKind.BALANCE, card="cup_debit")
        await run(TxnKind.VOID, original=ref(s1))
        s3 = await run(TxnKind.SALE, 3000, card="visa")
        await run(TxnKind.REFUND, 1000, card="visa",
                  original=OriginalRef(rrn=s3.record.rrn, date=s3.record.local_date))
        pa = await run(TxnKind.PREAUTH, 5000, card="visa")
        comp = await run(TxnKind.COMPLETION, 4000, card="visa", original=ref(pa))
        await run(TxnKind.COMPLETION_VOID, card="visa", original=ref(comp))
        pa2 = await run(TxnKind.PREAUTH, 2500, card="visa")
        await run(TxnKind.PREAUTH_VOID, card="visa", original=ref(pa2))
        # A reversal of every reversible type: the reply to the original is lost.
        await run(TxnKind.SALE, 1100, lose_reply="0200", expect="reversed")
        s5 = await run(TxnKind.SALE, 1200)
        await run(TxnKind.VOID, original=ref(s5), lose_reply="0200", expect="reversed")
        await run(TxnKind.PREAUTH, 1300, card="visa", lose_reply="0100", expect="reversed")
        pa3 = await run(TxnKind.PREAUTH, 1400, card="visa")
        await run(TxnKind.COMPLETION, 1400, card="visa", original=ref(pa3), lose_reply="0200",
                  expect="reversed")
        await run(TxnKind.PREAUTH_VOID, card="visa", original=ref(pa3), lose_reply="0100",
                  expect="reversed")
        pa4 = await run(TxnKind.PREAUTH, 1500, card="visa")
        comp4 = await run(TxnKind.COMPLETION, 1500, card="visa", original=ref(pa4))
        await run(TxnKind.COMPLETION_VOID, card="visa", original=ref(comp4), lose_reply="0200",
                  expect="reversed")
        # A sale the host never booked: the settlement is unbalanced and the batch is uploaded.
        j = t.journal
        unknown = j.begin(PendingDraft(TxnKind.SALE, 700, "156", "6222020000000000012",
                                       "622202******0012", False, "swipe", False, "01", "1201",
                                       "101010"))
        j.apply(unknown.id, TxnEvent.APPROVE, HostResult("00", rrn="999999999999",
                                                         auth_code="000001"))
        assert (await t.settle(PASSWORD)).status in ("approved", "done", "settled")
        await run(TxnKind.SALE, 1600)
        assert (await t.settle(PASSWORD)).status in ("approved", "done", "settled")
        assert await t.sign_off()
        await deregister(t, str(t.data_dir / "export"), "en", "keypad")
    finally:
        await t.close()


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Sent]]:
    tmp = tmp_path_factory.mktemp("wire")
    sim = SimulatorThread(tmp / "ledger.db", terminals=[(TID, MID, TMK)])
    sim.start()
    tap = WireTap(sim.port)
    try:
        data_dir = provision(tmp / "terminal", tap.port)
        settings = json.loads((data_dir / "settings.json").read_text())
        assert settings["merchant"]["tid"] == TID
        asyncio.run(_merchant_day(data_dir, sim))
        yield [decode(f.payload) for f in tap.frames() if f.to_host]
    finally:
        tap.close()
        sim.stop()


def _of(traffic: list[Sent], name: str) -> list[Sent]:
    return [m for m in traffic if classify(m) == name]


EVERY_TYPE = [*ROWS, *(f"reversal of {n}" for n in REVERSIBLE)]


def test_every_message_type_was_sent(traffic):
    assert sorted({classify(m) for m in traffic}) == sorted(EVERY_TYPE)


@pytest.mark.parametrize("name", list(ROWS))
def test_fields_of_each_type(traffic, name):
    row = ROWS[name]
    for m in _of(traffic, name):
        present = set(m.fields)
        assert row.must <= present, (name, sorted(row.must - present))
        assert present <= row.must | row.may, (name, sorted(present - row.must - row.may))
        assert m.mti == row.mti
        f60 = m.fields["60"]
        assert f60[:2] == row.type_code and f60[8:11] in row.network, (name, f60)
        if row.chip_tail:  # a chip-capable terminal: 60.4 = 5, 60.5 = 0 (2 after a fallback)
            assert len(f60) == 13 and f60[11] == "5" and f60[12] in "02", (name, f60)
        else:
            assert len(f60) == 11, (name, f60)
        assert ("64" in m.fields) is row.maced, name
        if row.f61_digits is not None:
            assert len(m.fields["61"]) == row.f61_digits, (name, m.fields["61"])


@pytest.mark.parametrize("name", REVERSIBLE)
def test_reversal_of_each_type(traffic, name):
    row = ROWS[name]
    originals = {m.fields["11"]: m for m in _of(traffic, name)}
    reversals = _of(traffic, f"reversal of {name}")
    for rev in reversals:
        present = set(rev.fields)
        assert present >= REVERSAL_MUST, (name, sorted(REVERSAL_MUST - present))
        assert present <= REVERSAL_MUST | REVERSAL_MAY, (name, sorted(present - REVERSAL_MUST
                                                                      - REVERSAL_MAY))
        orig = originals[rev.fields["11"]]
        for k in ("3", "4", "22", "25", "49", "60"):
            assert rev.fields[k] == orig.fields[k], (name, k)
        for k in ("38", "61"):
            if k in orig.fields:
                assert rev.fields[k] == orig.fields[k], (name, k)
        assert rev.fields["39"] in ("98", "A0", "06")
        assert ("61" in rev.fields) is (row.f61_digits is not None)


def test_values_fixed_by_the_dialect(traffic):
    for m in traffic:
        f = m.fields
        if "49" in f:
            assert f["49"] == "156"
        if "41" in f:
            assert (f["41"], f["42"]) == (TID, MID)
        if "22" in f:
            assert f["22"][:2] in ("01", "02", "05", "07") and f["22"][2] in "12"
            assert ("52" in f) is (f["22"][2] == "1") or m.mti == "0400"
        if "26" in f:
            assert f["26"] == "12" and "52" in f
        if "53" in f:
            assert f["53"] == "2600000000000000"
        if (m.mti == "0800" and classify(m) == "sign-on") or m.mti == "0500":
            assert len(f["63"]) == 3
        if m.mti == "0500":
            assert len(f["48"]) == 62 and f["48"][30] == "0" and f["48"][61] == "0"
        if "14" in f:
            assert "2" in f


def test_refund_carries_the_card_organisation(traffic):
    (refund,) = _of(traffic, "refund")
    assert refund.fields["63"] == "VIS"


def test_pad_nibbles_sit_where_the_dialect_says(traffic):
    """Fixed numerics of odd length: 22 pads last (left-justified), the others first; variable
    numerics pad last, and their length prefix counts digits."""
    seen: set[str] = set()
    for m in traffic:
        for k, digits in ODD_FIXED.items():
            if k in m.raw:
                raw = m.raw[k].hex()
                assert len(raw) == digits + 1
                assert (raw[-1] if k == "22" else raw[0]) == "0", (k, raw)
                seen.add(k)
        for k in VAR_BCD:
            if k in m.raw:
                count = int(m.raw_len[k].hex())
                assert count == len(m.fields[k])
                raw = m.raw[k].hex().upper()
                assert raw[:count] == m.fields[k] and len(raw) == count + count % 2
                if count % 2:
                    assert raw[-1] == "0", (k, raw)
                seen.add(k)
    assert {"22", "2", "35", "48", "60", "61"} <= seen


def test_every_type_the_firmware_cannot_send_is_listed_with_a_reason():
    assert all(reason for reason in NOT_SENT.values())
    sent = set(EVERY_TYPE)
    assert not sent & set(NOT_SENT)
