"""Receipt, void-slip and printer-test layout: journal rows in, firmware.ports.Document out.

Pure functions, no I/O. Every TextLine leaving here already fits the printer's columns in cells
(a CJK character takes two, a double-size line holds half), so drivers never wrap.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from firmware.digits import is_digits
from firmware.emv.record import summary as chip_summary
from firmware.engine.cardclass import luhn_ok
from firmware.engine.model import TxnRecord
from firmware.engine.states import TxnState
from firmware.host.messages import TxnKind, mask_pan
from firmware.ports import Align, Block, Cut, Document, Feed, Image, TextLine, char_cells, text_cells
from firmware.printing import texts

__all__ = [
    "DOTS_PER_COLUMN",
    "MAX_COLUMNS",
    "MIN_COLUMNS",
    "CopyKind",
    "MerchantInfo",
    "SlipRef",
    "copies_for",
    "currency_symbol",
    "fit",
    "format_amount",
    "plain_text",
    "receipt",
    "signature_required",
    "test_slip",
    "two_columns",
    "void_slip",
    "wrap",
]

MIN_COLUMNS: Final = 24
MAX_COLUMNS: Final = 96
# ESC/POS font A is 12 dots wide: 32 columns = 384 dots (58 mm), 48 columns = 576 dots (80 mm).
DOTS_PER_COLUMN: Final = 12
FEED_BEFORE_CUT: Final = 3  # lines between the last text and the cutter blade
SIGNATURE_SPACE: Final = 3  # blank lines to sign in

# Kinds whose amount leaves the cardholder's account the other way: printed with a minus sign.
NEGATIVE_KINDS: Final = frozenset({TxnKind.VOID, TxnKind.REFUND, TxnKind.PREAUTH_VOID,
                                   TxnKind.COMPLETION_VOID})
# Kinds that move (or hold) money: they print an amount and are signed for.
MONEY_KINDS: Final = frozenset(TxnKind) - {TxnKind.BALANCE}
# Kinds that refer to an original transaction, whose references go on the receipt.
ORIGINAL_KINDS: Final = frozenset({TxnKind.VOID, TxnKind.REFUND, TxnKind.PREAUTH_VOID,
                                   TxnKind.COMPLETION, TxnKind.COMPLETION_VOID})
# A receipt says money moved; only these states may say so. VOIDED is an approved record
# voided later (its receipt can still be reprinted). A refund stored for sending (ADVICE_DUE)
# has none: the host may still decline it, and its receipt prints when the host acknowledges.
RECEIPT_STATES: Final = frozenset({TxnState.APPROVED, TxnState.VOIDED})

# ISO 4217: numeric -> (alphabetic, minor-unit digits). The common ones plus every currency
# whose minor unit is not 2, so an amount is never printed 100 times too large or small.
_CURRENCIES: Final[dict[str, tuple[str, int]]] = {
    "156": ("CNY", 2), "344": ("HKD", 2), "446": ("MOP", 2), "901": ("TWD", 2),
    "840": ("USD", 2), "978": ("EUR", 2), "826": ("GBP", 2), "702": ("SGD", 2),
    "036": ("AUD", 2), "124": ("CAD", 2), "756": ("CHF", 2), "764": ("THB", 2),
    "458": ("MYR", 2), "643": ("RUB", 2), "356": ("INR", 2), "554": ("NZD", 2),
    "392": ("JPY", 0), "410": ("KRW", 0), "704": ("VND", 0), "152": ("CLP", 0),
    "352": ("ISK", 0), "600": ("PYG", 0), "800": ("UGX", 0), "950": ("XAF", 0),
    "952": ("XOF", 0), "953": ("XPF", 0), "108": ("BIF", 0), "174": ("KMF", 0),
    "262": ("DJF", 0), "324": ("GNF", 0), "646": ("RWF", 0), "548": ("VUV", 0),
    "048": ("BHD", 3), "414": ("KWD", 3), "512": ("OMR", 3), "400": ("JOD", 3),
    "788": ("TND", 3), "368": ("IQD", 3), "434": ("LYD", 3), "990": ("CLF", 4),
}
_BY_ALPHA: Final = {alpha: numeric for numeric, (alpha, _) in _CURRENCIES.items()}
# What Chinese slips print instead of the ISO code.
_PRINTED_SYMBOL: Final = {"156": "RMB"}

_PAN_LIKE: Final = re.compile(r"\d{13,19}")
_NO_LINE_START: Final = frozenset("、。，．：；！？）」』】》〉,.:;!?)]}")


# ---- text helpers ------------------------------------------------------------


def fit(text: str, columns: int) -> str:
    """The longest start of text that fits in `columns` cells; never half a wide character."""
    kept: list[str] = []
    used = 0
    for ch in text:
        cells = char_cells(ch)
        if used + cells > columns:
            break
        kept.append(ch)
        used += cells
    return "".join(kept)


def _tokens(paragraph: str) -> list[str]:
    """Words of Latin text, single wide characters, and whitespace runs (break opportunities)."""
    tokens: list[str] = []
    word: list[str] = []
    for ch in paragraph:
        if ch.isspace() or char_cells(ch) == 2:
            if word:
                tokens.append("".join(word))
                word = []
            if ch.isspace() and tokens and tokens[-1].isspace():
                tokens[-1] += " "
            else:
                tokens.append(" " if ch.isspace() else ch)
        else:
            word.append(ch)
    if word:
        tokens.append("".join(word))
    return tokens


def wrap(text: str, columns: int) -> list[str]:
    """Lines of at most `columns` cells: breaks at spaces in Latin text and between CJK characters.

    A word longer than a line is cut by cells; a newline starts a new line; spaces at a break
    are dropped. Always returns at least one line (empty for empty text).
    """
    if columns < 2:
        raise ValueError(f"cannot wrap text into {columns} columns: a CJK character needs 2")
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current, used, pending_space = "", 0, ""
        paragraph_lines: list[str] = []
        for token in _tokens(paragraph):
            if token.isspace():
                pending_space = token if current else ""
                continue
            cells = text_cells(token)
            if used + len(pending_space) + cells <= columns:
                current += pending_space + token
                used += len(pending_space) + cells
            else:
                if token[0] in _NO_LINE_START and not pending_space and len(current) > 1:
                    # 禁则: closing punctuation never starts a line; the character before it
                    # moves down with it.
                    token, current = current[-1] + token, current[:-1]
                if current:
                    paragraph_lines.append(current)
                while text_cells(token) > columns:
                    head = fit(token, columns)
                    paragraph_lines.append(head)
                    token = token[len(head):]
                current, used = token, text_cells(token)
            pending_space = ""
        if current or not paragraph_lines:
            paragraph_lines.append(current)
        lines.extend(paragraph_lines)
    return lines


def two_columns(left: str, right: str, columns: int) -> list[str]:
    """Label left and value right on one line; when both do not fit, the label (wrapped) on its
    own lines and the value right-aligned below it (wrapped too if longer than a line)."""
    left_cells, right_cells = text_cells(left), text_cells(right)
    if not right:
        return wrap(left, columns)
    if left_cells + 1 + right_cells <= columns:
        return [left + " " * (columns - left_cells - right_cells) + right]
    lines = wrap(left, columns) if left else []
    if right_cells <= columns:
        lines.append(" " * (columns - right_cells) + right)
    else:
        lines.extend(wrap(right, columns))
    return lines


def _clean(text: str) -> str:
    """Printable text only: control, format and unassigned characters would reach the printer
    as commands (an ESC in a merchant name changes its mode), so they become '?'. Tabs are
    spaces; any 13-19 digit run that passes Luhn (a card number typed into a note) is masked."""
    out = []
    for ch in text:
        if ch in "\t\r\n":
            out.append(" ")
        elif unicodedata.category(ch)[0] == "C":
            out.append("?")
        else:
            out.append(ch)
    return _PAN_LIKE.sub(lambda m: mask_pan(m.group()) if luhn_ok(m.group()) else m.group(), "".join(out))


def _clean_lines(text: str) -> tuple[str, ...]:
    """Settings text with newlines -> lines, trailing blank lines dropped."""
    lines = [_clean(line).rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return tuple(lines)


# ---- money -------------------------------------------------------------------


def _currency(currency: str) -> tuple[str, str, int]:
    """(numeric code, printed symbol, minor-unit digits) for a numeric or alphabetic code."""
    code = currency.strip().upper() if isinstance(currency, str) else ""
    numeric = _BY_ALPHA.get(code, code)
    if not (len(numeric) == 3 and is_digits(numeric)):
        raise ValueError(f"currency must be a 3-digit ISO 4217 code such as 156, not {currency!r}")
    alpha, digits = _CURRENCIES.get(numeric, (numeric, 2))
    return numeric, _PRINTED_SYMBOL.get(numeric, alpha), digits


def currency_symbol(currency: str) -> str:
    """What the slip prints before an amount: RMB for 156, else the ISO letters (or the digits)."""
    return _currency(currency)[1]


def format_amount(fen: int, currency: str) -> str:
    """Minor units as the slip prints them: 123456 -> "1,234.56", -100 -> "-1.00" (no floats)."""
    if isinstance(fen, bool) or not isinstance(fen, int):
        raise TypeError(f"an amount must be an integer number of minor units (fen), not {type(fen).__name__}")
    _, _, digits = _currency(currency)
    units, minor = divmod(abs(fen), 10**digits)
    sign = "-" if fen < 0 else ""
    return f"{sign}{units:,}.{minor:0{digits}d}" if digits else f"{sign}{units:,}"


def _money(fen: int, currency: str) -> str:
    return f"{currency_symbol(currency)} {format_amount(fen, currency)}"


# ---- dates -------------------------------------------------------------------


def _txn_datetime(local_date: str | None, local_time: str | None, year: int | None) -> str:
    """YYYY/MM/DD hh:mm:ss from field 13/12 style MMDD + hhmmss; what cannot be parsed is
    printed as it is (a receipt for money that moved must still print)."""
    date, time = _clean(local_date or ""), _clean(local_time or "")
    try:
        if not (len(date) == 4 and is_digits(date) and len(time) == 6 and is_digits(time)):
            raise ValueError
        month, day = int(date[:2]), int(date[2:])
        hour, minute, second = int(time[:2]), int(time[2:4]), int(time[4:])
        # Validated against a leap year when the year is unknown, so 02/29 stays printable.
        datetime(year or 2000, month, day, hour, minute, second)
    except ValueError:
        return f"{date} {time}".strip()
    prefix = f"{year:04d}/" if year else ""
    return f"{prefix}{month:02d}/{day:02d} {hour:02d}:{minute:02d}:{second:02d}"


def _month_day(mmdd: str | None) -> str | None:
    """MM/DD for an original's MMDD (field 61), or the text as it is when it is not a date."""
    if not mmdd:
        return None
    text = _clean(mmdd)
    if len(text) == 4 and is_digits(text) and 1 <= int(text[:2]) <= 12 and 1 <= int(text[2:]) <= 31:
        return f"{text[:2]}/{text[2:]}"
    return text


