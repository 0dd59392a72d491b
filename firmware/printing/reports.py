"""Settlement (Z), subtotals (X) and transaction-list reports, for paper and for the LCD.

Pure functions, no I/O: journal data in (SettlementRow, Journal.totals_by_kind, TxnRecords),
a firmware.ports.Document or LCD lines out. Every line fits its columns in cells (CJK = 2).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from firmware.digits import is_digits
from firmware.engine.model import NET_SIGN, SettlementRow, TxnRecord
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind, mask_pan
from firmware.ports import Align, Block, Cut, Document, Feed, TextLine, text_cells
from firmware.printing import texts
from firmware.printing.layout import (
    FEED_BEFORE_CUT,
    MAX_COLUMNS,
    MIN_COLUMNS,
    NEGATIVE_KINDS,
    MerchantInfo,
    currency_symbol,
    format_amount,
    two_columns,
    wrap,
)

__all__ = [
    "LCD_MAX_COLUMNS",
    "LCD_MIN_COLUMNS",
    "ReportSection",
    "TotalsByKind",
    "net_of",
    "settlement_lines",
    "settlement_report",
    "subtotal_lines",
    "subtotals_report",
    "transaction_lines",
    "transaction_list",
]

# (card side "domestic" | "foreign", TxnKind value) -> (count, amount in fen), as
# Journal.totals_by_kind returns it: approved and voided records (gross totals).
TotalsByKind = Mapping[tuple[str, str], tuple[int, int]]

SIDES: Final = ("domestic", "foreign")
# The order kinds are reported in; balance enquiries move no money and are not reported.
KIND_ORDER: Final = (TxnKind.SALE, TxnKind.VOID, TxnKind.REFUND, TxnKind.PREAUTH,
                     TxnKind.PREAUTH_VOID, TxnKind.COMPLETION, TxnKind.COMPLETION_VOID)
COUNTED_STATES: Final = frozenset({TxnState.APPROVED, TxnState.VOIDED})
# The list leaves out what moved no money and needs no follow-up (declines, lost enquiries).
UNLISTED_STATES: Final = frozenset({TxnState.DECLINED, TxnState.FAILED})

AMOUNT_CELLS: Final = len("9,999,999.99")  # the amount column of report tables
LCD_MIN_COLUMNS: Final = 12
LCD_MAX_COLUMNS: Final = 40


@dataclass(frozen=True)
class ReportSection:
    """A block a caller adds to a report before its end (issue 5's anomaly sections):
    a heading and label/value rows, already in the report's language."""

    heading: str
    rows: tuple[tuple[str, str], ...] = ()
    notes: tuple[str, ...] = ()


# ---- text helpers ------------------------------------------------------------------------


def _printable(text: str | None) -> str:
    """Control and format characters would reach the printer (or the LCD) as commands: '?'."""
    return "".join("?" if unicodedata.category(ch)[0] == "C" else ch for ch in (text or ""))


def _right(text: str, columns: int) -> list[str]:
    """Right-aligned on one line, or wrapped when longer than the line (money is never cut)."""
    if text_cells(text) <= columns:
        return [" " * (columns - text_cells(text)) + text]
    return wrap(text, columns)


def _total_name(kind: str, lang: str) -> str:
    """A per-type total's name ("SALES", "消费"); a kind the catalog does not know, as it is."""
    key = f"total_{kind}"
    return texts.label(key, lang) if texts.has(key) else _printable(kind)


def _ordered_kinds(totals: TotalsByKind) -> list[str]:
    """Known kinds in report order, then any other kind the journal holds (never dropped)."""
    present = {kind for _, kind in totals}
    known = [k.value for k in KIND_ORDER if k.value in present]
    others = sorted(present - {k.value for k in KIND_ORDER} - {TxnKind.BALANCE.value})
    return known + others


def _by_kind(totals: TotalsByKind, sides: Sequence[str] = SIDES) -> list[tuple[str, int, int]]:
    """(kind, count, amount) summed over the given card sides, in report order; each amount as
    it was (a void of 12.34 counts 12.34 under voids: the sign is the net's business)."""
    out = []
    for kind in _ordered_kinds(totals):
        count = sum(totals.get((side, kind), (0, 0))[0] for side in sides)
        amount = sum(totals.get((side, kind), (0, 0))[1] for side in sides)
        if count:
            out.append((kind, count, amount))
    return out


# NET_SIGN by the journal's kind strings (a kind this build does not know moves nothing).
_SIGN_OF: Final = {kind.value: sign for kind, sign in NET_SIGN.items()}


def net_of(totals: TotalsByKind, sides: Sequence[str] = SIDES) -> int:
    """What the batch is worth to the merchant: sales and completions less voids and refunds
    (pre-authorisations hold funds and move none)."""
    return sum(_SIGN_OF.get(kind, 0) * amount for (side, kind), (_, amount) in totals.items()
               if side in sides)


def _signed(record: TxnRecord) -> int:
    return -record.amount if record.kind in NEGATIVE_KINDS else record.amount


def _net(records: Iterable[TxnRecord]) -> int:
    """The net of the counted records (net_of, record by record)."""
    return sum(NET_SIGN[r.kind] * r.amount for r in records if r.state in COUNTED_STATES)


def _listed(records: Iterable[TxnRecord]) -> list[TxnRecord]:
    return [r for r in records if r.kind is not TxnKind.BALANCE and r.state not in UNLISTED_STATES]


def _month_day_time(local_date: str, local_time: str) -> str:
    """MM/DD hh:mm from MMDD + hhmmss; anything else as it is (the list must still print)."""
    date, time = _printable(local_date), _printable(local_time)
    if len(date) == 4 and is_digits(date) and len(time) == 6 and is_digits(time):
        return f"{date[:2]}/{date[2:]} {time[:2]}:{time[2:4]}"
    return f"{date} {time}".strip()


def _stamp(when: datetime) -> str:
    return when.strftime("%Y/%m/%d %H:%M:%S")


def _result_key(result: str | None) -> str:
    key = f"result_{result}"
    return key if result and texts.has(key) else "result_none"


# ---- the printed report builder ----------------------------------------------------------


class _Report:
    """Collects the blocks of one report copy, fitting every line to the paper as it goes."""

    def __init__(self, lang: str, columns: int, currency: str) -> None:
        texts.label("amount", lang)  # an unknown language is refused before any layout
        if isinstance(columns, bool) or not isinstance(columns, int) \
                or not MIN_COLUMNS <= columns <= MAX_COLUMNS:
            raise ValueError(f"columns must be {MIN_COLUMNS} to {MAX_COLUMNS} (32 for 58 mm paper, "
                             f"48 for 80 mm), not {columns!r}")
        currency_symbol(currency)  # a malformed currency is refused here too
        self.lang = lang
        self.columns = columns
        self.currency = currency
        self.blocks: list[Block] = []

    @property
    def zh(self) -> bool:
        return self.lang == "zh_CN"

    def words(self, key: str) -> str:
        """A title or value: "结算单 SETTLEMENT" in Chinese reports, "SETTLEMENT" in English."""
        en = texts.label(key, "en")
        return f"{texts.label(key, 'zh_CN')} {en}" if self.zh else en

    def label(self, key: str) -> str:
        en = texts.label(key, "en")
        return f"{texts.label(key, 'zh_CN')}({en}):" if self.zh else f"{en}:"

    def add(self, lines: Iterable[str], *, bold: bool = False) -> None:
        self.blocks.extend(TextLine(text, bold=bold) for text in lines)

    def line(self, text: str, align: Align = Align.LEFT, *, bold: bool = False) -> None:
        for part in wrap(text, self.columns):
            self.blocks.append(TextLine(part, align=align, bold=bold))

    def big(self, text: str) -> None:
        for part in wrap(text, self.columns // 2):
            self.blocks.append(TextLine(part, align=Align.CENTER, bold=True, double=True))

    def rule(self) -> None:
        self.blocks.append(TextLine("-" * self.columns))

    def field(self, key: str, value: str | None) -> None:
        """Label left, value right; the value under the label when both do not fit one line."""
        if value is None or not value.strip():
            return
        label = self.label(key)
        if text_cells(label) + 1 + text_cells(value) <= self.columns or not self.zh:
            self.add(two_columns(label, value, self.columns))
            return
        # A bilingual label too long for the line breaks between its Chinese and its English.
        head = wrap(label, self.columns) if text_cells(label) <= self.columns else \
            wrap(texts.label(key, "zh_CN"), self.columns) + wrap(f"({texts.label(key, 'en')}):",
                                                                  self.columns)
        self.add(head + two_columns("", value, self.columns))

    def money(self, fen: int) -> str:
        return f"{currency_symbol(self.currency)} {format_amount(fen, self.currency)}"

    def table(self, rows: Sequence[tuple[str, int | None, int]]) -> None:
        """Name, count and amount per row (a net has no count); counts and amounts right-aligned
        in their columns (the same columns in every table of a report, up to 9,999,999.99)."""
        amounts = [format_amount(amount, self.currency) for _, _, amount in rows]
        width = max([AMOUNT_CELLS, *(len(a) for a in amounts)])
        for (name, count, _), amount in zip(rows, amounts, strict=True):
            shown = "" if count is None else str(count)
            self.add(two_columns(name, f"{shown:>4}  {amount:>{width}}", self.columns))

    def header(self, merchant: MerchantInfo, title_key: str, reprint: bool) -> None:
        name = _printable(merchant.name).strip()
        if name:
            self.big(name)
        self.big(self.words(title_key))
        if reprint:
            self.big(self.words("reprint"))
        self.rule()
        self.field("merchant_name", name)
        self.field("merchant_no", _printable(merchant.mid))
        self.field("terminal_no", _printable(merchant.tid))

    def total_name(self, kind: str) -> str:
        if not texts.has(f"total_{kind}"):
            return _printable(kind)
        en = texts.label(f"total_{kind}", "en")
        return f"{texts.label(f'total_{kind}', 'zh_CN')} {en}" if self.zh else en

    def by_type(self, heading_key: str, totals: TotalsByKind, sides: Sequence[str] = SIDES) -> None:
        """Count and amount per transaction type, then the net (no type added into another)."""
        self.line(self.words(heading_key), bold=True)
        rows: list[tuple[str, int | None, int]] = [
            (self.total_name(kind), count, amount) for kind, count, amount in _by_kind(totals, sides)]
        if not rows:
            self.line(self.words("no_transactions"))
            return
        self.line(f"{self.words('count_amount')} ({currency_symbol(self.currency)})", Align.RIGHT)
        self.table([*rows, (self.words("net_total"), None, net_of(totals, sides))])

    def sections(self, extra: Sequence[ReportSection]) -> None:
        for section in extra:
            self.rule()
            self.line(_printable(section.heading), bold=True)
            for label, value in section.rows:
                self.add(two_columns(_printable(label), _printable(value), self.columns))
            for note in section.notes:
                self.line(_printable(note))

    def finish(self, reprint: bool, title: str) -> Document:
        self.rule()
        if reprint:
            self.line(f"*** {self.words('reprint')} ***", Align.CENTER, bold=True)
        self.line(self.words("end_of_report"), Align.CENTER)
        self.blocks.append(Feed(FEED_BEFORE_CUT))
        self.blocks.append(Cut())
        return Document(blocks=tuple(self.blocks), title=title + (" reprint" if reprint else ""))


# ---- printed reports ---------------------------------------------------------------------


def settlement_report(settlement: SettlementRow, totals_by_kind: TotalsByKind, merchant: MerchantInfo,
                      *, lang: str, columns: int, printed_at: datetime, reprint: bool = False,
                      operator: str | None = None, currency: str = "156",
                      sections: Sequence[ReportSection] = ()) -> Document:
    """The 结算单 (Z report) printed when a settlement finishes: count and amount per type and
    the net, then the same per card side with the host's reconciliation result in words (the
    0500's debit/credit totals are a wire detail: the merchant reads types and the net).
    A reprint is marked REPRINT at the top and the end, so it cannot pass for the first print."""
    if settlement.state != "DONE":
        raise ValueError(f"no settlement report for a {settlement.state} settlement: "
                         "it prints when the settlement finishes")
    r = _Report(lang, columns, currency)
    r.header(merchant, "settlement_title", reprint)
    r.field("operator_no", _printable(operator))
    r.field("batch_no", _printable(settlement.batch))
    if settlement.finished_at is not None:
        settled = datetime.fromtimestamp(settlement.finished_at, printed_at.tzinfo)
        r.field("settled_at", _stamp(settled))
    r.field("print_time", _stamp(printed_at))
    r.rule()
    r.by_type("by_type", totals_by_kind)
    for side, result in (("domestic", settlement.result_domestic),
                         ("foreign", settlement.result_foreign)):
        r.rule()
        r.by_type(f"side_{side}", totals_by_kind, (side,))
        r.field("host_result", r.words(_result_key(result)))
    if settlement.uploaded_count or not settlement.balanced:
        r.rule()
        r.field("batch_uploaded", str(settlement.uploaded_count))
    r.sections(sections)
    return r.finish(reprint, _printable(f"settlement report {settlement.batch}"))


def subtotals_report(batch: str, totals_by_kind: TotalsByKind, merchant: MerchantInfo, *, lang: str,
                     columns: int, printed_at: datetime, reprint: bool = False, settled: bool = False,
                     operator: str | None = None, currency: str = "156",
                     sections: Sequence[ReportSection] = ()) -> Document:
    """The 小计 (X report): the batch's totals so far, marked NOT SETTLED (nothing is closed).
    settled=True when the batch was settled between the request and the printing."""
    r = _Report(lang, columns, currency)
    r.header(merchant, "subtotals_title", reprint)
    r.line(f"*** {r.words('batch_settled' if settled else 'not_settled')} ***", Align.CENTER,
           bold=True)
    r.field("operator_no", _printable(operator))
    r.field("batch_no", _printable(batch))
    r.field("print_time", _stamp(printed_at))
    r.rule()
    r.by_type("by_type", totals_by_kind)
    for side in SIDES:
        r.rule()
        r.by_type(f"side_{side}", totals_by_kind, (side,))
    r.sections(sections)
    return r.finish(reprint, _printable(f"subtotals {batch}"))


def transaction_list(records: Sequence[TxnRecord], merchant: MerchantInfo, *, lang: str, columns: int,
                     printed_at: datetime, batch: str, reprint: bool = False, settled: bool = False,
                     currency: str = "156") -> Document:
    """The 交易明细: two lines a transaction (voucher no., type, state when not approved, date and
    time; masked card number, amount), then the count and the net amount of the batch."""
    r = _Report(lang, columns, currency)
    r.header(merchant, "txn_list", reprint)
    if not settled:
        r.line(f"*** {r.words('not_settled')} ***", Align.CENTER, bold=True)
    r.field("batch_no", _printable(batch))
    r.field("print_time", _stamp(printed_at))
    r.rule()
    listed = _listed(records)
    if not listed:
        r.line(r.words("no_transactions"))
    for record in listed:
        head = f"{_printable(record.invoice)} {texts.label(f'kind_{record.kind.value}', lang)}"
        when = _month_day_time(record.local_date, record.local_time)
        state = "" if record.state is TxnState.APPROVED else \
            texts.label(f"state_{record.state.value}", lang)
        if state and text_cells(f"{head} {state} {when}") <= r.columns:
            head, state = f"{head} {state}", ""
        if text_cells(f"{head} {when}") <= r.columns:
            r.add(two_columns(head, when, r.columns))
            if state:  # too long for the first line: a line of its own, not a broken word
                r.add(f"  {part}" for part in wrap(state, r.columns - 2))
        else:  # a long type name: the date and time go down beside the state
            r.add(wrap(head, r.columns))
            r.add(two_columns(f"  {state}" if state else "", when, r.columns))
        pan = mask_pan(_printable(record.pan_masked))
        r.add(two_columns(pan, format_amount(_signed(record), record.currency), r.columns))
    r.rule()
    r.field("total", str(len(listed)))
    r.field("net_amount", r.money(_net(listed)))
    return r.finish(reprint, _printable(f"transaction list {batch}"))


# ---- LCD lines ---------------------------------------------------------------------------


def _check_lcd(lang: str, cols: int) -> None:
    texts.label("amount", lang)
    if isinstance(cols, bool) or not isinstance(cols, int) or not LCD_MIN_COLUMNS <= cols <= LCD_MAX_COLUMNS:
        raise ValueError(f"LCD columns must be {LCD_MIN_COLUMNS} to {LCD_MAX_COLUMNS} "
                         f"(16 or 21 on the boards), not {cols!r}")


def _count_then_amount(name: str, count: int, amount: int, currency: str, cols: int) -> list[str]:
    return two_columns(name, str(count), cols) + _right(format_amount(amount, currency), cols)


def _type_lines(totals: TotalsByKind, lang: str, cols: int, currency: str,
                sides: Sequence[str] = SIDES) -> list[str]:
    """Per type its count, then its amount right-aligned; then the net."""
    rows = _by_kind(totals, sides)
    if not rows:
        return wrap(texts.label("no_transactions", lang), cols)
    lines: list[str] = []
    for kind, count, amount in rows:
        lines += _count_then_amount(_total_name(kind, lang), count, amount, currency, cols)
    net = format_amount(net_of(totals, sides), currency)
    return lines + two_columns(texts.label("net_total", lang), net, cols)


def subtotal_lines(totals_by_kind: TotalsByKind, lang: str, cols: int,
                   currency: str = "156") -> list[str]:
    """The open batch's totals for the LCD: count and amount per type, then the net."""
    _check_lcd(lang, cols)
    return _type_lines(totals_by_kind, lang, cols, currency)


def transaction_lines(records: Sequence[TxnRecord], lang: str, cols: int) -> list[str]:
    """The transactions for the LCD, two lines each: "000123 SALE" and "  123.45 APPR"."""
    _check_lcd(lang, cols)
    listed = _listed(records)
    if not listed:
        return wrap(texts.label("no_transactions", lang), cols)
    lines: list[str] = []
    for record in listed:
        lines += wrap(f"{_printable(record.invoice)} {texts.label(f'kind_{record.kind.value}', lang)}",
                      cols)
        state = texts.label(f"state_short_{record.state.value}", lang)
        lines += _right(f"{format_amount(_signed(record), record.currency)} {state}", cols)
    return lines


def settlement_lines(settlement: SettlementRow, totals_by_kind: TotalsByKind, lang: str, cols: int,
                     currency: str = "156") -> list[str]:
    """A settlement for the LCD: its batch, then per card side the host's result in words, the
    count and amount per type and the net, and how many records the batch upload carried."""
    _check_lcd(lang, cols)
    lines = two_columns(texts.label("batch_no", lang), _printable(settlement.batch), cols)
    for side, result in (("domestic", settlement.result_domestic),
                         ("foreign", settlement.result_foreign)):
        lines += two_columns(texts.label(f"side_{side}", lang),
                             texts.label(_result_key(result), lang), cols)
        lines += _type_lines(totals_by_kind, lang, cols, currency, (side,))
    if settlement.uploaded_count or not settlement.balanced:
        lines += two_columns(texts.label("batch_uploaded", lang), str(settlement.uploaded_count), cols)
    return lines
