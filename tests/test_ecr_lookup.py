"""ECR `lookup` (and `last`) say what happened to a record in every state of the state table
(firmware/engine/states.py): a declined or reversed record never reads "Approved"."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest
from helpers import run, terminal

from board.sim.firmware import sim_card
from firmware.app.frontends.ecr_replies import STATE_ANSWERS
from firmware.app.frontends.ecr_server import EcrServer
from firmware.ecr.protocol import parse_request
from firmware.engine.model import HostResult, PendingDraft
from firmware.engine.states import TRANSITIONS, TxnEvent, TxnState
from firmware.host.messages import TxnKind, mask_pan

PAN = "6225880000000001"


def path_to(target: TxnState) -> tuple[bool, list[TxnEvent]]:
    """(born as an advice?, the events from birth to `target`), shortest, through TRANSITIONS."""
    for advice, start in ((False, TxnState.PENDING), (True, TxnState.ADVICE_DUE)):
        seen, todo = {start}, deque([(start, [])])
        while todo:
            state, events = todo.popleft()
            if state is target:
                return advice, events
            for (src, event), dst in TRANSITIONS.items():
                if src is state and dst not in seen:
                    seen.add(dst)
                    todo.append((dst, [*events, event]))
    raise AssertionError(f"no path to {target}")


def test_every_state_has_an_answer() -> None:
    assert set(STATE_ANSWERS) == set(TxnState)
    results = [result for result, _ in STATE_ANSWERS.values()]
    assert len(results) == len(set(results)), "a till must tell the states apart by `result`"


@pytest.mark.parametrize("state", list(TxnState))
def test_lookup_and_last_say_what_happened(data_dir, state: TxnState) -> None:
    advice, events = path_to(state)

    async def go() -> tuple[Any, dict[str, Any], dict[str, Any]]:
        t = await terminal(data_dir)
        try:
            j = t.journal
            record = j.begin(PendingDraft(
                kind=TxnKind.REFUND if advice else TxnKind.SALE, amount=1234, currency="156", pan=PAN,
                pan_masked=mask_pan(PAN), foreign=False, entry_mode="swipe", pin_entered=False,
                operator="01", local_date="0101", local_time="101010", advice=advice))
            for event in events:
                answer = {TxnEvent.APPROVE: HostResult("00", rrn="000000000042", auth_code="A1"),
                          TxnEvent.DECLINE: HostResult("51")}.get(event)
                record = j.apply(record.id, event, answer,
                                 problem="cannot be built" if event is TxnEvent.QUARANTINE else None)
            ecr = EcrServer(t, "127.0.0.1", 0, None, test_cards=sim_card)
            looked = await ecr.dispatch(parse_request(json.dumps(
                {"op": "lookup", "voucher": record.invoice}).encode()))
            last = await ecr.dispatch(parse_request(b'{"op": "last"}'))
            return record, looked, last
        finally:
            await t.close()

    record, looked, last = run(go())
    assert record.state is state
    for reply in (looked, last):
        assert reply["ok"] and reply["state"] == state.value and reply["voucher"] == record.invoice
        assert reply["result"] == STATE_ANSWERS[state][0]
        assert reply["message"] and (reply["message"] == "Approved") == (state is TxnState.APPROVED)
    if state is TxnState.DECLINED:
        assert looked["code"] == "51" and looked["message"] == last["message"] != "Declined"
