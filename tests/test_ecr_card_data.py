"""Card data (`card`, `pin`) never comes over the ECR link on a real board (issue 12, item 21):
refused in one place, before anything runs, for every op the link knows, the app companions'
ops (held orders, review, deregistration) included. A real board serves paired tills only
(issue 17): the till here is paired, its requests signed, and card data is still refused.
"""

from __future__ import annotations

import pytest
from ecrkit import SignedProcess, paired_offline
from helpers import PASSWORD, TID, TerminalProcess

from firmware.app.boards import profile
from firmware.app.services.registry import ecr_ops
from firmware.ecr.protocol import OPS

PLACEHOLDERS = {
    "amount": 100, "voucher": "000001", "password": PASSWORD, "orig_rrn": "123456789012",
    "orig_date": "0101", "orig_voucher": "000001", "orig_batch": "000001", "batch": "000001",
    "old": PASSWORD, "new": "135790", "reason": "other", "card": "visa", "pin": "123456",
    "job": 1, "print": True, "all": True, "order": 1, "kind": "x", "path": "/mnt", "note": "n",
    "ref": "R1",
}
ALL_OPS = {**OPS, **ecr_ops()}
CASES = [(op, name) for op in sorted(ALL_OPS) for name in ("card", "pin")]


@pytest.fixture(scope="module")
def rpi(tmp_path_factory):
    from helpers import provision, start_sim

    assert not profile("rpi").ecr_accepts_card_data
    tmp = tmp_path_factory.mktemp("rpi")
    sim = start_sim(tmp)
    data = provision(tmp / "terminal", sim.port)
    term = SignedProcess(TerminalProcess(data, ["--board", "rpi", "--printer", "", "--reader", ""]),
                         "T01", paired_offline(data, "T01"))
    term.start()
    parked = term.request(op="held_park", amount=2500, ref="TABLE-4")  # no card data: allowed
    assert parked["result"] == "stored", parked
    yield term, sim
    term.stop()
    sim.stop()


@pytest.mark.parametrize(("op", "name"), CASES)
def test_card_data_is_refused_for_every_op_on_a_real_board(rpi, op: str, name: str):
    term, sim = rpi
    required, optional = ALL_OPS[op]
    request = {"op": op, "id": f"{op}-{name}", **{f: PLACEHOLDERS[f] for f in required},
               name: PLACEHOLDERS[name]}
    reply = term.request(timeout=10, **request)
    assert reply["ok"] is False and reply["result"] == "error", reply
    assert reply["id"] == f"{op}-{name}"
    if name in (*required, *optional):
        given = reply["message"].split(")")[0]
        assert given.startswith("card data (") and name in given, reply
        assert "cannot come over the ECR link on this board" in reply["message"]
    else:
        assert f"does not take {name}" in reply["message"]
    assert sim.ledger.rows(TID) == []  # nothing reached the host
    orders = term.request(op="held_list")["orders"]
    assert [(o["id"], o["status"]) for o in orders] == [(1, "HELD")]  # nor touched the order
