"""Reports (firmware.printing.reports) and their journal side: the Z report queued in the commit
that finishes the settlement (also when the process dies half way through it), report jobs,
schema 4 -> 5 on a real v4 file, the exact text of each report, and every line fitting.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.app.services.printing import PrintDesk
from firmware.engine.model import HostResult, PendingDraft, SettlementRow, TxnRecord
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.messages import SideTotals, TxnKind
from firmware.journal.errors import JournalError
from firmware.journal.schema import MIGRATIONS, SCHEMA_VERSION
from firmware.journal.store import Journal
from firmware.journal.vault import CardVault
from firmware.ports import Cut, Document, Feed, TextLine, text_cells
from firmware.printing import reports, texts
from firmware.printing.layout import CopyKind, MerchantInfo, plain_text
from firmware.printing.queue import JobKind, PrintState
from firmware.settings.model import factory

REPO = Path(__file__).resolve().parent.parent
PAN = "6222021234567890128"
MASKED = "622202*********0128"
MERCHANT = MerchantInfo(name="DEMO MERCHANT", mid="123456789012345", tid="12345678")
PRINTED_AT = datetime(2024, 6, 1, 18, 31, tzinfo=UTC)
SETTLED_AT = datetime(2024, 6, 1, 18, 30, tzinfo=UTC).timestamp()


# ---- a seeded batch ----------------------------------------------------------------------

# What Journal.totals_by_kind returns for the batch of SEEDED_RECORDS (checked against a real
# journal in test_totals_by_kind_of_a_real_journal_match_the_seed).
SEEDED_TOTALS = {("domestic", "sale"): (3, 350000), ("domestic", "void"): (1, 50000),
                 ("foreign", "sale"): (1, 12000), ("domestic", "preauth"): (1, 99900)}
SETTLEMENT = SettlementRow(id=1, batch="000001", state="DONE", stan="000009",
                           domestic=(350000, 3, 50000, 1), foreign=(12000, 1, 0, 0),
                           result_domestic="1", result_foreign="2", uploaded_count=1,
                           started_at=SETTLED_AT - 60, finished_at=SETTLED_AT)


def record(i: int, kind: TxnKind, state: TxnState, amount: int, **changes: object) -> TxnRecord:
    base: dict[str, object] = dict(
        id=i, kind=kind, state=state, stan=f"{i:06d}", batch="000002", invoice=f"{i:06d}",
        amount=amount, currency="156", pan_masked=MASKED, foreign=False, entry_mode="chip",
        pin_entered=False, operator="01", local_date="0601", local_time="123456", created_at=0.0)
    base.update(changes)
    return TxnRecord(**base)  # type: ignore[arg-type]


LIST_RECORDS = [
    record(1, TxnKind.SALE, TxnState.VOIDED, 150000),
    record(2, TxnKind.VOID, TxnState.APPROVED, 150000),
    record(3, TxnKind.SALE, TxnState.APPROVED, 2345, local_time="130501"),
    record(4, TxnKind.SALE, TxnState.REVERSED, 100),
    record(5, TxnKind.COMPLETION_VOID, TxnState.REVERSAL_DUE, 99999999),
    record(6, TxnKind.SALE, TxnState.DECLINED, 1),  # moved nothing: not listed
    record(7, TxnKind.BALANCE, TxnState.APPROVED, 0),  # an enquiry: not listed
]


def text_lines(doc: Document) -> list[TextLine]:
    return [b for b in doc.blocks if isinstance(b, TextLine)]


def assert_fits(doc: Document, columns: int) -> None:
    for line in text_lines(doc):
        room = columns // 2 if line.double else columns
        assert text_cells(line.text) <= room, (line, columns)
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in line.text), line
    assert isinstance(doc.blocks[-1], Cut) and isinstance(doc.blocks[-2], Feed)


# ---- exact text at 32 columns --------------------------------------------------------------

Z_EN = """\
   D E M O   M E R C H A N T
      S E T T L E M E N T
--------------------------------
MERCHANT NAME:     DEMO MERCHANT
MERCHANT NO.:    123456789012345
TERMINAL NO.:           12345678
OPERATOR NO.:                 01
BATCH NO.:                000001
SETTLED AT:  2024/06/01 18:30:00
PRINT TIME:  2024/06/01 18:31:00
--------------------------------
TOTALS BY TYPE
            COUNT / AMOUNT (RMB)
SALES            4      3,620.00
VOIDS            1        500.00
AUTHS            1        999.00
NET                     3,120.00
--------------------------------
DOMESTIC CARDS
            COUNT / AMOUNT (RMB)
