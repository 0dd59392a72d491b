"""The voucher number (凭证号, VOUCHER NO.) is the one number a merchant sees and types: receipts
print it (and no trace number), void and reprint take it on the keypad, ECR requests name an
original by it, and the journal finds the newest record with it in the scope asked.

The scenario of issue 13 item 1: a sign-on consumes a STAN, so a 2.22 sale's STAN equals the
voucher number of the 56.78 sale after it; typing that sale's 凭证号 must void 56.78, never 2.22.
The terminals here are magstripe-only boards: a chip board also loads its chip tables after its
first sign-on, whose messages consume STANs too, and the numbers would no longer collide.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

from helpers import PASSWORD, run, sale, set_language, void
from panelkit import Shop

from board.sim.firmware import sim_card
from firmware.app.frontends.ecr_server import EcrServer
from firmware.ecr.protocol import EcrError, parse_request
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind

VOUCHER_ZH = re.compile(r"(?<!原)凭证号\(VOUCHER NO\.\):\s*(\d{6})")


async def sale_zh(shop: Shop, digits: str) -> Any:
    """A sale typed at idle on a Chinese LCD, paid by a swipe; back at idle afterwards."""
    await shop.press(digits, "ENTER")
    await shop.shows("按确认键继续")
    await shop.press("ENTER")
    await shop.swipe("cup_credit")
    await shop.shows("交易成功")
    await shop.press("ENTER")
    await shop.idle()
    return shop.journal.records()[-1]


def test_a_void_by_the_receipts_voucher_number_voids_that_sale_in_chinese(tmp_path: Path, sim):
    async def go():
        shop = Shop(tmp_path, sim.port, chip_slot=False)
        set_language(shop.data_dir, "zh_CN")
        async with shop:
            small = await sale_zh(shop, "222")
            big = await sale_zh(shop, "5678")
            slips = await shop.slips(4)
            typed = VOUCHER_ZH.findall(slips[-1])  # what the merchant reads off the 56.78 receipt
            await shop.press("MENU", "2")
            await shop.shows("请输入主管密码")
            await shop.password()
            await shop.shows("原凭证号")
            await shop.press(typed[0], "ENTER")
            confirm = await shop.shows("原金额 CNY 56.78", "按确认键继续")
            await shop.press("ENTER")
            result = await shop.shows("交易成功")
            void_slips = await shop.slips(6)
            return small, big, slips, typed, confirm, result, void_slips[4:], shop.journal.records()

    small, big, slips, typed, confirm, result, void_slips, rows = run(go())
    # The collision: the 56.78 sale's voucher number is the 2.22 sale's STAN.
    assert big.invoice == small.stan and big.invoice != big.stan
    assert typed == [big.invoice]
    assert all("流水号" not in slip and "TRACE" not in slip for slip in slips)  # one number only
    assert "56.78" in result and "2.22" not in confirm
    assert [(r.kind, r.state, r.amount) for r in rows] == [
        (TxnKind.SALE, TxnState.APPROVED, 222), (TxnKind.SALE, TxnState.VOIDED, 5678),
        (TxnKind.VOID, TxnState.APPROVED, 5678)]
    assert rows[2].orig_stan == big.stan and rows[2].orig_invoice == big.invoice  # 61.2: the STAN
    for slip in void_slips:
        assert "消费撤销" in slip and f"原凭证号(ORIG VOUCHER NO.): {big.invoice}" in " ".join(slip.split())
        assert VOUCHER_ZH.findall(slip) == [rows[2].invoice]


def test_reprint_by_voucher_number_on_the_keypad_prints_that_receipt(tmp_path: Path, sim):
    async def go():
        async with Shop(tmp_path, sim.port, chip_slot=False) as shop:
            small = await shop_sale(shop, "222")
            big = await shop_sale(shop, "5678")
            printed = len(await shop.slips(4))
            await shop.press("MENU", "7", "2")
            await shop.shows("Reprint voucher", "Voucher no.")
            await shop.press(big.invoice.lstrip("0"), "ENTER")
            await shop.shows("Reprint queued")
            return small, big, (await shop.slips(printed + 2))[printed:]

    small, big, again = run(go())
    assert big.invoice == small.stan
    assert all("REPRINT" in slip and "56.78" in slip and "2.22" not in slip for slip in again)
    assert all(f"VOUCHER NO.: {big.invoice}" in " ".join(slip.split()) for slip in again)


async def shop_sale(shop: Shop, digits: str) -> Any:
    await shop.press(digits, "ENTER", "ENTER")
    await shop.swipe("cup_credit")
    await shop.shows("Approved")
    await shop.press("ENTER")
    await shop.idle()
    return shop.journal.records()[-1]


async def ask(ecr: EcrServer, request: dict[str, Any]) -> dict[str, Any]:
    return await ecr.dispatch(parse_request(json.dumps(request).encode()))


def test_ecr_names_originals_by_voucher_number(data_dir, sim):
    from helpers import terminal

    async def go():
        t = await terminal(data_dir, chip_slot=False)
        try:
            small = (await sale(t, 222)).record
            big = (await sale(t, 5678)).record
            ecr = EcrServer(t, "127.0.0.1", 0, None, test_cards=sim_card)
            looked = await ask(ecr, {"op": "lookup", "voucher": big.invoice})
            missing = await ask(ecr, {"op": "lookup", "voucher": "999999"})
            voided = await ask(ecr, {"op": "void", "voucher": big.invoice, "password": PASSWORD})
            return small, big, looked, missing, voided, t.journal.records()
        finally:
            await t.close()

    small, big, looked, missing, voided, rows = run(go())
    assert big.invoice == small.stan
    assert (looked["ok"], looked["amount"], looked["voucher"]) == (True, 5678, big.invoice)
    assert "stan" not in looked and "invoice" not in looked  # the STAN is a wire detail
    assert not missing["ok"] and "voucher number" in missing["message"]
    assert voided["ok"] and voided["amount"] == 5678 and voided["voucher"] == rows[-1].invoice
    assert [(r.amount, r.state) for r in rows[:2]] == [(222, TxnState.APPROVED), (5678, TxnState.VOIDED)]


def test_an_ecr_request_naming_a_trace_is_told_the_new_field():
    for request, new in (({"op": "void", "trace": "000002", "password": "246810"}, "voucher"),
                         ({"op": "lookup", "trace": "000002"}, "voucher"),
                         ({"op": "refund", "amount": 1, "orig_rrn": "000000000001", "orig_date": "0101",
                           "password": "246810", "orig_trace": "000002"}, "orig_voucher")):
        try:
            parse_request(json.dumps(request).encode())
        except EcrError as exc:
            assert f"({new}, the receipt's VOUCHER NO.)" in str(exc), exc
        else:
            raise AssertionError(f"{request} was accepted")


def test_the_newest_record_with_a_voucher_number_in_the_open_batch_is_the_one(data_dir, sim):
    """The invoice counter wraps: a number names the newest record with it in the open batch,
    and a completion's pre-auth the newest pre-auth with it in any batch."""
    from helpers import terminal

    async def go():
        t = await terminal(data_dir, chip_slot=False)
        try:
            j = t.journal
            old = (await sale(t, 1000)).record
            # wrap the invoice counter so the next record reuses the old one's number
            j._db.execute("UPDATE counters SET value = ? WHERE name = 'invoice'",
                          (int(old.invoice) - 1,))
            j._db.commit()
            new = (await sale(t, 2000)).record
            found = j.find_by_invoice(old.invoice)
            plan = j._db.execute("EXPLAIN QUERY PLAN SELECT id FROM txn WHERE invoice = ? AND batch = ? "
                                 "ORDER BY id DESC LIMIT 1", (old.invoice, old.batch)).fetchall()
            voided = await void(t, old.invoice)
            return old, new, found, plan, voided.record
        finally:
            await t.close()

    old, new, found, plan, voided = run(go())
    assert new.invoice == old.invoice and found is not None and found.id == new.id
    assert any("txn_invoice" in str(row) for row in plan), plan
    assert voided.amount == 2000 and voided.orig_id == new.id


