"""Issue 13 A15: the fields a CUP sale slip prints beside the card: the issuing and acquiring
institutions from the reply's field 44 (发卡行 / 收单行) and the card's expiry, masked (有效期);
a sale through the simulator, its journal record and its slip in both languages."""

from __future__ import annotations

import sqlite3

from helpers import run, sale, terminal

from board.sim.acquirer import ACQUIRER_ID, ISSUER_IDS
from board.sim.cards import TEST_CARDS
from firmware.app.core.contract import OperatorInput
from firmware.engine.model import CardRead, TxnRequest, institution_ids
from firmware.host.messages import TxnKind
from firmware.printing.layout import CopyKind, MerchantInfo, plain_text, receipt

MERCHANT = MerchantInfo(name="DEMO", mid="123456789012345", tid="12345678")


def slip(record, lang: str) -> str:
    return plain_text(receipt(record, CopyKind.MERCHANT, MERCHANT, lang=lang, columns=32), 32)


def test_field_44_gives_issuer_and_acquirer() -> None:
    assert institution_ids("03080000   01020000   ") == ("03080000", "01020000")
    assert institution_ids("03080000") == ("03080000", None)
    assert institution_ids(None) == (None, None) and institution_ids(" " * 22) == (None, None)


def test_a_swiped_sale_prints_issuer_acquirer_and_a_masked_expiry(data_dir) -> None:
    async def go():
        t = await terminal(data_dir)
        result = await sale(t, 1234)
        await t.close()
        return result.record

    record = run(go())
    assert (record.issuer_id, record.acquirer_id) == (ISSUER_IDS["CUP"], ACQUIRER_ID)
    assert record.expiry_shown == "**/**"
    en, zh = slip(record, "en"), slip(record, "zh_CN")
    assert f"ISSUER:{ISSUER_IDS['CUP']:>25}" in en
    assert f"ACQUIRER:{ACQUIRER_ID:>23}" in en
    assert "EXP. DATE:                 **/**" in en
    for label, value in (("发卡行(ISSUER):", ISSUER_IDS["CUP"]), ("收单行(ACQUIRER):", ACQUIRER_ID),
                         ("有效期(EXP. DATE):", "**/**")):
        assert any(line.startswith(label) and line.endswith(value) for line in zh.splitlines()), zh
    # The card's expiry itself is on no slip and in no journal column.
    expiry = TEST_CARDS["cup_credit"].expiry
    assert f"{expiry[:2]}/{expiry[2:]}" not in en and expiry not in en.replace(" ", "")
    con = sqlite3.connect(data_dir / "journal.db")
    try:
        row = con.execute("SELECT * FROM txn WHERE id = ?", (record.id,)).fetchone()
    finally:
        con.close()
    assert all(expiry not in str(value) for value in row if not isinstance(value, bytes))


def test_a_keyed_card_without_expiry_prints_no_expiry_line(data_dir) -> None:
    card = TEST_CARDS["cup_credit"]

    async def go():
        t = await terminal(data_dir)
        keyed = CardRead("keyed", card.pan)
        result = await t.financial(TxnRequest(TxnKind.SALE, 500), OperatorInput(card=keyed))
        await t.close()
        return result

    result = run(go())
    assert result.status == "approved" and result.record is not None
    assert result.record.expiry_shown is None
    assert "EXP. DATE" not in slip(result.record, "en") and "有效期" not in slip(result.record, "zh_CN")