SALES            3      3,500.00
VOIDS            1        500.00
AUTHS            1        999.00
NET                     3,000.00
RECONCILIATION:         BALANCED
--------------------------------
FOREIGN CARDS
            COUNT / AMOUNT (RMB)
SALES            1        120.00
NET                       120.00
RECONCILIATION:       UNBALANCED
--------------------------------
BATCH UPLOADED:                1
--------------------------------
         END OF REPORT



~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"""

Z_ZH_REPRINT = """\
   D E M O   M E R C H A N T
           结  算  单
      S E T T L E M E N T
  重  打  印    R E P R I N T
--------------------------------
商户名称(MERCHANT NAME):
                   DEMO MERCHANT
商户编号(MERCHANT NO.):
                 123456789012345
终端编号(TERMINAL NO.): 12345678
操作员号(OPERATOR NO.):       01
批次号(BATCH NO.):        000001
结算时间(SETTLED AT):
             2024/06/01 18:30:00
打印时间(PRINT TIME):
             2024/06/01 18:31:00
--------------------------------
按交易类型 TOTALS BY TYPE
笔数 / 金额 COUNT / AMOUNT (RMB)
消费 SALES       4      3,620.00
撤销 VOIDS       1        500.00
预授权 AUTHS     1        999.00
净额 NET                3,120.00
--------------------------------
内卡 DOMESTIC CARDS
笔数 / 金额 COUNT / AMOUNT (RMB)
消费 SALES       3      3,500.00
撤销 VOIDS       1        500.00
预授权 AUTHS     1        999.00
净额 NET                3,000.00
对账结果(RECONCILIATION):
                 对账平 BALANCED
--------------------------------
外卡 FOREIGN CARDS
笔数 / 金额 COUNT / AMOUNT (RMB)
消费 SALES       1        120.00
净额 NET                  120.00
对账结果(RECONCILIATION):
             对账不平 UNBALANCED
--------------------------------
批上送笔数(BATCH UPLOADED):    1
--------------------------------
     *** 重打印 REPRINT ***
     报表结束 END OF REPORT



~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"""

X_ZH = """\
   D E M O   M E R C H A N T
  小  计    S U B T O T A L S
--------------------------------
商户名称(MERCHANT NAME):
                   DEMO MERCHANT
商户编号(MERCHANT NO.):
                 123456789012345
终端编号(TERMINAL NO.): 12345678
   *** 未结算 NOT SETTLED ***
批次号(BATCH NO.):        000002
打印时间(PRINT TIME):
             2024/06/01 18:31:00
--------------------------------
按交易类型 TOTALS BY TYPE
笔数 / 金额 COUNT / AMOUNT (RMB)
消费 SALES       4      3,620.00
撤销 VOIDS       1        500.00
预授权 AUTHS     1        999.00
净额 NET                3,120.00
--------------------------------
内卡 DOMESTIC CARDS
笔数 / 金额 COUNT / AMOUNT (RMB)
消费 SALES       3      3,500.00
撤销 VOIDS       1        500.00
预授权 AUTHS     1        999.00
净额 NET                3,000.00
--------------------------------
外卡 FOREIGN CARDS
笔数 / 金额 COUNT / AMOUNT (RMB)
消费 SALES       1        120.00
净额 NET                  120.00
--------------------------------
     报表结束 END OF REPORT



~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"""

LIST_EN = """\
   D E M O   M E R C H A N T
T R A N S A C T I O N   L I S T
--------------------------------
MERCHANT NAME:     DEMO MERCHANT
MERCHANT NO.:    123456789012345
TERMINAL NO.:           12345678
      *** NOT SETTLED ***
BATCH NO.:                000002
PRINT TIME:  2024/06/01 18:31:00
--------------------------------
000001 SALE VOIDED   06/01 12:34
622202*********0128     1,500.00
000002 VOID          06/01 12:34
622202*********0128    -1,500.00
000003 SALE          06/01 13:05
622202*********0128        23.45
000004 SALE REVERSED 06/01 12:34
622202*********0128         1.00
000005 COMPLETE VOID 06/01 12:34
  REVERSAL DUE
622202*********0128  -999,999.99
--------------------------------
TOTAL:                         5
NET AMOUNT:            RMB 23.45
--------------------------------
         END OF REPORT



~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"""

LIST_ZH_ROWS = """\
000001 消费 已撤销   06/01 12:34
622202*********0128     1,500.00
000002 消费撤销      06/01 12:34
622202*********0128    -1,500.00
000003 消费          06/01 13:05
622202*********0128        23.45
000004 消费 已冲正   06/01 12:34
622202*********0128         1.00
000005 预授权完成撤销
  待冲正             06/01 12:34