def test_the_migration_gives_follow_ups_their_originals_voucher_number(tmp_path: Path):
    """Records written before the voucher number was kept with a follow-up get it from the
    original they name, so an old void's slip prints 原凭证号 too."""
    from firmware.journal.schema import MIGRATIONS, SCHEMA_VERSION

    db = sqlite3.connect(tmp_path / "old.db")
    step = next(i for i, m in enumerate(MIGRATIONS) if any("orig_invoice" in str(s) for s in m))
    for migration in MIGRATIONS[:step]:
        for statement in migration:
            if isinstance(statement, str):
                db.execute(statement)
            else:
                statement(db.cursor())
    columns = ("id, kind, state, stan, batch, invoice, amount, currency, pan_masked, foreign_card, "
               "entry_mode, pin_entered, operator, local_date, local_time, created_at, updated_at, "
               "orig_id, orig_stan")
    rest = (100, "156", "622588******0001", 0, "swipe", 0, "01", "0101", "101010", 0, 0)
    insert = f"INSERT INTO txn ({columns}) VALUES ({', '.join('?' * 19)})"
    db.execute(insert, (1, "sale", "APPROVED", "000005", "000001", "000003", *rest, None, None))
    db.execute(insert, (2, "void", "APPROVED", "000006", "000001", "000004", *rest, 1, "000005"))
    for statement in MIGRATIONS[step]:
        db.execute(statement)
    rows = db.execute("SELECT id, orig_invoice FROM txn ORDER BY id").fetchall()
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    db.close()
    assert rows == [(1, None), (2, "000003")]
    assert "txn_invoice" in indexes and step < SCHEMA_VERSION
