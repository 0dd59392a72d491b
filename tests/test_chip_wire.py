"""Conformance of field 55 on the wire, decoded by a decoder that is none of ours (the ber-tlv package).

Every chip message one session sends (a sale with its script's advice, a card declining after
approval and its reversal, an unbalanced settlement's chip upload) and every reply the host sends
back is captured at the host link, and its field 55 is read with that parser: a BER-TLV it cannot
walk is a defect, and each message type must carry exactly the tags
its list names (docs/dialect.md, "Chip"), in that order, and never 57, 5A or 5F20."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from ber_tlv.tlv import Tlv
from chipkit import emulated_reader
from helpers import PASSWORD, run, swipe

from board.sim.chipcards import make_card
from firmware.app.core.contract import OperatorInput
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.engine.model import TxnRequest
from firmware.host.messages import TxnKind

REQUEST = ("9F26", "9F27", "9F10", "9F37", "9F36", "95", "9A", "9C", "9F02", "5F2A", "82",
           "9F1A", "9F03", "9F33", "9F34", "9F35", "9F1E", "84", "9F09", "9F41", "9F63")
# What an ARQC request cannot go without: the cryptogram, the values it covers, the context.
REQUEST_MUST = frozenset(REQUEST) - {"9F41", "9F63"}
REVERSAL = ("95", "9F10", "9F1E", "DF31", "9F36")
SCRIPT_ADVICE = ("9F33", "95", "9F37", "9F1E", "9F10", "9F26", "9F36", "82", "DF31", "9F1A", "9A")
NEVER = frozenset({"57", "5A", "5F20"})


def ber_tags(hex55: str) -> list[tuple[str, bytes]]:
    """Top-level (tag, value) pairs of a field 55, by the ber-tlv package's parser."""
    return [(f"{tag:X}", value) for tag, value in Tlv.parse(bytes.fromhex(hex55))]


class Tap:
    """Every request the host link sends, with its reply (None when none came)."""

    def __init__(self, t: Terminal) -> None:
        self.pairs: list[tuple[object, object]] = []
        link = t.link
        assert link is not None
        original = link.request

        async def tap(msg, *, mac: bool, timeout: float):
            self.pairs.append((msg, None))
            reply = await original(msg, mac=mac, timeout=timeout)
            self.pairs[-1] = (msg, reply)
            return reply

        link.request = tap  # type: ignore[method-assign]


def in_order(tags: list[str], order: tuple[str, ...]) -> bool:
    return tags == [t for t in order if t in tags]


@pytest.fixture
def reader(tmp_path: Path):
    yield from emulated_reader(tmp_path)


def test_every_chip_message_carries_its_tags_and_only_those(data_dir, sim, reader):
    debit, declines = make_card("cup-debit"), make_card("declines-2nd")

    async def chip_sale(t, card, amount, pin=None):
        task = asyncio.create_task(t.financial(TxnRequest(TxnKind.SALE, amount),
                                               OperatorInput(pin=pin)))
        while not reader.armed:
            await asyncio.sleep(0.01)
        reader.insert_chip(card)
        try:
            return await task
        finally:
            reader.remove_chip()

    async def go():
        t = Terminal(AppConfig(data_dir=data_dir, reader_path=str(reader.device_path)))
        await t.start()
        spy = Tap(t)
        sim.add_fault("script_harmless", mti="0200")
        assert (await chip_sale(t, debit, 1500, "123456")).status == "approved"
        assert (await chip_sale(t, declines, 1600)).message_key == "declined_by_card_reversed"
        # the script advice went before the second sale; now an unbalanced batch to upload
        sim.add_rule("96", mti="0400")
        sim.add_fault("close", mti="0200")
        lost = await t.financial(TxnRequest(TxnKind.SALE, 7700),
                                 OperatorInput(card=swipe("cup_credit")))
        t.journal.resolve_manually(lost.record.id, "supervisor", "confirmed by phone")
        sim.clear_rules()
        sim.clear_faults()
        assert (await t.settle(PASSWORD)).message_key == "settled_unbalanced"
        await t.close()
        return spy

    spy = run(go())
    seen: dict[str, int] = {}
    for sent, reply in spy.pairs:
        if "55" in sent.fields:
            pairs = ber_tags(sent.fields["55"])
            tags = [tag for tag, _ in pairs]
            assert len(tags) == len(set(tags)) and not NEVER & set(tags), (sent.mti, tags)
            network = sent.fields.get("60", "")[8:11]
            kind = {"0200": "request", "0400": "reversal", "0620": "advice"}.get(
                sent.mti, "upload" if network == "203" else sent.mti)
            seen[kind] = seen.get(kind, 0) + 1
            if kind in ("request", "upload"):  # an upload carries the record's request 55
                assert set(tags) >= REQUEST_MUST and in_order(tags, REQUEST), (kind, tags)
            elif kind == "reversal":
                assert {"95", "9F10", "9F1E", "9F36"} <= set(tags), tags
                assert in_order(tags, REVERSAL), tags
            elif kind == "advice":
                assert "DF31" in tags and in_order(tags, SCRIPT_ADVICE), tags
                df31 = dict(pairs)["DF31"]
                assert len(df31) % 5 == 0 and df31[0] >> 4 == 2  # script done, all commands ok
            else:
                raise AssertionError(f"55 in an unexpected message {sent.mti}")
        if reply is not None and "55" in reply.fields:
            rtags = [tag for tag, _ in ber_tags(reply.fields["55"])]
            assert rtags[0] == "91" and set(rtags) <= {"91", "71", "72"}, rtags
            assert len(dict(ber_tags(reply.fields["55"]))["91"]) == 10  # ARPC 8 + ARC 2
    # two chip sales; the one the card declined is reversed, so only the approved one is uploaded
    assert seen == {"request": 2, "advice": 1, "reversal": 1, "upload": 1}, seen
    first = next(m for m, _ in spy.pairs if m.mti == "0200" and "55" in m.fields)
    upload = next(m for m, _ in spy.pairs if m.mti == "0320" and "55" in m.fields)
    assert upload.fields["55"] == first.fields["55"]  # the record's 55 as it was sent