def _year_of(local_date: str, created_at: float) -> int | None:
    """The year of an MMDD: the year the record was created, moved by one across New Year
    (local date and the UTC creation time can sit on two sides of it)."""
    try:
        made = datetime.fromtimestamp(created_at, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    month = local_date[:2]
    if month == "01" and made.month == 12:
        return made.year + 1
    if month == "12" and made.month == 1:
        return made.year - 1
    return made.year


def _printed_at(when: datetime) -> str:
    return when.strftime("%Y/%m/%d %H:%M:%S")


# ---- merchant, copies, slip references ---------------------------------------


class CopyKind(StrEnum):
    MERCHANT = "merchant"
    CARDHOLDER = "cardholder"
    BANK = "bank"

    @property
    def key(self) -> str:
        return f"copy_{self.value}"

    @property
    def signed(self) -> bool:
        """The copies the acceptance side keeps as proof carry the signature; the cardholder's
        does not (as on the 3-part CUP slip, where the bank copy was the carbon of the signed one)."""
        return self is not CopyKind.CARDHOLDER


def copies_for(count: int) -> tuple[CopyKind, ...]:
    """The copies printer.copies asks for: 1 merchant, 2 + cardholder, 3 + bank."""
    order = (CopyKind.MERCHANT, CopyKind.CARDHOLDER, CopyKind.BANK)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(order):
        raise ValueError(f"printer.copies must be 1, 2 or 3, not {count!r}")
    return order[:count]


@dataclass(frozen=True)
class MerchantInfo:
    name: str
    mid: str
    tid: str
    header: tuple[str, ...] = ()
    footer: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, data: Mapping[str, Mapping[str, Any]]) -> MerchantInfo:
        """From the whole settings dict (its "merchant" group); receipt_header and
        receipt_footer may hold several lines separated by newlines."""
        group = data.get("merchant") if isinstance(data, Mapping) else None
        if not isinstance(group, Mapping):
            raise ValueError("the settings have no merchant group")
        values: dict[str, str] = {}
        for name in ("name", "mid", "tid", "receipt_header", "receipt_footer"):
            value = group.get(name, "")
            if not isinstance(value, str):
                raise ValueError(f"merchant.{name} must be text, not {type(value).__name__}")
            values[name] = value
        return cls(name=values["name"].strip(), mid=values["mid"].strip(), tid=values["tid"].strip(),
                   header=_clean_lines(values["receipt_header"]),
                   footer=_clean_lines(values["receipt_footer"]))


