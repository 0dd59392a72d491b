"""The kill test: the terminal process is SIGKILLed at random points during a stream
of mixed transactions, restarted each time; at the end settlement balances with the
simulator's ledger on the first try and the two books agree record for record.

KILL_TEST_TXNS (default 200) and KILL_TEST_SEED choose the size and the schedule;
a failing schedule is replayed by setting the seed it printed.
"""

from __future__ import annotations

import os
import random
import time

from helpers import PASSWORD, TID, TerminalProcess, assert_agree, open_journal, provision

CARDS = ["cup_credit", "visa", "mastercard", "cup_debit"]
PINS = {"cup_debit": "123456"}


def test_sigkill_during_mixed_stream_then_settlement_balances(tmp_path, sim):
    n_txns = int(os.environ.get("KILL_TEST_TXNS", "200"))
    seed = int(os.environ.get("KILL_TEST_SEED", str(random.SystemRandom().randrange(10**6))))
    print(f"kill test: {n_txns} transactions, seed {seed}")
    rnd = random.Random(seed)
    data_dir = provision(tmp_path / "terminal", sim.port, reply_timeout=2.0)
    term = TerminalProcess(data_dir)
    term.start()
    approved_sales: list[dict] = []
    preauths: list[dict] = []
    kills = answered = 0
    try:
        for i in range(n_txns):
            roll = rnd.random()
            card = rnd.choice(CARDS)
            if roll < 0.55 or not approved_sales:
                req = {"op": "sale", "amount": rnd.randrange(100, 50000), "card": card}
                if card in PINS:
                    req["pin"] = PINS[card]
            elif roll < 0.70:
                victim = approved_sales.pop(rnd.randrange(len(approved_sales)))
                req = {"op": "void", "voucher": victim["voucher"], "password": PASSWORD}
            elif roll < 0.80:
                victim = rnd.choice(approved_sales)
                req = {"op": "refund", "amount": max(1, victim["amount"] // 4),
                       "orig_rrn": victim["rrn"], "orig_date": victim["date"],
                       "password": PASSWORD, "card": "cup_credit"}
            elif roll < 0.90 or not preauths:
                req = {"op": "preauth", "amount": rnd.randrange(1000, 9000), "card": "visa"}
            else:
                pa = preauths.pop()
                req = {"op": "completion", "voucher": pa["voucher"], "amount": pa["amount"]}
            req["id"] = i
            if rnd.random() < 0.15:
                # Kill at a random instant while the request is in flight.
                term.send_only(**req)
                time.sleep(rnd.uniform(0.0, 0.03))
                term.kill()
                kills += 1
                term.start()
                continue
            reply = term.request(**req)
            answered += 1
            if reply.get("result") == "approved":
                if reply["type"] == "sale" and reply["amount"] % 100 != 51:
                    approved_sales.append(reply)
                elif reply["type"] == "preauth":
                    preauths.append(reply)
        # A clean restart after the last kill, then settlement: first try must balance.
        term.kill()
        term.start()
        result = term.request(op="settle", password=PASSWORD, timeout=120)
        assert result["result"] == "settled", (seed, result)
        assert result["result_domestic"] == "1" and result["result_foreign"] == "1", (seed, result)
    finally:
        term.stop()
    journal = open_journal(data_dir)
    try:
        assert journal.integrity() == "ok"
        assert_agree(journal, sim.ledger)
        stans = [(r.batch, r.stan) for r in journal.records()]
        assert len(stans) == len(set(stans)), "a STAN was used twice"
    finally:
        journal.close()
    settlements = sim.ledger.settlements(TID)
    assert len(settlements) == 1, (seed, settlements)
    print(f"kill test: {kills} kills, {answered} answered, seed {seed}")
