"""Receipt layout (firmware.printing.layout, texts): every line fits, marks, signatures, no PAN.

Pure functions, so the tests build journal records directly and read the Documents back,
as blocks and as plain_text pictures (the two golden slips below).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.engine.model import TxnRecord
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind, mask_pan
from firmware.ports import Align, Cut, Document, Feed, Image, TextLine, text_cells
from firmware.printing import layout, texts
from firmware.printing.layout import (
    CopyKind,
    MerchantInfo,
    SlipRef,
    copies_for,
    fit,
    format_amount,
    plain_text,
    receipt,
    two_columns,
    void_slip,
    wrap,
)
from firmware.settings.model import FACTORY

WIDTHS = (32, 48)
LANGS = ("en", "zh_CN")
PRINTED_AT = datetime(2024, 6, 2, 9, 0, 0)
FULL_PAN = "6222021234567890128"  # 19 digits, Luhn-valid
MERCHANT = MerchantInfo(name="DEMO MERCHANT", mid="123456789012345", tid="12345678",
                        header=("1 Demo Road, Shanghai",), footer=("Thank you",))
LONG_MERCHANT = MerchantInfo(
    name="上海浦东新区陆家嘴环路一千号国际金融中心地下一层美食广场第三十七号档口 NOODLE HOUSE",
    mid="123456789012345", tid="12345678",
    header=("地址: 上海市浦东新区世纪大道一百号环球金融中心 Tel 021-12345678 ext 9999",
            "SUPERCALIFRAGILISTICEXPIALIDOCIOUSLONGWORDWITHOUTSPACES"),
    footer=("谢谢惠顾，欢迎再次光临！Thank you for shopping with us, see you again soon",))
LONG_REFERENCE = "ECR-ORDER 2024-06-01/TABLE-17/" + "X" * 60 + " 备注很长的中文说明文字" * 3
ORIGINAL = {"orig_batch": "000001", "orig_stan": "000077", "orig_invoice": "000070",
            "orig_rrn": "240531000077", "orig_auth": "B2C3D4", "orig_date": "0531"}


def record(kind: TxnKind = TxnKind.SALE, **changes: object) -> TxnRecord:
    base: dict[str, object] = dict(
        id=7, kind=kind, state=TxnState.APPROVED, stan="000456", batch="000001", invoice="000123",
        amount=123456, currency="156", pan_masked=mask_pan(FULL_PAN), foreign=False,
        entry_mode="chip", pin_entered=False, operator="01", local_date="0601", local_time="123456",
        created_at=datetime(2024, 6, 1, 4, 34, 56, tzinfo=UTC).timestamp(),
        rrn="240601123456", auth_code="A1B2C3", card_org="CUP")
    if kind in layout.ORIGINAL_KINDS:
        base.update(ORIGINAL)
    base.update(changes)
    return TxnRecord(**base)  # type: ignore[arg-type]


def text_lines(doc: Document) -> list[TextLine]:
    return [b for b in doc.blocks if isinstance(b, TextLine)]


def all_text(doc: Document) -> str:
    return "\n".join(line.text for line in text_lines(doc))


def assert_fits(doc: Document, columns: int) -> None:
    for line in text_lines(doc):
        room = columns // 2 if line.double else columns
        assert text_cells(line.text) <= room, (line, columns)
        assert "\n" not in line.text and "\x1b" not in line.text, line
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in line.text), line
    assert isinstance(doc.blocks[-1], Cut) and isinstance(doc.blocks[-2], Feed)


# ---- helpers: fit, wrap, two_columns --------------------------------------------

@pytest.mark.parametrize(("text", "columns", "expected"), [
    ("ABCDEF", 4, "ABCD"),
    ("商户名称", 5, "商户"),  # never half of 名
    ("商户名称", 8, "商户名称"),
    ("A商户", 2, "A"),
    ("A商户", 3, "A商"),
    ("", 4, ""),
])
def test_fit_cuts_by_cells(text: str, columns: int, expected: str) -> None:
    assert fit(text, columns) == expected


@given(st.text(max_size=60), st.integers(min_value=0, max_value=50))
def test_fit_is_the_longest_prefix_that_fits(text: str, columns: int) -> None:
    cut = fit(text, columns)
    assert text.startswith(cut)
    assert text_cells(cut) <= columns
    if len(cut) < len(text):
        assert text_cells(text[:len(cut) + 1]) > columns


@pytest.mark.parametrize(("text", "columns", "expected"), [
    ("I ACKNOWLEDGE SATISFACTORY RECEIPT OF RELATIVE GOODS/SERVICES", 32,
     ["I ACKNOWLEDGE SATISFACTORY", "RECEIPT OF RELATIVE", "GOODS/SERVICES"]),
    ("本人确认以上交易同意将其记入本卡账户", 16, ["本人确认以上交易", "同意将其记入本卡", "账户"]),
    ("ABCDEFGHIJ", 4, ["ABCD", "EFGH", "IJ"]),  # a word longer than a line is cut
    ("AB  CD", 10, ["AB  CD"]),  # spaces inside a line are kept
    ("AB CD", 2, ["AB", "CD"]),  # spaces at a break are dropped
    ("one\ntwo", 10, ["one", "two"]),
    ("", 10, [""]),
    ("消费SALE撤销", 5, ["消费", "SALE", "撤销"]),
    ("金额、卡号", 4, ["金", "额、", "卡号"]),  # 禁则: 、 never starts a line
])
def test_wrap(text: str, columns: int, expected: list[str]) -> None:
    assert wrap(text, columns) == expected


@given(st.text(alphabet=st.sampled_from("ab cd 商户名称、。,.\n ABC"), max_size=80),
       st.integers(min_value=2, max_value=40))
def test_wrap_fits_and_loses_no_character(text: str, columns: int) -> None:
    lines = wrap(text, columns)
    assert all(text_cells(line) <= columns for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "").replace("\n", "")


def test_wrap_refuses_one_column() -> None:
    with pytest.raises(ValueError, match="CJK character needs 2"):
        wrap("商", 1)


def test_two_columns() -> None:
    assert two_columns("BATCH NO.:", "000001", 20) == ["BATCH NO.:    000001"]
    assert two_columns("商户编号(MERCHANT NO.):", "123456789012345", 32) == [
        "商户编号(MERCHANT NO.):", " " * 17 + "123456789012345"]
    assert two_columns("LABEL:", "X" * 25, 20) == ["LABEL:", "X" * 20, "X" * 5]
    assert two_columns("ONLY A LABEL", "", 20) == ["ONLY A LABEL"]


# ---- money ---------------------------------------------------------------------

@pytest.mark.parametrize(("fen", "currency", "expected"), [
    (0, "156", "0.00"),
    (1, "156", "0.01"),
    (100, "156", "1.00"),
    (123456, "156", "1,234.56"),
    (99999999999, "156", "999,999,999.99"),
    (-1, "156", "-0.01"),
    (-123456, "156", "-1,234.56"),
    (-99999999999, "156", "-999,999,999.99"),
    (123456, "CNY", "1,234.56"),
    (123456, "392", "123,456"),  # yen: no minor unit
    (1234, "414", "1.234"),  # dinar: three
    (5, "999", "0.05"),  # unknown code: two digits
])
def test_format_amount(fen: int, currency: str, expected: str) -> None:
    assert format_amount(fen, currency) == expected


@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_format_amount_reads_back_exactly(fen: int) -> None:
    assert int(format_amount(fen, "156").replace(",", "").replace(".", "")) == fen


@pytest.mark.parametrize("bad", [1.5, 100.0, True, "100", None])
def test_format_amount_refuses_anything_but_integer_fen(bad: object) -> None:
    with pytest.raises(TypeError, match="integer number of minor units"):
        format_amount(bad, "156")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["", "15", "1566", "RM B", "\x1b56"])
def test_format_amount_refuses_a_malformed_currency(bad: str) -> None:
    with pytest.raises(ValueError, match="3-digit ISO 4217"):
        format_amount(100, bad)


def test_currency_symbols() -> None:
    assert layout.currency_symbol("156") == "RMB"
    assert layout.currency_symbol("344") == "HKD"
    assert layout.currency_symbol("999") == "999"


# ---- every kind x copy x language x width x reprint -----------------------------

CASES = list(itertools.product(TxnKind, CopyKind, LANGS, WIDTHS, (False, True)))


@pytest.mark.parametrize(("kind", "copy", "lang", "columns", "reprint"), CASES)
def test_every_receipt_fits_and_says_what_it_is(kind: TxnKind, copy: CopyKind, lang: str,
                                                columns: int, reprint: bool) -> None:
    rec = record(kind, reference=LONG_REFERENCE)
    doc = receipt(rec, copy, LONG_MERCHANT, lang=lang, columns=columns, reprint=reprint,
                  printed_at=PRINTED_AT, logo=Image(b"\x00" * (columns * 12 * 4), columns * 12, 4))
    assert_fits(doc, columns)
    body = all_text(doc)
    assert texts.label(f"kind_{kind.value}", "en") in body
    assert texts.label(copy.key, "en") in body
    assert ("重打印" in body) == (reprint and lang == "zh_CN")
    assert ("REPRINT" in body) == reprint
    if lang == "zh_CN":
        assert texts.label(f"kind_{kind.value}", "zh_CN") in body
        assert "商户编号(MERCHANT NO.):" in body
    if kind is TxnKind.BALANCE:
        assert "AMOUNT" not in body
    else:
        sign = "-" if kind in layout.NEGATIVE_KINDS else ""
        amount_lines = [line for line in text_lines(doc) if "1,234.56" in line.text]
        assert [line.text for line in amount_lines] == [f"RMB {sign}1,234.56"]
        assert amount_lines[0].double and amount_lines[0].bold
    # The merchant's one number is the voucher no. (its original's too); the STANs stay on the wire.
    assert "000456" not in body and " 000077" not in body and "TRACE" not in body
    if kind in layout.ORIGINAL_KINDS:
        assert "000070" in body and "240531000077" in body and "B2C3D4" in body
        assert ("原凭证号" if lang == "zh_CN" else "ORIG VOUCHER NO.") in body
    else:
        assert "000070" not in body and "000077" not in body
    assert isinstance(doc.blocks[0], Image)
    assert doc.title.startswith(f"{kind.value} receipt 000123 {copy.value} copy")


@pytest.mark.parametrize(("kind", "columns"), list(itertools.product(TxnKind, WIDTHS)))
def test_english_layout_prints_no_chinese(kind: TxnKind, columns: int) -> None:
    for copy in CopyKind:
        doc = receipt(record(kind, reference="ORDER 7"), copy, MERCHANT, lang="en", columns=columns,
                      reprint=True, printed_at=PRINTED_AT)
        assert not re.search(r"[\u3000-\u9fff\uff00-\uffef]", all_text(doc))
        assert "(" not in all_text(doc)  # no bilingual labels either


def test_reprint_marks_sit_at_the_top_and_by_the_amount() -> None:
    for lang in LANGS:
        doc = receipt(record(), CopyKind.MERCHANT, MERCHANT, lang=lang, columns=32, reprint=True,
                      printed_at=PRINTED_AT)
        lines = [line.text for line in text_lines(doc)]
        marks = [i for i, line in enumerate(lines) if "REPRINT" in line]
        first_field = next(i for i, line in enumerate(lines) if "MERCHANT NO." in line)
        amount = next(i for i, line in enumerate(lines) if "1,234.56" in line)
        assert len(marks) == 2
        assert marks[0] < first_field
        assert 0 < marks[1] - amount <= 2
        assert "2024/06/02 09:00:00" in "\n".join(lines)  # when the reprint was made
        original = receipt(record(), CopyKind.MERCHANT, MERCHANT, lang=lang, columns=32,
                           printed_at=PRINTED_AT)
        assert "REPRINT" not in all_text(original) and "2024/06/02" not in all_text(original)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(min_size=1, max_size=90), reference=st.none() | st.text(max_size=120),
       header=st.text(max_size=100), amount=st.integers(min_value=0, max_value=99999999999),
       kind=st.sampled_from(TxnKind), copy=st.sampled_from(CopyKind), lang=st.sampled_from(LANGS),
       columns=st.sampled_from(WIDTHS), reprint=st.booleans(), org=st.none() | st.text(max_size=5),
       rrn=st.none() | st.text(max_size=14))
def test_fit_invariant_whatever_the_text(name: str, reference: str | None, header: str, amount: int,
                                         kind: TxnKind, copy: CopyKind, lang: str, columns: int,
                                         reprint: bool, org: str | None, rrn: str | None) -> None:
    merchant = MerchantInfo.from_settings(
        {"merchant": {"name": name, "mid": "123456789012345", "tid": "12345678",
                      "receipt_header": header, "receipt_footer": reference or ""}})
    rec = record(kind, amount=amount, reference=reference, card_org=org, rrn=rrn)
    doc = receipt(rec, copy, merchant, lang=lang, columns=columns, reprint=reprint,
                  printed_at=PRINTED_AT, no_signature_limit=amount)
    assert_fits(doc, columns)
    # The mark is judged against the same receipt without it: merchant text may hold "REPRINT"
    # itself, or (once its letters are removed) break a REPRINT apart.
    plain = receipt(rec, copy, merchant, lang=lang, columns=columns, reprint=False,
                    printed_at=PRINTED_AT, no_signature_limit=amount)
    marks = all_text(doc).count("REPRINT") - all_text(plain).count("REPRINT")
    assert (marks > 0) == reprint
    slip = void_slip(SlipRef.from_record(rec, copy, reprint=reprint), merchant, lang=lang,
                     columns=columns, printed_at=PRINTED_AT)
    assert_fits(slip, columns)


# ---- no full PAN, ever -----------------------------------------------------------

def digit_runs(text: str) -> set[str]:
    return set(re.findall(r"\d{13,}", text))


@pytest.mark.parametrize(("lang", "columns"), list(itertools.product(LANGS, WIDTHS)))
def test_no_full_pan_on_any_printout(lang: str, columns: int) -> None:
    rec = record(reference="ORDER 7")
    docs = [receipt(rec, copy, MERCHANT, lang=lang, columns=columns, reprint=True, printed_at=PRINTED_AT)
            for copy in CopyKind]
    docs.append(void_slip(SlipRef.from_record(rec, CopyKind.MERCHANT), MERCHANT, lang=lang,
                          columns=columns, printed_at=PRINTED_AT))
    for doc in docs:
        body = plain_text(doc, columns) + doc.title
        assert FULL_PAN not in body
        assert digit_runs(body) <= {MERCHANT.mid}  # the 15-digit MID is the only long number
        assert "622202*********0128" in body


def test_a_pan_that_reached_the_layout_unmasked_is_masked_anyway() -> None:
    rec = record(pan_masked=FULL_PAN, reference=f"card {FULL_PAN} typed into the note")
    doc = receipt(rec, CopyKind.MERCHANT, MERCHANT, lang="en", columns=32)
    ref = SlipRef.from_record(rec, CopyKind.MERCHANT)
    assert ref.pan_masked == mask_pan(FULL_PAN) and FULL_PAN not in repr(ref)
    slip = void_slip(ref, MERCHANT, lang="en", columns=32, printed_at=PRINTED_AT)
    for body in (plain_text(doc, 32), plain_text(slip, 32)):
        assert FULL_PAN not in body.replace("\n", "").replace(" ", "")
        assert digit_runs(body) <= {MERCHANT.mid}


def test_a_card_number_field_is_masked_even_when_it_fails_luhn() -> None:
    bad_pan = "6222021234567891"  # not Luhn-valid, but it is in the card number field
    doc = receipt(record(pan_masked=bad_pan), CopyKind.MERCHANT, MERCHANT, lang="en", columns=48)
    assert bad_pan not in all_text(doc) and "622202******7891 /I" in all_text(doc)


def test_long_numbers_that_are_not_card_numbers_are_left_alone() -> None:
    order = "2024060100000017"  # 16 digits, fails Luhn: an order number, printed as it is
    doc = receipt(record(reference=order), CopyKind.MERCHANT, MERCHANT, lang="en", columns=48)
    assert order in all_text(doc)


# ---- signature rule (免签) ------------------------------------------------------

@pytest.mark.parametrize(("kind", "copy", "pin", "amount", "limit", "signed"), [
    (TxnKind.SALE, CopyKind.MERCHANT, False, 100, 0, True),
    (TxnKind.SALE, CopyKind.MERCHANT, True, 100, 0, True),  # limit 0: always sign
    (TxnKind.SALE, CopyKind.MERCHANT, True, 100_000, 100_000, False),  # at the limit
    (TxnKind.SALE, CopyKind.MERCHANT, True, 100_001, 100_000, True),  # over it
    (TxnKind.SALE, CopyKind.MERCHANT, False, 100, 100_000, True),  # no PIN: sign
    (TxnKind.SALE, CopyKind.BANK, False, 100, 0, True),
    (TxnKind.SALE, CopyKind.CARDHOLDER, False, 100, 0, None),  # the cardholder's copy: nothing
    (TxnKind.VOID, CopyKind.MERCHANT, False, 100, 0, True),
    (TxnKind.REFUND, CopyKind.MERCHANT, False, 100, 0, True),
    (TxnKind.PREAUTH, CopyKind.MERCHANT, True, 100, 1000, False),
    (TxnKind.BALANCE, CopyKind.MERCHANT, False, 0, 0, None),  # moves no money
])
def test_signature_rule(kind: TxnKind, copy: CopyKind, pin: bool, amount: int, limit: int,
                        signed: bool | None) -> None:
    for lang in LANGS:
        doc = receipt(record(kind, pin_entered=pin, amount=amount), copy, MERCHANT, lang=lang,
                      columns=32, no_signature_limit=limit)
        body = all_text(doc)
        assert ("CARDHOLDER SIGNATURE" in body) == (signed is True)
        assert ("I ACKNOWLEDGE SATISFACTORY" in body) == (signed is True)
        assert ("本人确认以上交易" in body) == (signed is True and lang == "zh_CN")
        assert ("NO SIGNATURE REQUIRED" in body) == (signed is False)
        if signed:
            assert any(isinstance(b, Feed) and b.lines >= 3 for b in doc.blocks[:-2])  # room to sign


# ---- the void slip -----------------------------------------------------------------

@pytest.mark.parametrize(("lang", "columns"), list(itertools.product(LANGS, WIDTHS)))
def test_void_slip_names_the_printout_it_cancels(lang: str, columns: int) -> None:
    rec = record(TxnKind.VOID)
    slip = void_slip(SlipRef.from_record(rec, CopyKind.CARDHOLDER, reprint=True), MERCHANT, lang=lang,
                     columns=columns, printed_at=PRINTED_AT)
    assert_fits(slip, columns)
    body = all_text(slip)
    assert "000456" not in body  # the STAN is a wire detail: the slip names the voucher no.
    for needed in ("000123", "000001", "RMB -1,234.56", mask_pan(FULL_PAN), "CARDHOLDER COPY",
                   "VOID", "REPRINT", "2024/06/01 12:34:56", "2024/06/02 09:00:00",
                   "TRANSACTION NOT AFFECTED"):
        assert needed in body, needed
    if lang == "zh_CN":
        assert "作废" in body and "消费撤销" in body and "交易本身不受影响" in body
    marks = [line for line in text_lines(slip) if "VOID" in line.text and "消费撤销" not in line.text]
    assert marks[0].double and marks[-1].text.startswith("***")  # top and bottom: torn halves say it
    assert slip.title == "void slip for void 000123"


def test_void_slip_for_a_printout_without_a_transaction() -> None:
    slip = void_slip(SlipRef("settlement_report", batch="000003"), MERCHANT, lang="zh_CN", columns=32,
                     printed_at=PRINTED_AT)
    assert_fits(slip, 32)
    body = all_text(slip)
    assert "结算报告 SETTLEMENT REPORT" in body and "000003" in body
    assert "CARD NO." not in body and "AMOUNT" not in body


def test_copy_kinds_from_other_modules_are_accepted_by_value() -> None:
    ref = SlipRef.from_record(record(), "cardholder")  # type: ignore[arg-type]
    assert ref.copy is CopyKind.CARDHOLDER
    doc = receipt(record(), "bank", MERCHANT, lang="en", columns=32)  # type: ignore[arg-type]
    assert "BANK COPY" in all_text(doc)
    with pytest.raises(ValueError, match="not a valid CopyKind"):
        SlipRef("kind_sale", copy="customer")  # type: ignore[arg-type]


def test_slip_ref_refuses_a_title_the_catalog_cannot_print() -> None:
    with pytest.raises(ValueError, match="no receipt text for the slip title 'nonsense'"):
        SlipRef("nonsense")


# ---- the test page -----------------------------------------------------------------

@pytest.mark.parametrize(("lang", "columns"), list(itertools.product(LANGS, WIDTHS)))
def test_test_page(lang: str, columns: int) -> None:
    doc = layout.test_slip(LONG_MERCHANT, lang=lang, columns=columns, firmware_version="0.1.0+abc",
                           printed_at=PRINTED_AT)
    assert_fits(doc, columns)
    lines = [line.text for line in text_lines(doc)]
    units = "".join(str(i % 10) for i in range(1, columns + 1))
    assert units in lines and len(units) == columns
    assert any(text_cells(line) == columns and line.startswith("一二三") for line in lines)
    body = "\n".join(lines)
    assert "The quick brown fox" in body and "中国银联" in body  # both languages, always
    assert "0.1.0+abc" in body and "2024/06/02 09:00:00" in body
    assert all(chr(code) in body for code in range(0x21, 0x7F))  # the whole printable ASCII set
    styled = text_lines(doc)
    assert any(line.bold and not line.double for line in styled)
    assert any(line.double and not line.bold for line in styled)
    assert {line.align for line in styled} == set(Align)


# ---- merchant, copies ---------------------------------------------------------------

def test_merchant_info_from_factory_settings() -> None:
    info = MerchantInfo.from_settings(FACTORY)
    assert info == MerchantInfo("DEMO MERCHANT", "123456789012345", "12345678", (), ("Thank you",))
    data = {"merchant": dict(FACTORY["merchant"], receipt_header="Line 1\r\nLine\x1b2\n\n",
                             receipt_footer="A\n\nB")}
    info = MerchantInfo.from_settings(data)
    assert info.header == ("Line 1", "Line?2") and info.footer == ("A", "", "B")


@pytest.mark.parametrize(("data", "words"), [
    ({}, "no merchant group"),
    ({"merchant": "x"}, "no merchant group"),
    ({"merchant": dict(FACTORY["merchant"], name=5)}, "merchant.name must be text"),
])
def test_merchant_info_refuses_bad_settings(data: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        MerchantInfo.from_settings(data)


def test_copies() -> None:
    assert copies_for(1) == (CopyKind.MERCHANT,)
    assert copies_for(2) == (CopyKind.MERCHANT, CopyKind.CARDHOLDER)
    assert copies_for(3) == (CopyKind.MERCHANT, CopyKind.CARDHOLDER, CopyKind.BANK)
    for bad in (0, 4, "2", True):
        with pytest.raises(ValueError, match=r"printer\.copies must be 1, 2 or 3"):
            copies_for(bad)  # type: ignore[arg-type]


# ---- bad input -------------------------------------------------------------------------

def test_control_characters_never_reach_the_printer() -> None:
    merchant = dataclasses.replace(MERCHANT, name="EVIL\x1b@\x1dV\x00SHOP", footer=("bye\x07",))
    rec = record(reference="ref\x1b!\x30\ttab", card_org="\x1bXX", auth_code="A\x00B")
    doc = receipt(rec, CopyKind.MERCHANT, merchant, lang="en", columns=32)
    assert_fits(doc, 32)
    body = all_text(doc)
    assert "EVIL?@?V?SHOP" in body and "ref?!0 tab" in body and "bye?" in body and "A?B" in body


@pytest.mark.parametrize(("changes", "shown"), [
    ({"local_date": "1399", "local_time": "12:34"}, "1399 12:34"),  # not a date: printed as it is
    ({"local_date": "", "local_time": ""}, None),
    ({"created_at": float("nan")}, "06/01 12:34:56"),  # year unknown
    ({"local_date": "0101", "created_at": datetime(2024, 12, 31, 20, tzinfo=UTC).timestamp()},
     "2025/01/01 12:34:56"),  # local New Year before UTC's
    ({"local_date": "1231", "created_at": datetime(2025, 1, 1, 1, tzinfo=UTC).timestamp()},
     "2024/12/31 12:34:56"),
    ({"card_org": "ZZZ"}, "ZZZ"),  # unknown organisation: its code
    ({"entry_mode": "telepathy"}, mask_pan(FULL_PAN)),  # unknown entry mode: no letter
    ({"orig_date": "ab"}, None),
])
def test_odd_record_fields_still_print(changes: dict, shown: str | None) -> None:
    doc = receipt(record(TxnKind.REFUND, **changes), CopyKind.MERCHANT, MERCHANT, lang="en", columns=32)
    assert_fits(doc, 32)
    if shown:
        assert shown in all_text(doc)
    if "entry_mode" in changes:
        assert f"{mask_pan(FULL_PAN)} /" not in all_text(doc)


@pytest.mark.parametrize("state", [TxnState.DECLINED, TxnState.PENDING, TxnState.REVERSAL_DUE,
                                   TxnState.REVERSED, TxnState.FAILED, TxnState.RESOLVED_MANUALLY])
def test_no_receipt_for_a_transaction_that_did_not_go_through(state: TxnState) -> None:
    with pytest.raises(ValueError, match=f"no receipt for a {state.value} transaction"):
        receipt(record(state=state), CopyKind.MERCHANT, MERCHANT, lang="en", columns=32)


def test_a_voided_sale_can_still_be_reprinted() -> None:
    doc = receipt(record(state=TxnState.VOIDED), CopyKind.MERCHANT, MERCHANT, lang="en", columns=32,
                  reprint=True)
    assert "REPRINT" in all_text(doc)


@pytest.mark.parametrize(("kwargs", "error", "words"), [
    ({"columns": 20}, ValueError, "columns must be 24 to 96"),
    ({"columns": 200}, ValueError, "columns must be 24 to 96"),
    ({"columns": True}, ValueError, "columns must be 24 to 96"),
    ({"lang": "fr"}, ValueError, "receipt language must be one of en, zh_CN"),
    ({"no_signature_limit": -1}, ValueError, "no-signature limit"),
    ({"copy": "customer"}, ValueError, "not a valid CopyKind"),
    ({"logo": Image(b"\x00" * 10, 385, 1)}, ValueError, "needs 385"),
    ({"logo": Image(b"\x00" * 385, 385, 1)}, ValueError, "385 dots wide.*at most 384"),
])
def test_bad_arguments_are_refused_in_words(kwargs: dict, error: type, words: str) -> None:
    args = {"copy": CopyKind.MERCHANT, "lang": "en", "columns": 32} | kwargs
    copy = args.pop("copy")
    with pytest.raises(error, match=words):
        receipt(record(), copy, MERCHANT, **args)


def test_catalog_is_complete_and_refuses_unknown_keys() -> None:
    for kind in TxnKind:
        assert texts.has(f"kind_{kind.value}")
    for copy in CopyKind:
        assert texts.has(copy.key)
    for en, zh in texts.CATALOG.values():
        assert en and zh
    assert texts.label("copy_merchant", "zh_CN") == "商户存根"
    with pytest.raises(KeyError, match="no text for 'nope'"):
        texts.label("nope", "en")


def test_entry_mode_letters() -> None:
    for mode, letter in (("swipe", "S"), ("chip", "I"), ("fallback", "F"), ("keyed", "M"),
                         ("contactless", "C")):
        doc = receipt(record(entry_mode=mode), CopyKind.MERCHANT, MERCHANT, lang="en", columns=48)
        assert f"{mask_pan(FULL_PAN)} /{letter}" in all_text(doc)


# ---- golden slips (32 columns): reviewed against real CUP 签购单 --------------------------

GOLDEN_EN = """\
   D E M O   M E R C H A N T
     1 Demo Road, Shanghai
         POS SALES SLIP
         MERCHANT COPY