@dataclass(frozen=True)
class SlipRef:
    """What identifies one printed copy, without sensitive data: enough for a VOID slip to name it.

    title_key is a receipt-catalog key: "kind_" + the TxnKind for receipts, or e.g.
    "settlement_report" / "test_page". amount is in fen as the printout showed it (negative for
    voids and refunds). The PAN is masked again here, so no caller can put a full one on paper.
    """

    title_key: str
    copy: CopyKind | None = None
    invoice: str | None = None  # the voucher number
    batch: str | None = None
    amount: int | None = None
    currency: str | None = None
    pan_masked: str | None = field(default=None)
    local_date: str | None = None
    local_time: str | None = None
    year: int | None = None
    reprint: bool = False

    def __post_init__(self) -> None:
        if not texts.has(self.title_key):
            raise ValueError(f"no receipt text for the slip title {self.title_key!r}; "
                             "add it to firmware/printing/texts.py")
        if self.copy is not None:  # accepts the copy as any str enum or text with our values
            object.__setattr__(self, "copy", CopyKind(self.copy))
        if self.pan_masked is not None:
            object.__setattr__(self, "pan_masked", mask_pan(self.pan_masked))

    @classmethod
    def from_record(cls, record: TxnRecord, copy: CopyKind, *, reprint: bool = False) -> SlipRef:
        return cls(title_key=f"kind_{record.kind.value}", copy=copy,
                   invoice=record.invoice, batch=record.batch,
                   amount=_signed_amount(record) if record.kind in MONEY_KINDS else None,
                   currency=record.currency, pan_masked=record.pan_masked,
                   local_date=record.local_date, local_time=record.local_time,
                   year=_year_of(record.local_date, record.created_at), reprint=reprint)


