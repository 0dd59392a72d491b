"""ECR till pairing over SPAKE2 (issue 17; docs/ecr.md, "Pairing, message by message"), over real
TCP on 127.0.0.1 against the terminal's own ECR server: the four lines and what each carries,
one guess per window (a second `pair` while the first waits for its confirmation is refused),
an impostor till's wrong confirmation, no confirmation in time, a message that is not a point
of the group, an impostor terminal that learns nothing it could search, a recorded pairing that
gives nothing offline (a dictionary search over 1000 codes, the right one among them), and a
recorded pairing replayed in a new window (even one showing the same code) that pairs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import re

import pytest
from ecrkit import Link, TillLink, ecr_terminal, pair_recorded, set_comms
from helpers import TID, run
from spake2.parameters.ed25519 import ParamsEd25519
from spake2.spake2 import SPAKE2_A, finalize_SPAKE2

from firmware.app.services import tills
from firmware.ecr import auth, client


def audit_text(t) -> str:
    return "\n".join(" | ".join(str(c) for c in row) for row in t.journal.audit_lines())


def ask(link: Link, obj: dict) -> dict:
    link.send(json.dumps(obj).encode())
    return link.reply()


# -- the exchange, message by message ------------------------------------------------------------

def test_the_four_lines_of_a_pairing_and_the_key_both_ends_keep(data_dir, sim):
    set_comms(data_dir, ecr_auth="paired")

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            code = tills.open_window(t, "T01").code
            link = Link(server.port)
            key, lines = await asyncio.to_thread(pair_recorded, link, "T01", code)
            status = await asyncio.to_thread(TillLink(server.port, "T01", key).ask, op="status")
            link.close()
            return code, key, lines, status, tills.book(t).key("T01"), audit_text(t)

    code, key, lines, status, stored, audits = run(go())
    pair, offer, confirm, paired = lines
    assert set(pair) == {"op", "id", "till", "msg"} and pair["till"] == "T01"
    assert re.fullmatch(r"41[0-9a-f]{64}", pair["msg"])  # side A, then the point
    assert offer["result"] == "confirm" and offer["ok"] is True and offer["id"] == "pair-1"
    assert offer["terminal"] == TID  # the terminal's identity in SPAKE2
    assert re.fullmatch(r"42[0-9a-f]{64}", offer["msg"]) and re.fullmatch(r"[0-9a-f]{64}", offer["confirm"])
    assert set(confirm) == {"op", "id", "till", "confirm"} and confirm["op"] == "pair_confirm"
    # the terminal's last reply is MACed under the new key, seq 0: the till knows it was kept
    assert paired["result"] == "paired" and paired["seq"] == 0 and paired["till"] == "T01"
    assert auth.check_reply(paired, "T01", 0, key)["message"] == "Till T01 paired"
    assert stored == key and status["ok"] is True and status["seq"] == 1
    assert not any(code in json.dumps(line) for line in lines)  # the code never crosses the link
    assert "ecr till paired" in audits and code not in audits


def test_a_second_pair_while_the_first_waits_for_its_confirmation_is_refused(data_dir, sim):
    """One guess per window: the first `pair` takes it, right or wrong."""
    set_comms(data_dir, ecr_auth="paired")

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            code = tills.open_window(t, "T02").code
            first, second = Link(server.port), Link(server.port)
            mine = auth.TillPairing("T02", code)
            offer = await asyncio.to_thread(ask, first, mine.request())
            other = await asyncio.to_thread(ask, second, auth.TillPairing("T02", code).request())
            paired = await asyncio.to_thread(ask, first, mine.answer(offer))
            key = mine.finish(paired)
            first.close()
            second.close()
            return offer, other, key, tills.book(t).key("T02")

    offer, other, key, stored = run(go())
    assert offer["result"] == "confirm"
    assert other["result"] == "refused" and "No pairing open for till T02" in other["message"]
    assert stored == key


def test_an_impostor_tills_wrong_confirmation_is_a_wrong_code_and_nothing_is_kept(data_dir, sim):
    set_comms(data_dir, ecr_auth="paired")

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            window = tills.open_window(t, "T03")
            link = Link(server.port)
            guess = auth.TillPairing("T03", "000000" if window.code != "000000" else "000001")
            offer = await asyncio.to_thread(ask, link, guess.request())
            # it cannot make the terminal's confirmation check, so it sends a made-up one
            refused = await asyncio.to_thread(ask, link, {"op": "pair_confirm", "till": "T03",
                                                          "confirm": os.urandom(32).hex()})
            again = await asyncio.to_thread(ask, link, {"op": "pair_confirm", "till": "T03",
                                                        "confirm": os.urandom(32).hex()})
            link.close()
            return offer, refused, again, window.state, tills.book(t).tills(), audit_text(t)

    offer, refused, again, state, book, audits = run(go())
    assert offer["result"] == "confirm"
    assert refused["result"] == "refused" and "Wrong pairing code" in refused["message"]
    assert refused["authenticated"] is False and "mac" not in refused
    assert "No pairing of till T03 is waiting for its confirmation" in again["message"]
    assert state == "wrong_code" and book == []
    assert "ecr till pairing refused" in audits
    assert "till T03: wrong pairing code; pairing closed (the till's confirmation is wrong)" in audits


def test_no_confirmation_in_time_closes_the_window_as_a_try(data_dir, sim, monkeypatch):
    """A till that sends `pair` and never confirms has had its guess (it can check it against the
    terminal's confirmation): the window closes after CONFIRM_S, audited under its source."""
    set_comms(data_dir, ecr_auth="paired")
    monkeypatch.setattr(tills, "CONFIRM_S", 0.3)

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            code = tills.open_window(t, "T06").code
            link = Link(server.port)
            pairing = auth.TillPairing("T06", code)
            offer = await asyncio.to_thread(ask, link, pairing.request())
            state = await asyncio.wait_for(tills.wait_window(t, "T06"), 10)
            late = await asyncio.to_thread(ask, link, pairing.answer(offer))
            link.close()
            return state, late, tills.book(t).tills(), audit_text(t)

    state, late, book, audits = run(go())
    assert state == "unconfirmed" and book == []
    assert late["result"] == "refused" and "is waiting for its confirmation" in late["message"]
    assert ("ecr tcp 127.0.0.1 | ecr till pairing refused | till T06: no confirmation from the "
            "till") in audits
    assert "pairing closed (unconfirmed)" in audits


def test_a_message_that_is_not_a_point_of_the_group_closes_the_window(data_dir, sim):
    set_comms(data_dir, ecr_auth="paired")

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            window = tills.open_window(t, "T07")
            link = Link(server.port)
            # the neutral element's encoding: SPAKE2 refuses it (it would fix the shared point)
            refused = await asyncio.to_thread(ask, link, {"op": "pair", "till": "T07",
                                                          "msg": "4101" + "00" * 31})
            link.close()
            return refused, window.state, audit_text(t)

    refused, state, audits = run(go())
    assert refused["result"] == "refused" and "pairing message is not valid" in refused["message"]
    assert state == "wrong_code"
    assert "till T07: its SPAKE2 message is not valid; pairing closed" in audits


def test_an_impostor_terminal_gets_an_abort_with_no_mac_to_search():
    """Someone who intercepts a genuine till's `pair` and answers it as the terminal must pick a
    code to answer with: the till checks the impostor's confirmation before it sends its own,
    so a wrong pick gets back an abort that carries nothing computed from the code."""
    till = auth.TillPairing("T01", "424242")
    request = auth.pair_request(till.request())
    wrong = auth.answer_pair("111111", TID, request)
    assert wrong is not None
    answer = till.answer({"result": "confirm", "terminal": TID, "msg": wrong.msg.hex(),
                          "confirm": wrong.confirm.hex()})
    assert answer == {"op": "pair_confirm", "till": "T01", "abort": True}
    with pytest.raises(auth.AuthError, match="confirmation is wrong"):
        till.finish({"result": "paired"})
    # the one guess, when right, is all it gets: the till then confirms
    right = auth.TillPairing("T01", "424242")
    offer = auth.answer_pair("424242", TID, auth.pair_request(right.request()))
    assert offer is not None
    answer = right.answer({"result": "confirm", "terminal": TID, "msg": offer.msg.hex(),
                           "confirm": offer.confirm.hex()})
    assert auth.confirm_ok(offer, auth.pair_request(answer))


def test_the_client_says_a_wrong_code_and_writes_no_till_file(data_dir, sim, tmp_path):
    set_comms(data_dir, ecr_auth="paired")
    till_file = tmp_path / "till" / "ecr-till.json"

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            window = tills.open_window(t, "T05")
            wrong = f"{(int(window.code) + 5) % 10**6:06d}"
            args = ["--port", str(server.port), "--till-file", str(till_file), "pair", "T05", wrong]
            with pytest.raises(SystemExit) as refused:
                await asyncio.to_thread(client.main, args)
            return str(refused.value), window.state, tills.book(t).tills()

    said, state, book = run(go())
    assert said.startswith("not paired: the terminal's confirmation is wrong"), said
    assert not till_file.exists() and state == "wrong_code" and book == []


# -- what a recording gives: nothing to search offline -------------------------------------------

def _confirmations(spake_key: bytes, till: str, script: bytes) -> tuple[bytes, bytes]:
    keys = auth.pairing_keys(spake_key, till)
    return (auth.confirmation(keys.terminal_confirm, script),
            auth.confirmation(keys.till_confirm, script))


def test_a_recorded_pairing_gives_a_dictionary_search_nothing(data_dir, sim):
    """Everything that crossed the link during a genuine pairing, and 1000 candidate codes with
    the right one among them. For each candidate, what a listener can compute: the messages
    unblinded with it (each gives a valid point: no candidate is ruled out), the SPAKE2 key and
    both confirmations with a secret of the listener's own, and confirmation keys made from the
    code alone (the previous design's weakness). None matches the recording, the right code's
    included. The same search given the till's secret (it never leaves the till; read here only
    to show the search would find the code if the recording held what it needs) picks the
    right code out, and only it."""
    set_comms(data_dir, ecr_auth="paired")
    pairing_box: list[auth.TillPairing] = []

    def genuine(link: Link, code: str) -> list[dict]:
        pairing = auth.TillPairing("T04", code)
        pairing_box.append(pairing)
        lines = [pairing.request("p1")]
        lines.append(ask(link, lines[0]))
        lines.append(pairing.answer(lines[1], "p2"))
        lines.append(ask(link, lines[2]))
        pairing.finish(lines[3])
        return lines

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            code = tills.open_window(t, "T04").code
            link = Link(server.port)
            lines = await asyncio.to_thread(genuine, link, code)
            link.close()
            return code, lines

    code, lines = run(go())
    pair, offer, confirm, _ = lines
    till_msg, terminal_msg = bytes.fromhex(pair["msg"]), bytes.fromhex(offer["msg"])
    terminal_confirm = bytes.fromhex(offer["confirm"])
    till_confirm = bytes.fromhex(confirm["confirm"])
    recorded = {terminal_confirm, till_confirm}
    script = auth.transcript("T04", offer["terminal"], till_msg, terminal_msg)
    ids = (b"T04", offer["terminal"].encode())

    rng = random.Random(17)
    candidates = [f"{n:06d}" for n in rng.sample(range(10**6), 1000) if f"{n:06d}" != code][:999]
    candidates.append(code)
    rng.shuffle(candidates)
    assert len(set(candidates)) == 1000 and code in candidates

    params = ParamsEd25519
    group = params.group
    star_x = group.bytes_to_element(till_msg[1:])
    star_y = group.bytes_to_element(terminal_msg[1:])
    mine = group.random_scalar(os.urandom)  # the listener's own secret
    # the till's secret, from its side made again (see the docstring)
    side = SPAKE2_A(b"000000", idA=b"T04", idB=b"", entropy_f=auth._stream(pairing_box[0]._seed))
    side.start()
    x_n = params.N.scalarmult(side.xy_scalar)  # x*N
    x_star_y = star_y.scalarmult(side.xy_scalar)  # x*Y*

    listener_hits, unblinded, with_secret = [], set(), []
    for candidate in candidates:
        pw = candidate.encode()
        scalar = group.password_to_scalar(pw)
        # the till's message unblinded with the candidate: some point of the group, every time
        point = star_x.add(params.M.scalarmult(-scalar))
        unblinded.add(point.to_bytes())
        # a SPAKE2 key with the listener's secret in the terminal's place, and its confirmations
        k_bytes = point.scalarmult(mine).to_bytes()
        key = finalize_SPAKE2(*ids, till_msg[1:], terminal_msg[1:], k_bytes, pw)
        tries = set(_confirmations(key, "T04", script))
        # keys from the code alone
        for made in (hashlib.sha256(pw).digest(), pw, group.scalar_to_bytes(scalar)):
            tries |= set(_confirmations(made, "T04", script))
        if tries & recorded:
            listener_hits.append(candidate)
        # the control: with the till's secret x, K = x*(Y* - pw*N) = x*Y* - pw*(x*N)
        k_true = x_star_y.add(x_n.scalarmult(-scalar)).to_bytes()
        key = finalize_SPAKE2(*ids, till_msg[1:], terminal_msg[1:], k_true, pw)
        if set(_confirmations(key, "T04", script)) == recorded:
            with_secret.append(candidate)

    assert len(unblinded) == 1000  # every candidate explains the message as well as the code
    assert listener_hits == []  # the recording confirms no candidate, the right one included
    assert with_secret == [code]  # ... though it would, to someone holding the till's secret


def test_a_recorded_pairing_replayed_in_a_new_window_pairs_nothing(data_dir, sim, monkeypatch):
    """A listener replays the genuine till's `pair` and `pair_confirm` in the next window, even
    one showing the very same code: the terminal's SPAKE2 secret is new, so its message and the
    confirmation it expects are new; the replayed confirmation is a wrong code, audited, and the
    till keeps its key."""
    set_comms(data_dir, ecr_auth="paired")

    async def go():
        async with ecr_terminal(data_dir) as (t, server):
            window = tills.open_window(t, "T08")
            code = window.code
            link = Link(server.port)
            key, lines = await asyncio.to_thread(pair_recorded, link, "T08", code)
            monkeypatch.setattr(tills, "new_code", lambda: code)  # the same code again
            again = tills.open_window(t, "T08")
            assert again.code == code
            replayed_offer = await asyncio.to_thread(ask, link, lines[0])
            refused = await asyncio.to_thread(ask, link, lines[2])
            still = await asyncio.to_thread(TillLink(server.port, "T08", key).ask, op="status")
            link.close()
            return (lines, replayed_offer, refused, again.state, tills.book(t).key("T08") == key,
                    still, audit_text(t))

    lines, offer, refused, state, kept, still, audits = run(go())
    assert offer["result"] == "confirm"
    assert offer["msg"] != lines[1]["msg"] and offer["confirm"] != lines[1]["confirm"]
    assert refused["result"] == "refused" and "Wrong pairing code" in refused["message"]
    assert state == "wrong_code" and kept and still["ok"] is True
    assert "till T08: wrong pairing code; pairing closed (the till's confirmation is wrong)" in audits