622202*********0128  -999,999.99
--------------------------------
合计(TOTAL):                   5
净额(NET AMOUNT):      RMB 23.45"""


def test_settlement_report_in_english_exactly() -> None:
    doc = reports.settlement_report(SETTLEMENT, SEEDED_TOTALS, MERCHANT, lang="en", columns=32,
                                    printed_at=PRINTED_AT, operator="01")
    assert plain_text(doc, 32) == Z_EN
    assert doc.title == "settlement report 000001"


def test_settlement_report_reprint_in_chinese_exactly() -> None:
    doc = reports.settlement_report(SETTLEMENT, SEEDED_TOTALS, MERCHANT, lang="zh_CN", columns=32,
                                    printed_at=PRINTED_AT, operator="01", reprint=True)
    assert plain_text(doc, 32) == Z_ZH_REPRINT
    assert doc.title.endswith("reprint")


def test_subtotals_report_in_chinese_exactly() -> None:
    doc = reports.subtotals_report("000002", SEEDED_TOTALS, MERCHANT, lang="zh_CN", columns=32,
                                   printed_at=PRINTED_AT)
    assert plain_text(doc, 32) == X_ZH


def test_subtotals_report_of_a_batch_settled_meanwhile_says_so() -> None:
    doc = reports.subtotals_report("000002", SEEDED_TOTALS, MERCHANT, lang="en", columns=32,
                                   printed_at=PRINTED_AT, settled=True)
    text = plain_text(doc, 32)
    assert "*** BATCH SETTLED ***" in text and "NOT SETTLED" not in text


def test_transaction_list_in_english_exactly() -> None:
    doc = reports.transaction_list(LIST_RECORDS, MERCHANT, lang="en", columns=32,
                                   printed_at=PRINTED_AT, batch="000002")
    assert plain_text(doc, 32) == LIST_EN


def test_transaction_list_in_chinese_rows_exactly() -> None:
    doc = reports.transaction_list(LIST_RECORDS, MERCHANT, lang="zh_CN", columns=32,
                                   printed_at=PRINTED_AT, batch="000002")
    text = plain_text(doc, 32)
    assert LIST_ZH_ROWS in text
    assert "交  易  明  细" in text


def test_an_empty_batch_says_so() -> None:
    doc = reports.transaction_list([], MERCHANT, lang="en", columns=32, printed_at=PRINTED_AT,
                                   batch="000003")
    x = reports.subtotals_report("000003", {}, MERCHANT, lang="en", columns=32, printed_at=PRINTED_AT)
    assert "NO TRANSACTIONS" in plain_text(doc, 32) and "NO TRANSACTIONS" in plain_text(x, 32)
    assert "NET AMOUNT:             RMB 0.00" in plain_text(doc, 32)
    assert reports.transaction_lines([], "zh_CN", 16) == ["无交易"]


def test_extra_sections_print_before_the_end() -> None:
    section = reports.ReportSection("POSSIBLE DUPLICATES", (("TRACE 000003", "2"),), ("CHECK\x1b",))
    doc = reports.settlement_report(SETTLEMENT, SEEDED_TOTALS, MERCHANT, lang="en", columns=32,
                                    printed_at=PRINTED_AT, sections=(section,))
    lines = plain_text(doc, 32).splitlines()
    at = lines.index("POSSIBLE DUPLICATES")
    assert lines[at + 1] == "TRACE 000003" + " " * 19 + "2"
    assert lines[at + 2] == "CHECK?"  # a control character never reaches the printer
    assert at < lines.index("         END OF REPORT")


# ---- LCD lines ---------------------------------------------------------------------------


def test_screen_transaction_lines_at_16_columns() -> None:
    assert reports.transaction_lines(LIST_RECORDS[:3], "en", 16) == [
        "000001 SALE", "   1,500.00 VOID", "000002 VOID", "  -1,500.00 APPR",
        "000003 SALE", "      23.45 APPR"]
    assert reports.transaction_lines(LIST_RECORDS[3:5], "zh_CN", 16) == [
        "000004 消费", "       1.00 冲正", "000005 预授权完", "成撤销", "-999,999.99 待冲"]


def test_screen_subtotal_and_settlement_lines_at_21_columns() -> None:
    assert reports.subtotal_lines(SEEDED_TOTALS, "en", 21) == [
        "SALES               4", "             3,620.00",
        "VOIDS               1", "               500.00",
        "AUTHS               1", "               999.00",
        "NET          3,120.00"]
    assert reports.settlement_lines(SETTLEMENT, SEEDED_TOTALS, "zh_CN", 21) == [
        "批次号         000001",
        "内卡           对账平", "消费                3", "             3,500.00",
        "撤销                1", "               500.00",
        "预授权              1", "               999.00", "净额         3,000.00",
        "外卡         对账不平", "消费                1", "               120.00",
        "净额           120.00",
        "批上送笔数          1"]


# ---- A6: a sale and its void are two types and a net of 0.00, never "24.68" ---------------

# The scenario: a 12.34 sale, then its void (the sale is VOIDED, the void APPROVED).
SALE_AND_VOID = {("domestic", "sale"): (1, 1234), ("domestic", "void"): (1, 1234)}
# A mixed day: sales on both sides, a void, a refund, an auth (holds funds: not in the net),
# a completion and its void.
MIXED_DAY = {("domestic", "sale"): (3, 30000), ("domestic", "void"): (1, 5000),
             ("domestic", "refund"): (1, 2500), ("domestic", "preauth"): (1, 80000),
             ("domestic", "completion"): (2, 70000), ("domestic", "completion_void"): (1, 20000),
             ("foreign", "sale"): (1, 9900)}


@pytest.mark.parametrize(("lang", "expected"), [
    ("en", ["SALES          1", "           12.34", "VOIDS          1", "           12.34",
            "NET         0.00"]),
    ("zh_CN", ["消费           1", "           12.34", "撤销           1", "           12.34",
               "净额        0.00"]),
])
def test_a_sale_and_its_void_show_each_type_and_a_net_of_zero(lang: str, expected: list[str]) -> None:
    assert reports.subtotal_lines(SALE_AND_VOID, lang, 16) == expected
    settled = dataclasses.replace(SETTLEMENT, domestic=(1234, 1, 1234, 1), foreign=(0, 0, 0, 0),
                                  result_foreign="1")
    for doc in (reports.settlement_report(settled, SALE_AND_VOID, MERCHANT, lang=lang, columns=32,
                                          printed_at=PRINTED_AT),
                reports.subtotals_report("000002", SALE_AND_VOID, MERCHANT, lang=lang, columns=32,
                                         printed_at=PRINTED_AT)):
        text = plain_text(doc, 32)
        assert "24.68" not in text
        sales, voids, net = (texts.label(k, lang) for k in ("total_sale", "total_void", "net_total"))
        rows = [line.split() for line in text.splitlines()]
        assert [sales, *(["SALES"] if lang == "zh_CN" else []), "1", "12.34"] in rows
        assert [voids, *(["VOIDS"] if lang == "zh_CN" else []), "1", "12.34"] in rows
        assert [net, *(["NET"] if lang == "zh_CN" else []), "0.00"] in rows
        assert "DEBIT" not in text and "CREDIT" not in text and "借记" not in text


def test_a_mixed_day_nets_sales_and_completions_less_voids_and_refunds() -> None:
    # 300.00 + 700.00 + 99.00 - 50.00 - 25.00 - 200.00; the 800.00 auth holds funds only
    assert reports.net_of(MIXED_DAY) == 82400
    assert reports.net_of(MIXED_DAY, ("foreign",)) == 9900
    lines = reports.subtotal_lines(MIXED_DAY, "en", 16)
    assert lines[::2][:7] == ["SALES          4", "VOIDS          1", "REFUNDS        1",
                              "AUTHS          1", "COMPLETIONS    2", "COMPL. VOIDS   1",
                              "NET       824.00"]
    doc = reports.subtotals_report("000002", MIXED_DAY, MERCHANT, lang="zh_CN", columns=32,
                                   printed_at=PRINTED_AT)
    text = plain_text(doc, 32)
    assert "退货 REFUNDS     1         25.00" in text
    assert "净额 NET                  824.00" in text  # both sides
    assert "净额 NET                  725.00" in text  # domestic cards
    assert "净额 NET                   99.00" in text  # foreign cards


# ---- every line fits ---------------------------------------------------------------------

KINDS = st.sampled_from([k.value for k in TxnKind] + ["mystery\x07kind"])
TOTALS = st.dictionaries(st.tuples(st.sampled_from(reports.SIDES), KINDS),
                         st.tuples(st.integers(0, 99_999), st.integers(0, 10**13)), max_size=12)
RESULTS = st.sampled_from(["1", "2", "3", None, "\x1b"])
NAMES = st.text(max_size=80) | st.just("上海浦东新区陆家嘴环路一千号国际金融中心美食广场 NOODLE HOUSE")


@st.composite
def settlements(draw: st.DrawFn) -> SettlementRow:
    side = st.tuples(st.integers(0, 10**13), st.integers(0, 99_999), st.integers(0, 10**13),
                     st.integers(0, 99_999))
    return SettlementRow(id=1, batch=draw(st.text(max_size=8)), state="DONE", stan="000001",
                         domestic=draw(side), foreign=draw(side), result_domestic=draw(RESULTS),
                         result_foreign=draw(RESULTS), uploaded_count=draw(st.integers(0, 10**6)),
                         finished_at=draw(st.none() | st.floats(0, 4e9)))


@st.composite
def records(draw: st.DrawFn) -> TxnRecord:
    return record(draw(st.integers(1, 10**6)), draw(st.sampled_from(list(TxnKind))),
                  draw(st.sampled_from(list(TxnState))), draw(st.integers(0, 10**13)),
                  stan=draw(st.text(max_size=8)), pan_masked=draw(st.sampled_from([MASKED, "", "\x1b1234"])),
                  local_date=draw(st.sampled_from(["0601", "1399", "", "ab\x00d"])),
                  local_time=draw(st.sampled_from(["123456", "9", "\n\n\n\n\n\n"])))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(settlement=settlements(), totals=TOTALS, txns=st.lists(records(), max_size=6), name=NAMES,
       operator=st.none() | st.text(max_size=30), lang=st.sampled_from(texts.LANGS),
       columns=st.sampled_from((32, 48)), reprint=st.booleans())
def test_every_report_line_fits_the_paper(settlement: SettlementRow, totals: dict, txns: list,
                                          name: str, operator: str | None, lang: str, columns: int,
                                          reprint: bool) -> None:
    merchant = dataclasses.replace(MERCHANT, name=name)
    common = dict(lang=lang, columns=columns, printed_at=PRINTED_AT, reprint=reprint)
    for doc in (
        reports.settlement_report(settlement, totals, merchant, operator=operator, **common),
        reports.subtotals_report("000002", totals, merchant, operator=operator, **common),
        reports.transaction_list(txns, merchant, batch="000002", **common),
    ):
        assert_fits(doc, columns)
        assert PAN not in plain_text(doc, columns)
        if reprint:
            assert "REPRINT" in plain_text(doc, columns)


@settings(max_examples=120, deadline=None)
@given(settlement=settlements(), totals=TOTALS, txns=st.lists(records(), max_size=6),
       lang=st.sampled_from(texts.LANGS), cols=st.sampled_from((16, 21)))
def test_every_screen_line_fits_the_lcd(settlement: SettlementRow, totals: dict, txns: list,
                                        lang: str, cols: int) -> None:
    for lines in (reports.subtotal_lines(totals, lang, cols), reports.transaction_lines(txns, lang, cols),
                  reports.settlement_lines(settlement, totals, lang, cols)):
        assert lines
        for line in lines:
            assert text_cells(line) <= cols, (line, cols)
            assert not any(ord(ch) < 0x20 for ch in line), line


def test_every_new_catalog_entry_has_both_languages() -> None:
    for key, (en, zh) in texts.CATALOG.items():
        assert en.strip() and zh.strip(), key
    for state in TxnState:
        assert text_cells(texts.label(f"state_short_{state.value}", "en")) <= 4
        assert text_cells(texts.label(f"state_short_{state.value}", "zh_CN")) <= 4


# ---- bad input: clear errors, in words -----------------------------------------------------


@pytest.mark.parametrize(("call", "message"), [
    (lambda: reports.settlement_report(SETTLEMENT, {}, MERCHANT, lang="fr", columns=32,
                                       printed_at=PRINTED_AT), "receipt language"),
    (lambda: reports.subtotals_report("1", {}, MERCHANT, lang="en", columns=12, printed_at=PRINTED_AT),
     "columns must be 24 to 96"),
    (lambda: reports.transaction_list([], MERCHANT, lang="en", columns=32, printed_at=PRINTED_AT,
                                      batch="1", currency="RM\x1b"), "3-digit ISO 4217"),
    (lambda: reports.settlement_report(dataclasses.replace(SETTLEMENT, state="UPLOADING"), {}, MERCHANT,
                                       lang="en", columns=32, printed_at=PRINTED_AT),
     "prints when the settlement finishes"),
    (lambda: reports.subtotal_lines({}, "en", 5), "LCD columns must be"),
    (lambda: reports.transaction_lines([], "de", 16), "receipt language"),
])
def test_bad_input_is_refused_in_words(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ---- the journal: the Z report queued with DONE, atomically --------------------------------


def draft(amount: int, kind: TxnKind = TxnKind.SALE, foreign: bool = False) -> PendingDraft:
    return PendingDraft(kind=kind, amount=amount, currency="156", pan=PAN, pan_masked=MASKED,
                        foreign=foreign, entry_mode="chip", pin_entered=False, operator="01",
                        local_date="0601", local_time="123456")


def seed_batch(j: Journal) -> None:
    """The batch behind SEEDED_TOTALS: 3 domestic sales (one voided), 1 foreign, 1 pre-auth,
    and records that count for nothing (declined, reversed)."""
    sales = []
    for amount in (50000, 150000, 150000):
        rec = j.begin(draft(amount))
        j.apply(rec.id, TxnEvent.APPROVE, HostResult("00", rrn=f"{rec.stan:0>12}", auth_code="A1"))
        sales.append(rec)
    void = j.begin(draft(50000, TxnKind.VOID))
    j.apply(void.id, TxnEvent.APPROVE, HostResult("00"), void_of=sales[0].id)
    sales[0] = j.get(sales[0].id)
    for amount, kind, foreign in ((12000, TxnKind.SALE, True), (99900, TxnKind.PREAUTH, False)):
        rec = j.begin(draft(amount, kind, foreign))
        j.apply(rec.id, TxnEvent.APPROVE, HostResult("00"))
    declined = j.begin(draft(7))
    j.apply(declined.id, TxnEvent.DECLINE, HostResult("51"))
    lost = j.begin(draft(8))
    j.apply(lost.id, TxnEvent.LOSE_REPLY, reversal_reason="98")
    j.apply(lost.id, TxnEvent.REVERSAL_ACKED)


def settle_to_ending(j: Journal, operator: str = "07") -> int:
    dom, fgn = j.totals()
    sid = j.begin_settlement(j.current_batch(), j.allocate_stan(), dom, fgn, operator=operator)
    j.record_settlement_reply(sid, "1", "1")  # balanced: straight to the upload end
    j.record_end_stan(sid, j.allocate_stan())
    return sid


@pytest.fixture
def journal(tmp_path: Path):
    j = Journal.open(tmp_path / "j.db", CardVault(b"k" * 32))
    yield j
    j.close()


def durable(path: Path) -> tuple[str | None, list[tuple]]:
    """What a restarted process would find: the settlement's state and its report jobs."""
    con = sqlite3.connect(path)
    try:
        state = con.execute("SELECT state FROM settlement ORDER BY id DESC LIMIT 1").fetchone()
        jobs = con.execute("SELECT kind, state, settlement_id, batch, copies FROM print_job "
                           "WHERE kind = 'settlement'").fetchall()
    finally:
        con.close()
    return (state[0] if state else None), jobs