def _signed_amount(record: TxnRecord) -> int:
    return -record.amount if record.kind in NEGATIVE_KINDS else record.amount


# ---- the document builder ----------------------------------------------------


def _check_columns(columns: int) -> None:
    if isinstance(columns, bool) or not isinstance(columns, int) or not MIN_COLUMNS <= columns <= MAX_COLUMNS:
        raise ValueError(f"columns must be {MIN_COLUMNS} to {MAX_COLUMNS} (32 for 58 mm paper, "
                         f"48 for 80 mm), not {columns!r}")


class _Slip:
    """Collects blocks for one copy, fitting every line to the paper as it goes."""

    def __init__(self, lang: str, columns: int) -> None:
        texts.label("amount", lang)  # rejects an unknown language before anything is laid out
        _check_columns(columns)
        self.lang = lang
        self.columns = columns
        self.blocks: list[Block] = []

    @property
    def zh(self) -> bool:
        return self.lang == "zh_CN"

    def label(self, key: str) -> str:
        """A field label: "商户编号(MERCHANT NO.):" in Chinese layouts, "MERCHANT NO.:" in English."""
        en, zh = texts.label(key, "en"), texts.label(key, "zh_CN")
        if not self.zh or zh == en:  # AID, TC, TVR: the same in both languages, printed once
            return f"{en}:"
        return f"{zh}({en}):"

    def words(self, key: str) -> str:
        """A value or mark: "消费 SALE" in Chinese layouts, "SALE" in English."""
        en = texts.label(key, "en")
        return f"{texts.label(key, 'zh_CN')} {en}" if self.zh else en

    def line(self, text: str, align: Align = Align.LEFT, *, bold: bool = False) -> None:
        for part in wrap(text, self.columns):
            self.blocks.append(TextLine(part, align=align, bold=bold))

    def big(self, text: str, align: Align = Align.CENTER, *, bold: bool = True) -> None:
        for part in wrap(text, self.columns // 2):
            self.blocks.append(TextLine(part, align=align, bold=bold, double=True))

    def label_lines(self, key: str) -> list[str]:
        """The label on as few lines as it takes; a bilingual label too long for one line
        breaks between its Chinese and its English, not inside the English."""
        label = self.label(key)
        if text_cells(label) <= self.columns or not self.zh:
            return wrap(label, self.columns)
        en = texts.label(key, "en")
        return wrap(texts.label(key, "zh_CN"), self.columns) + wrap(f"({en}):", self.columns)

    def sentence(self, key: str, align: Align = Align.LEFT, *, bold: bool = False) -> None:
        """A sentence: Chinese layouts print it in Chinese, then in English on its own lines."""
        if self.zh:
            self.line(texts.label(key, "zh_CN"), align, bold=bold)
        self.line(texts.label(key, "en"), align, bold=bold)

    def field(self, key: str, value: str | None, *, bold: bool = False) -> None:
        """Label left and value right on one line if both fit, else the value right-aligned
        under the label; nothing at all when the value is missing."""
        if value is None or not value.strip():
            return
        label = self.label(key)
        if text_cells(label) + 1 + text_cells(value) <= self.columns:
            lines = two_columns(label, value, self.columns)
        else:
            lines = self.label_lines(key) + two_columns("", value, self.columns)
        for part in lines:
            self.blocks.append(TextLine(part, bold=bold))

    def rule(self, char: str = "-") -> None:
        self.blocks.append(TextLine(char * self.columns))

    def feed(self, lines: int) -> None:
        self.blocks.append(Feed(lines))

    def amount(self, fen: int, currency: str) -> None:
        """The amount double size when it fits half the columns (it always does at 48), else bold."""
        text = _money(fen, currency)
        if text_cells(text) <= self.columns // 2:
            self.blocks.append(TextLine(text, align=Align.RIGHT, bold=True, double=True))
        else:
            self.line(text, Align.RIGHT, bold=True)

    def merchant_header(self, merchant: MerchantInfo, logo: Image | None = None) -> None:
        if logo is not None:
            self.blocks.append(logo)
        name = _clean(merchant.name).strip()
        if name:
            self.big(name)
        for header in merchant.header:
            self.line(_clean(header), Align.CENTER)

    def finish(self, title: str) -> Document:
        self.feed(FEED_BEFORE_CUT)
        self.blocks.append(Cut())
        return Document(blocks=tuple(self.blocks), title=title)


def _check_logo(logo: Image, columns: int) -> None:
    if len(logo.gray) != logo.width * logo.height:
        raise ValueError(f"logo data is {len(logo.gray)} bytes; a {logo.width}x{logo.height} gray "
                         f"image needs {logo.width * logo.height}")
    if logo.width > columns * DOTS_PER_COLUMN:
        raise ValueError(f"logo is {logo.width} dots wide; paper of {columns} columns prints at most "
                         f"{columns * DOTS_PER_COLUMN}")


def _entry_letter(entry_mode: str) -> str:
    key = f"entry_{entry_mode}"
    return texts.label(key, "en") if texts.has(key) else ""


def _card_org(slip: _Slip, code: str | None) -> str | None:
    if not code:
        return None
    code = _clean(code).strip().upper()
    return slip.words(f"org_{code}") if texts.has(f"org_{code}") else code


# ---- receipts ----------------------------------------------------------------


def signature_required(record: TxnRecord, no_signature_limit: int) -> bool:
    """免签: a money-moving transaction needs the cardholder's signature unless the PIN was
    entered and the amount is at most the configured limit (0 = always sign)."""
    if record.kind not in MONEY_KINDS:
        return False
    return not (no_signature_limit > 0 and record.pin_entered and record.amount <= no_signature_limit)


def receipt(record: TxnRecord, copy: CopyKind, merchant: MerchantInfo, *, lang: str, columns: int,
            reprint: bool = False, printed_at: datetime | None = None, logo: Image | None = None,
            no_signature_limit: int = 0) -> Document:
    """One copy of the 签购单 of an approved (or stored refund advice) journal record.

    A reprint carries "REPRINT / 重打印" at the top and again by the amount, so even a torn
    half cannot pass for the original; printed_at is printed on reprints only.
    """
    copy = CopyKind(copy)
    if record.state not in RECEIPT_STATES:
        raise ValueError(f"no receipt for a {record.state.value} transaction: nothing was approved")
    if isinstance(no_signature_limit, bool) or not isinstance(no_signature_limit, int) \
            or no_signature_limit < 0:
        raise ValueError(f"the no-signature limit must be a whole number of fen >= 0, "
                         f"not {no_signature_limit!r}")
    slip = _Slip(lang, columns)
    if logo is not None:
        _check_logo(logo, columns)
    year = _year_of(record.local_date, record.created_at)

    slip.merchant_header(merchant, logo)
    if reprint:
        slip.big(slip.words("reprint"))
    slip.line(slip.words("slip_title"), Align.CENTER)
    slip.line(slip.words(copy.key), Align.CENTER, bold=True)
    slip.rule()
    slip.field("merchant_no", _clean(merchant.mid))
    slip.field("terminal_no", _clean(merchant.tid))
    slip.field("operator_no", _clean(record.operator))
    slip.rule()

    letter = _entry_letter(record.entry_mode)
    card = mask_pan(_clean(record.pan_masked)) + (f" /{letter}" if letter else "")
    slip.field("card_no", card, bold=True)
    slip.field("card_org", _card_org(slip, record.card_org))
    # What CUP slips print beside the card: the banks (field 44 of the reply) and the expiry,
    # masked (the journal keeps only the masked form); absent ones print nothing.
    slip.field("issuer", _clean(record.issuer_id or ""))
    slip.field("acquirer", _clean(record.acquirer_id or ""))
    slip.field("exp_date", _clean(record.expiry_shown or ""))
    slip.field("txn_type", slip.words(f"kind_{record.kind.value}"), bold=True)
    slip.field("batch_no", _clean(record.batch))
    slip.field("voucher_no", _clean(record.invoice))  # the merchant's number; the STAN is wire-only
    slip.field("auth_no", _clean(record.auth_code or ""))
    slip.field("ref_no", _clean(record.rrn or ""))
    slip.field("date_time", _txn_datetime(record.local_date, record.local_time, year))
    if record.kind in ORIGINAL_KINDS:
        slip.field("orig_batch", _clean(record.orig_batch or ""))
        slip.field("orig_voucher", _clean(record.orig_invoice or ""))
        slip.field("orig_ref", _clean(record.orig_rrn or ""))
        slip.field("orig_auth", _clean(record.orig_auth or ""))
        slip.field("orig_date", _month_day(record.orig_date))

    if record.kind in MONEY_KINDS:
        slip.line(slip.label("amount"))
        slip.amount(_signed_amount(record), record.currency)
    if reprint:
        slip.line(f"*** {slip.words('reprint')} ***", Align.CENTER, bold=True)
    slip.field("reference", _clean(record.reference or ""))
    if reprint and printed_at is not None:
        slip.field("print_time", _printed_at(printed_at))
    _chip_lines(slip, record)
    slip.rule()

    if copy.signed and record.kind in MONEY_KINDS:
        if signature_required(record, no_signature_limit):
            for part in slip.label_lines("signature"):
                slip.line(part)
            slip.feed(SIGNATURE_SPACE)
            slip.rule()
            slip.sentence("acknowledge")
        else:
            slip.sentence("no_signature")
    for footer in merchant.footer:
        slip.line(_clean(footer), Align.CENTER)

    title = f"{record.kind.value} receipt {record.invoice} {copy.value} copy"
    return slip.finish(_clean(title + (" reprint" if reprint else "")))


def _chip_lines(slip: _Slip, record: TxnRecord) -> None:
    """What a CUP chip slip prints: the application label and AID, the card's cryptogram (TC on
    an approval) and the TVR, TSI and ATC an issuer's dispute desk asks for."""
    chip = chip_summary(record.chip_tags)
    if chip is None:
        return
    slip.field("app_label", _clean(chip.label))
    slip.field("aid", chip.aid)
    if chip.cryptogram_name:
        slip.field(chip.cryptogram_name.lower(), chip.cryptogram)
    slip.field("tvr", chip.tvr)
    slip.field("tsi", chip.tsi)
    slip.field("atc", chip.atc)


# ---- void slip ---------------------------------------------------------------


def void_slip(ref: SlipRef, merchant: MerchantInfo, *, lang: str, columns: int,
              printed_at: datetime) -> Document:
    """The "VOID / 作废" slip printed after a copy whose print job was cancelled part way:
    it names the printout it voids and says the money is not affected."""
    slip = _Slip(lang, columns)
    slip.merchant_header(merchant)
    slip.big(slip.words("void_slip"))
    slip.sentence("void_slip_voids", Align.CENTER, bold=True)
    slip.rule()
    slip.field("terminal_no", _clean(merchant.tid))
    slip.field("printout", slip.words(ref.title_key), bold=True)
    if ref.copy is not None:
        slip.field("copy", slip.words(ref.copy.key))
    if ref.reprint:
        slip.line(slip.words("reprint"), Align.RIGHT)
    if ref.pan_masked:
        slip.field("card_no", mask_pan(_clean(ref.pan_masked)))
    slip.field("batch_no", _clean(ref.batch or ""))
    slip.field("voucher_no", _clean(ref.invoice or ""))
    if ref.local_date or ref.local_time:
        slip.field("date_time", _txn_datetime(ref.local_date, ref.local_time, ref.year))
    if ref.amount is not None:
        slip.line(slip.label("amount"))
        slip.line(_money(ref.amount, ref.currency or "156"), Align.RIGHT, bold=True)
    slip.rule()
    slip.sentence("void_slip_reason", Align.CENTER)
    slip.sentence("void_slip_money", Align.CENTER, bold=True)
    slip.field("print_time", _printed_at(printed_at))
    slip.line(f"*** {slip.words('void_slip')} ***", Align.CENTER, bold=True)
    title = f"void slip for {texts.label(ref.title_key, 'en').lower()}"
    if ref.invoice:
        title += f" {ref.invoice}"
    return slip.finish(_clean(title))


# ---- a stored refund the host declined -----------------------------------------


def refund_declined_slip(record: TxnRecord, merchant: MerchantInfo, *, lang: str, columns: int,
                         printed_at: datetime, answer: str) -> Document:
    """The slip for a refund the till was told "stored" and the host then declined: it says the
    refund was not made, names it (card, voucher no., original, amount) and the host's answer."""
    if record.kind is not TxnKind.REFUND or record.state is not TxnState.DECLINED:
        raise ValueError(f"no refund-declined slip for a {record.state.value} {record.kind.value}")
    slip = _Slip(lang, columns)
    year = _year_of(record.local_date, record.created_at)
    slip.merchant_header(merchant)
    slip.big(slip.words("refund_declined"))
    slip.sentence("refund_declined_not_made", Align.CENTER, bold=True)
    slip.rule()
    slip.field("merchant_no", _clean(merchant.mid))
    slip.field("terminal_no", _clean(merchant.tid))
    slip.field("card_no", mask_pan(_clean(record.pan_masked)), bold=True)
    slip.field("txn_type", slip.words("kind_refund"))
    slip.field("batch_no", _clean(record.batch))
    slip.field("voucher_no", _clean(record.invoice))
    slip.field("date_time", _txn_datetime(record.local_date, record.local_time, year))
    slip.field("orig_ref", _clean(record.orig_rrn or ""))
    slip.field("orig_date", _month_day(record.orig_date))
    slip.line(slip.label("amount"))
    slip.line(_money(record.amount, record.currency), Align.RIGHT, bold=True)
    slip.field("host_answer", _clean(answer))
    slip.rule()
    slip.sentence("refund_declined_stored")
    slip.sentence("refund_declined_todo", bold=True)
    slip.field("print_time", _printed_at(printed_at))
    return slip.finish(_clean(f"refund declined slip {record.invoice}"))


# ---- printer test page -------------------------------------------------------


def _ruler(columns: int) -> tuple[str, str]:
    tens = "".join(str((i + 1) // 10 % 10) if (i + 1) % 10 == 0 else " " for i in range(columns))
    units = "".join(str((i + 1) % 10) for i in range(columns))
    return tens, units


def test_slip(merchant: MerchantInfo, *, lang: str, columns: int, firmware_version: str,
              printed_at: datetime) -> Document:
    """The printer test page: identity, a ruler of the column width, the character set in both
    languages, and each text style, so a look at the paper shows what the printer can do."""
    slip = _Slip(lang, columns)
    slip.merchant_header(merchant)
    slip.big(slip.words("test_page"))
    slip.rule()
    slip.field("merchant_name", _clean(merchant.name))
    slip.field("merchant_no", _clean(merchant.mid))
    slip.field("terminal_no", _clean(merchant.tid))
    slip.field("firmware_version", _clean(firmware_version))
    slip.field("columns", str(columns))
    slip.field("print_time", _printed_at(printed_at))
    slip.rule()
    slip.line(slip.label("ruler"))
    for row in _ruler(columns):
        slip.blocks.append(TextLine(row))
    cjk_row = texts.label("sample_cjk_row", "zh_CN")
    slip.blocks.append(TextLine(fit((cjk_row * columns), columns)))  # a full line of wide characters
    slip.line(slip.label("charset"))
    slip.line("".join(chr(code) for code in range(0x21, 0x7F)))
    slip.line(texts.label("sample_latin", "en"))
    slip.line(texts.label("sample_cjk", "zh_CN"))
    slip.rule()
    slip.line(slip.words("style_normal"))
    slip.line(slip.words("style_bold"), bold=True)
    slip.big(slip.words("style_double"), Align.LEFT, bold=False)
    slip.big(slip.words("style_bold"), Align.LEFT, bold=True)
    slip.line(slip.words("align_left"), Align.LEFT)
    slip.line(slip.words("align_center"), Align.CENTER)
    slip.line(slip.words("align_right"), Align.RIGHT)
    slip.rule("=")
    slip.line(slip.words("test_end"), Align.CENTER, bold=True)
    return slip.finish("printer test page")


test_slip.__test__ = False  # type: ignore[attr-defined]  # a slip, not a pytest test


# ---- a text picture of a document --------------------------------------------


def _spread(text: str) -> str:
    """Double-width text drawn in single cells: each character followed by its own width in spaces."""
    return "".join(ch + " " * char_cells(ch) for ch in text).rstrip()


def plain_text(doc: Document, columns: int) -> str:
    """The document as plain text (for previews, the e-receipt and golden tests): double-size
    lines spread over twice the cells, feeds as blank lines, images as [image WxH], cut as ~~~."""
    out: list[str] = []
    for block in doc.blocks:
        if isinstance(block, TextLine):
            text = _spread(block.text) if block.double else block.text
            pad = max(columns - text_cells(text), 0)
            if block.align is Align.CENTER:
                text = " " * (pad // 2) + text
            elif block.align is Align.RIGHT:
                text = " " * pad + text
            out.append(text.rstrip())
        elif isinstance(block, Feed):
            out.extend([""] * block.lines)
        elif isinstance(block, Image):
            out.append(f"[image {block.width}x{block.height}]".center(columns).rstrip())
        elif isinstance(block, Cut):
            out.append("~" * columns)
    return "\n".join(out)

