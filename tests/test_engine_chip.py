"""The financial flow with a chip card, without any I/O: the card's word after the host's.

Proves: only host approval AND the card's acceptance (TC) approve; a card that declines after
the host approved (or is pulled, or the cashier cancels before its second GENERATE AC) makes the
record REVERSAL_DUE with reason 06 and the host's auth code, written before anything is sent; a
card that declined before the write ends the flow with nothing written; the CVM list, not the
service code, decides the PIN; a chip card's wrong PIN is not asked again in the same session;
and the draft carries the chip data the journal keeps.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

import pytest

from firmware.engine import events as ev
from firmware.engine.financial import FinancialFlow, FlowContext
from firmware.engine.model import CardRead, TxnRecord, TxnRequest
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.messages import Message, Terminal, TxnKind

NOW = datetime(2026, 11, 22, 10, 30, 0)
CTX = FlowContext(term=Terminal("12345678", "123456789012345"), batch="000001", now=NOW,
                  reply_timeout=5.0, chip_capable=True)
ICC = "9F2608" + "11" * 8 + "9F360200019505" + "0000000000"
TAGS = "4F08A000000333010101" + "9F3602" + "0001"


def chip_card(cvm: str = "online_pin") -> CardRead:
    return CardRead("chip", "6228480000000000018", "3012", "220",
                    "6228480000000000018=30122200000000000", card_seq="001", icc_data=ICC,
                    chip_cvm=cvm, chip_tags=TAGS)


def record(**kw) -> TxnRecord:
    base = dict(id=1, kind=TxnKind.SALE, state=TxnState.PENDING, stan="000007", batch="000001",
                invoice="000003", amount=1000, currency="156", pan_masked="622848*********0018",
                foreign=False, entry_mode="chip", pin_entered=True, operator="01",
                local_date="1122", local_time="103000", created_at=0.0, pos_entry="051",
                card_seq="001", icc_data=ICC, chip_tags=TAGS)
    base.update(kw)
    return TxnRecord(**base)


def to_reply(flow: FinancialFlow, card: CardRead) -> list:
    actions = flow.start()
    assert isinstance(actions[0], ev.AskCard)
    actions = flow.handle(ev.CardPresented(card))
    if isinstance(actions[0], ev.AskPin):
        actions = flow.handle(ev.PinEntered(b"\x11" * 8))
    assert isinstance(actions[0], ev.WritePending), actions
    draft = actions[0].draft
    assert (draft.card_seq, draft.icc_data, draft.chip_tags) == ("001", ICC, TAGS)
    assert draft.pos_entry == ("051" if card.chip_cvm == "online_pin" else "052")
    assert draft.read_cap == "50"  # 60.4 chip capable, 60.5 normal
    actions = flow.handle(ev.PendingWritten(record(pos_entry=draft.pos_entry,
                                                   read_cap=draft.read_cap)))
    send = actions[0]
    assert isinstance(send, ev.SendRequest)
    assert send.message.fields["55"] == ICC.upper() and send.message.fields["23"] == "001"
    assert send.message.fields["60"].endswith("50")
    return actions


def reply(code: str, icc: str | None = "910A" + "22" * 8 + "3030") -> ev.ReplyReceived:
    fields = {"39": code, "37": "000000123456", "38": "654321"}
    if icc:
        fields["55"] = icc
    return ev.ReplyReceived(Message("0210", fields))


def test_host_approval_and_the_cards_tc_approve():
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    to_reply(flow, chip_card())
    actions = flow.handle(reply("00"))
    assert actions == [ev.CompleteChip("00", "910A" + "22" * 8 + "3030")]
    actions = flow.handle(ev.ChipCompleted(True, "9F2608" + "33" * 8))
    out = actions[0]
    assert isinstance(out, ev.WriteOutcome) and out.event is TxnEvent.APPROVE and out.receipt
    assert out.chip_tags == "9F2608" + "33" * 8
    done = flow.handle(ev.OutcomeWritten(record(state=TxnState.APPROVED)))
    assert done[-1].result.status == "approved"


@pytest.mark.parametrize("reason", ["the card declined (AAC)", "card removed"])
def test_card_declining_after_host_approval_is_reversed_and_never_approved(reason):
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    to_reply(flow, chip_card())
    flow.handle(reply("00"))
    actions = flow.handle(ev.ChipCompleted(False, "9F2608" + "44" * 8, reason))
    out = actions[0]
    assert isinstance(out, ev.WriteOutcome)
    assert out.event is TxnEvent.LOSE_REPLY and out.reversal_reason == "06"
    assert out.result is not None and out.result.auth_code == "654321"  # back in the 0400's 38
    assert out.chip_tags == "9F2608" + "44" * 8
    done = flow.handle(ev.OutcomeWritten(record(state=TxnState.REVERSAL_DUE)))
    result = done[-1].result
    assert result.status == "card_declined" and result.message_key == "declined_by_card"
    assert result.detail == reason


@pytest.mark.parametrize("how", ["cancel event", "card session cancelled"])
def test_cancel_while_the_card_finishes_reverses_the_approval(how):
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    to_reply(flow, chip_card())
    flow.handle(reply("00"))
    if how == "cancel event":
        actions = flow.handle(ev.Cancel())
    else:
        actions = flow.handle(ev.ChipCompleted(False, None, "cancelled"))
    assert actions[0].event is TxnEvent.LOSE_REPLY and actions[0].reversal_reason == "06"
    done = flow.handle(ev.OutcomeWritten(record(state=TxnState.REVERSAL_DUE)))
    assert done[-1].result.status == "cancelled_after_send"  # the cashier's doing, not the card's


def test_host_decline_is_a_decline_whatever_the_card_says():
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    to_reply(flow, chip_card())
    actions = flow.handle(reply("51", icc=None))
    assert actions == [ev.CompleteChip("51", None)]
    out = flow.handle(ev.ChipCompleted(False, "9F2701" + "00", "host declined"))[0]
    assert out.event is TxnEvent.DECLINE and out.chip_tags == "9F270100"


def test_a_chip_cards_wrong_pin_is_not_asked_again():
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    to_reply(flow, chip_card())
    flow.handle(reply("55", icc=None))
    flow.handle(ev.ChipCompleted(False, None, "host declined"))
    done = flow.handle(ev.OutcomeWritten(record(state=TxnState.DECLINED, response_code="55")))
    assert isinstance(done[-1], ev.Finish) and done[-1].result.status == "declined"


def test_signature_card_asks_no_pin():
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    flow.start()
    actions = flow.handle(ev.CardPresented(chip_card("signature")))
    assert isinstance(actions[0], ev.WritePending)  # no AskPin: the CVM list chose signature
    assert not actions[0].draft.pin_entered


def test_online_pin_card_asks_the_pin_whatever_its_service_code():
    card = dataclasses.replace(chip_card("online_pin"), service_code="221")
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    flow.start()
    assert isinstance(flow.handle(ev.CardPresented(card))[0], ev.AskPin)


def test_card_declined_before_the_write_leaves_nothing():
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), CTX)
    flow.start()
    actions = flow.handle(ev.CardDeclined("declined_offline", "the card declined offline (AAC)"))
    assert not any(isinstance(a, ev.WritePending | ev.SendRequest) for a in actions)
    assert isinstance(actions[0], ev.AuditNote)
    result = actions[-1].result
    assert (result.status, result.message_key) == ("declined", "declined_offline")


@pytest.mark.parametrize("code,want", [("80", "802"), ("02", "022")])
def test_a_fallback_swipe_says_so_in_22_per_acquirer_and_in_60_5(code, want):
    """The CUP dialect's 80x, or 02x where the acquirer asks it (settings comms.fallback_entry_code);
    60.4/60.5 = 52 either way, and the record keeps what was sent for its reversal."""
    card = CardRead("fallback", "6228480000000000117", "3012", "220",
                    "6228480000000000117=30122200000000000")
    ctx = dataclasses.replace(CTX, fallback_entry_code=code, allow_pin_bypass=True)
    flow = FinancialFlow(TxnRequest(TxnKind.SALE, 1000), ctx)
    flow.start()
    actions = flow.handle(ev.CardPresented(card))
    if isinstance(actions[0], ev.AskPin):
        actions = flow.handle(ev.PinEntered(None))
    draft = actions[0].draft
    assert (draft.pos_entry, draft.read_cap) == (want, "52")