def test_totals_by_kind_of_a_real_journal_match_the_seed(journal: Journal) -> None:
    seed_batch(journal)
    totals = journal.totals_by_kind()
    assert totals == SEEDED_TOTALS
    dom, fgn = journal.totals()
    # The net the reports show per side is the 0500's debits less its credits.
    assert reports.net_of(totals, ("domestic",)) == dom.debit_amount - dom.credit_amount
    assert reports.net_of(totals, ("foreign",)) == fgn.debit_amount - fgn.credit_amount


def test_the_z_report_is_queued_in_the_commit_that_finishes_the_settlement(journal, tmp_path):
    seed_batch(journal)
    sid = settle_to_ending(journal)
    assert durable(tmp_path / "j.db") == ("ENDING", [])  # no report for an unfinished settlement
    assert journal.finish_settlement(sid) == "000002"
    assert durable(tmp_path / "j.db") == ("DONE", [("settlement", "QUEUED", sid, "000001", "merchant")])
    assert journal.settlement_operator(sid) == "07"
    job = journal.next_print_job()
    assert job is not None and job.kind is JobKind.SETTLEMENT and job.settlement_id == sid
    assert not job.reprint


def test_report_copies_none_queues_no_report(journal, tmp_path):
    sid = settle_to_ending(journal)
    journal.finish_settlement(sid, report_copies=())
    assert durable(tmp_path / "j.db") == ("DONE", [])