--------------------------------
MERCHANT NO.:    123456789012345
TERMINAL NO.:           12345678
OPERATOR NO.:                 01
--------------------------------
CARD NO.: 622202*********0128 /I
CARD ORG.:                   CUP
TRANS TYPE:                 SALE
BATCH NO.:                000001
VOUCHER NO.:              000123
AUTH NO.:                 A1B2C3
REFER NO.:          240601123456
DATE/TIME:   2024/06/01 12:34:56
AMOUNT:
         R M B   1 , 2 3 4 . 5 6
REFERENCE:     ORDER 20240601-07
--------------------------------
CARDHOLDER SIGNATURE:



--------------------------------
I ACKNOWLEDGE SATISFACTORY
RECEIPT OF RELATIVE
GOODS/SERVICES
           Thank you



~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"""

GOLDEN_ZH = """\
   D E M O   M E R C H A N T
     1 Demo Road, Shanghai
    POS签购单 POS SALES SLIP
     商户存根 MERCHANT COPY
--------------------------------
商户编号(MERCHANT NO.):
                 123456789012345
终端编号(TERMINAL NO.): 12345678
操作员号(OPERATOR NO.):       01
--------------------------------
卡号(CARD NO.):
          622202*********0128 /I
卡组织(CARD ORG.):      银联 CUP
交易类型(TRANS TYPE):  消费 SALE
批次号(BATCH NO.):        000001
凭证号(VOUCHER NO.):      000123
授权码(AUTH NO.):         A1B2C3
参考号(REFER NO.):  240601123456
日期/时间(DATE/TIME):
             2024/06/01 12:34:56