def test_an_abandoned_settlement_has_no_report(journal, tmp_path):
    dom, fgn = journal.totals()
    sid = journal.begin_settlement(journal.current_batch(), journal.allocate_stan(), dom, fgn, operator="01")
    journal.abandon_settlement(sid, "host said no")
    assert durable(tmp_path / "j.db") == ("ABANDONED", [])
    with pytest.raises(JournalError, match="is ABANDONED, not DONE"):
        journal.enqueue_report(JobKind.SETTLEMENT, sid)


def test_a_failure_inside_the_finish_commit_leaves_neither(journal, tmp_path, monkeypatch):
    seed_batch(journal)
    sid = settle_to_ending(journal)
    real = Journal._insert_job

    def insert_then_fail(self, cur, *args, **kwargs):
        real(self, cur, *args, **kwargs)
        raise OSError("disk error half way through the commit")

    monkeypatch.setattr(Journal, "_insert_job", insert_then_fail)
    with pytest.raises(OSError):
        journal.finish_settlement(sid)
    assert durable(tmp_path / "j.db") == ("ENDING", [])
    assert journal.current_batch() == "000001"
    monkeypatch.setattr(Journal, "_insert_job", real)
    journal.finish_settlement(sid)  # the resumed settlement finishes, with its one report
    state, jobs = durable(tmp_path / "j.db")
    assert state == "DONE" and len(jobs) == 1


CRASH_CHILD = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    from firmware.journal.store import Journal
    from firmware.journal.vault import CardVault

    j = Journal.open({path!r}, CardVault(b"k" * 32))
    real = Journal._insert_job

    def insert_then_die(self, cur, *args, **kwargs):
        real(self, cur, *args, **kwargs)
        os._exit(137)  # the power goes after the job row is written, before COMMIT

    Journal._insert_job = insert_then_die
    j.finish_settlement({sid})
    os._exit(0)
""")


def test_a_process_killed_inside_the_finish_commit_leaves_neither(journal, tmp_path):
    seed_batch(journal)
    sid = settle_to_ending(journal)
    path = tmp_path / "j.db"
    child = subprocess.run([sys.executable, "-c", CRASH_CHILD.format(repo=str(REPO), path=str(path),
                                                                      sid=sid)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 137, child.stderr
    reopened = Journal.open(path, CardVault(b"k" * 32))
    try:
        assert durable(path) == ("ENDING", [])
        assert reopened.current_batch() == "000001" and reopened.open_settlement() is not None
        reopened.finish_settlement(sid)
        assert durable(path)[0] == "DONE" and len(durable(path)[1]) == 1
    finally:
        reopened.close()


def test_enqueue_report_names_the_open_batch_or_a_finished_settlement(journal):
    seed_batch(journal)
    x = journal.enqueue_report(JobKind.SUBTOTALS, operator="02")
    lst = journal.enqueue_report(JobKind.TXN_LIST)
    assert (x.batch, x.settlement_id, lst.batch) == ("000001", None, "000001")
    assert journal.audit_lines(1)[0][1:] == ("system", "report", "txn_list 000001", "queued")
    sid = settle_to_ending(journal)
    with pytest.raises(JournalError, match="is ENDING, not DONE"):
        journal.enqueue_report(JobKind.SETTLEMENT, sid)
    journal.finish_settlement(sid)
    again = journal.enqueue_report(JobKind.SETTLEMENT, sid, reprint=True, operator="02")
    assert again.reprint and again.marked_reprint and again.batch == "000001"
    assert journal.last_report_job(JobKind.SETTLEMENT) == again
    assert [s.id for s in journal.settlements(5)] == [sid]


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(kind=JobKind.RECEIPT), "receipt is not a report"),
    (dict(kind=JobKind.SETTLEMENT, settlement_id=42), "no settlement 42"),
    (dict(kind=JobKind.SUBTOTALS, settlement_id=1), "of the open batch"),
    (dict(kind=JobKind.TXN_LIST, copies=()), "at least one copy"),
])
def test_enqueue_report_refuses_nonsense_in_words(journal, kwargs, message):
    with pytest.raises(JournalError, match=message):
        journal.enqueue_report(**kwargs)
    assert journal.print_jobs(open_only=False) == []


def test_a_cancelled_report_gets_a_void_slip_naming_it(journal):
    sid = settle_to_ending(journal)
    journal.finish_settlement(sid)
    job = journal.next_print_job()
    assert job is not None
    journal.update_print_job(job.id, PrintState.PRINTING, printed_any=True)
    journal.request_print_cancel(job.id, "01")
    slip_id = journal.finish_print_cancel(job.id)
    assert slip_id is not None
    slip = journal.print_job(slip_id)
    assert (slip.kind, slip.settlement_id, slip.batch) == (JobKind.VOID_SLIP, sid, "000001")
    desk = PrintDesk(journal, None, factory, lambda: PRINTED_AT)
    text = plain_text(desk.render(slip, slip.copies[0]), 32)
    assert "SETTLEMENT REPORT" in text and "000001" in text and "MERCHANT COPY" in text


def test_print_desk_renders_each_report_from_the_journal(journal):
    seed_batch(journal)
    desk = PrintDesk(journal, None, factory, lambda: PRINTED_AT)
    assert desk.settlement_report() == "no_settlement_yet"
    x = desk.subtotals()
    lst = desk.transaction_list()
    x_text = plain_text(desk.render(x, CopyKind.MERCHANT), 32)
    assert "S U B T O T A L S" in x_text and "SALES            4      3,620.00" in x_text
    assert "NET                     3,120.00" in x_text
    assert "NOT SETTLED" in x_text
    list_text = plain_text(desk.render(lst, CopyKind.MERCHANT), 32)
    # 7: the declined sale and the enquiry are left out, the reversed sale is not
    assert "TOTAL:                         7" in list_text
    assert "NET AMOUNT:         RMB 3,120.00" in list_text
    sid = settle_to_ending(journal)
    assert desk.settlement_report(sid) == "settlement_not_finished"
    assert desk.settlement_report(999) == "settlement_not_found"
    journal.finish_settlement(sid)
    # The X report asked for before the settlement now prints as of a settled batch.
    assert "BATCH SETTLED" in plain_text(desk.render(x, CopyKind.MERCHANT), 32)
    z = journal.last_report_job(JobKind.SETTLEMENT)
    assert z is not None
    z_text = plain_text(desk.render(z, CopyKind.MERCHANT), 32)
    assert "OPERATOR NO.:                 07" in z_text and "REPRINT" not in z_text
    again = desk.settlement_report()
    assert not isinstance(again, str)
    assert "R E P R I N T" in plain_text(desk.render(again, CopyKind.MERCHANT), 32)


# ---- schema 4 -> now on a real v4 file --------------------------------------------------------


def test_a_v4_journal_migrates_to_the_current_schema_and_its_settlements_print(tmp_path: Path) -> None:
    assert SCHEMA_VERSION >= 5
    path = tmp_path / "v4.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    for number, statements in enumerate(MIGRATIONS[:4]):  # what firmware at schema 4 created
        con.execute("BEGIN")
        for statement in statements:
            con.execute(statement)
        con.execute(f"PRAGMA user_version = {number + 1}")
        con.execute("COMMIT")
    con.execute("INSERT INTO settlement (batch, state, stan, totals, result_domestic, result_foreign, "
                "uploaded_count, started_at, finished_at) VALUES ('000001', 'DONE', '000005', "
                "'{\"domestic\": [1000, 1, 0, 0], \"foreign\": [0, 0, 0, 0]}', '1', '1', 0, 1.0, 2.0)")
    con.execute("INSERT INTO print_job (kind, state, copies, title, created_at, updated_at) "
                "VALUES ('test', 'QUEUED', 'merchant', 'test page', 1.0, 1.0)")
    con.close()
    assert os.path.getsize(path) > 0

    j = Journal.open(path, CardVault(b"k" * 32))
    try:
        assert j._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        old = j.next_print_job()
        assert old is not None and (old.kind, old.settlement_id, old.batch) == (JobKind.TEST, None, None)
        last = j.last_settlement()
        assert last is not None and j.settlement_operator(last.id) is None  # not kept before v5
        job = j.enqueue_report(JobKind.SETTLEMENT, last.id, reprint=True)
        assert job.settlement_id == last.id
        desk = PrintDesk(j, None, factory, lambda: PRINTED_AT)
        text = plain_text(desk.render(job, CopyKind.MERCHANT), 32)
        assert "OPERATOR NO." not in text and "BALANCED" in text and "R E P R I N T" in text
        assert j.integrity() == "ok"
        fk = j._db.execute("PRAGMA foreign_key_check").fetchall()
        assert fk == []
    finally:
        j.close()
    with pytest.raises(sqlite3.IntegrityError):  # the new column is a real foreign key
        con = sqlite3.connect(path)
        con.execute("PRAGMA foreign_keys = ON")
        try:
            con.execute("INSERT INTO print_job (kind, state, copies, title, created_at, updated_at, "
                        "settlement_id) VALUES ('settlement', 'QUEUED', 'merchant', 'x', 1, 1, 99)")
        finally:
            con.close()


def test_begin_settlement_side_totals_are_what_the_report_prints(journal):
    sid = journal.begin_settlement("000001", "000001", SideTotals(350000, 3, 50000, 1),
                                   SideTotals(12000, 1, 0, 0), operator="01")
    row = journal.get_settlement(sid)
    assert (row.domestic, row.foreign) == (SETTLEMENT.domestic, SETTLEMENT.foreign)