金额(AMOUNT):
         R M B   1 , 2 3 4 . 5 6
备注(REFERENCE):
               ORDER 20240601-07
--------------------------------
持卡人签名
(CARDHOLDER SIGNATURE):



--------------------------------
本人确认以上交易, 同意将其记入本
卡账户
I ACKNOWLEDGE SATISFACTORY
RECEIPT OF RELATIVE
GOODS/SERVICES
           Thank you



~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~"""


@pytest.mark.parametrize(("lang", "golden"), [("en", GOLDEN_EN), ("zh_CN", GOLDEN_ZH)])
def test_golden_sale_receipt(lang: str, golden: str) -> None:
    doc = receipt(record(reference="ORDER 20240601-07"), CopyKind.MERCHANT, MERCHANT, lang=lang,
                  columns=32)
    assert plain_text(doc, 32) == golden
    lines = text_lines(doc)
    assert lines[0] == TextLine("DEMO MERCHANT", Align.CENTER, bold=True, double=True)
    bold = [line.text for line in lines if line.bold and not line.double]
    copy_name = texts.label("copy_merchant", lang) + (" MERCHANT COPY" if lang == "zh_CN" else "")
    assert bold[0].strip() == copy_name
    assert any("622202" in text for text in bold) and any(text.endswith("SALE") for text in bold)
    assert not any("000001" in text or "A1B2C3" in text for text in bold)
    assert doc.title == "sale receipt 000123 merchant copy"
