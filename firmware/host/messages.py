"""Message builders: the only place that knows which fields each CUP transaction carries.

Pure functions from typed parameters to Message (MTI + field dict); no I/O, no
bytes. Field 64 is never added here: the codec fills it from a MAC function. Tracks are
clear here; with_tracks_encrypted() marks a request whose tracks the codec encrypts.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field
from enum import StrEnum
from types import ModuleType
from typing import Final

from .errors import LocalProtocolError, RemoteProtocolError
from .framing import DEFAULT_TPDU, Header, swap_tpdu
from .spec import SENSITIVE_FIELDS, TRACK_FIELDS

__all__ = [
    "DEFAULT_FALLBACK_ENTRY_CODE",
    "ECHOED_FIELDS",
    "ENTRY_MODES",
    "FALLBACK_ENTRY_CODES",
    "REVERSAL_55_TAGS",
    "REVERSAL_REASONS",
    "SECURITY_CONTROL",
    "WIRE",
    "CardInput",
    "ChipUploadItem",
    "FinancialParams",
    "Message",
    "ScriptAdviceParams",
    "SideTotals",
    "Terminal",
    "TxnKind",
    "TxnWire",
    "UploadItem",
    "batch_upload_end",
    "batch_upload_request",
    "chip_upload_request",
    "deregister_request",
    "echo_request",
    "financial_request",
    "icc_hex",
    "icc_subset",
    "loggable",
    "mask_pan",
    "parse_settlement_field48",
    "pos_entry_for",
    "pyemv_tlv",
    "reply_needs_mac",
    "response_for",
    "reversal_request",
    "script_advice",
    "security_control",
    "settlement_field48",
    "settlement_request",
    "signoff_request",
    "signon_request",
    "tracks_encrypted",
    "with_tracks_encrypted",
]


class TxnKind(StrEnum):
    """Transaction kinds (a str subclass: values go into the journal as they are)."""

    SALE = "sale"
    VOID = "void"
    REFUND = "refund"
    BALANCE = "balance"
    PREAUTH = "preauth"
    PREAUTH_VOID = "preauth_void"
    COMPLETION = "completion"
    COMPLETION_VOID = "completion_void"


@dataclass(frozen=True)
class TxnWire:
    """How one transaction kind looks on the wire (domain doc section 3)."""

    mti: str
    proc: str  # field 3
    cond: str  # field 25
    type_code: str  # 60.1
    reversible: bool  # unknown outcome must be reversed
    advice: bool  # store-and-forward, never reversed
    sends_orig_rrn: bool  # field 37
    sends_orig_auth: bool  # field 38
    orig_has_date: bool  # field 61 ends with the original MMDD
    has_amount: bool  # field 4

    @property
    def sends_orig_ref(self) -> bool:
        """Field 61 (original batch + trace) goes with every kind that refers to an original."""
        return self.sends_orig_rrn or self.sends_orig_auth


WIRE: Final[dict[TxnKind, TxnWire]] = {
    TxnKind.SALE: TxnWire(
        mti="0200", proc="000000", cond="00", type_code="22", reversible=True, advice=False,
        sends_orig_rrn=False, sends_orig_auth=False, orig_has_date=False, has_amount=True),
    TxnKind.VOID: TxnWire(
        mti="0200", proc="200000", cond="00", type_code="23", reversible=True, advice=False,
        sends_orig_rrn=True, sends_orig_auth=True, orig_has_date=False, has_amount=True),
    TxnKind.REFUND: TxnWire(
        mti="0220", proc="200000", cond="00", type_code="25", reversible=False, advice=True,
        sends_orig_rrn=True, sends_orig_auth=False, orig_has_date=True, has_amount=True),
    TxnKind.BALANCE: TxnWire(
        mti="0200", proc="310000", cond="00", type_code="01", reversible=False, advice=False,
        sends_orig_rrn=False, sends_orig_auth=False, orig_has_date=False, has_amount=False),
    TxnKind.PREAUTH: TxnWire(
        mti="0100", proc="030000", cond="06", type_code="10", reversible=True, advice=False,
        sends_orig_rrn=False, sends_orig_auth=False, orig_has_date=False, has_amount=True),
    TxnKind.PREAUTH_VOID: TxnWire(
        mti="0100", proc="200000", cond="06", type_code="11", reversible=True, advice=False,
        sends_orig_rrn=False, sends_orig_auth=True, orig_has_date=True, has_amount=True),
    TxnKind.COMPLETION: TxnWire(
        mti="0200", proc="000000", cond="06", type_code="20", reversible=True, advice=False,
        sends_orig_rrn=False, sends_orig_auth=True, orig_has_date=True, has_amount=True),
    # Pre-auth family: 61 ends with the original's date (section 4), like the pre-auth void.
    TxnKind.COMPLETION_VOID: TxnWire(
        mti="0200", proc="200000", cond="06", type_code="21", reversible=True, advice=False,
        sends_orig_rrn=True, sends_orig_auth=True, orig_has_date=True, has_amount=True),
}

REVERSAL_REASONS: Final = frozenset({"06", "98", "A0"})
ENTRY_MODES: Final[dict[str, str]] = {"keyed": "01", "swipe": "02", "chip": "05",
                                      "contactless": "07", "fallback": "80"}
# Field 22 of a fallback swipe (a chip card whose chip could not be read): the domain doc's
# 80x is the default; some acquirers want 02x (a plain swipe) and learn of the fallback from
# 60.5 = 2 alone. Which one is per acquirer (FinancialParams.fallback_entry_code).
FALLBACK_ENTRY_CODES: Final = ("80", "02")
DEFAULT_FALLBACK_ENTRY_CODE: Final = "80"
# What a chip reversal's 55 keeps of the chip data when the caller gives none of its own
# (docs/dialect.md, "Chip"): TVR, issuer application data, IFD serial, script results and
# the ATC that names the cryptogram being cancelled.
REVERSAL_55_TAGS: Final = ("95", "9F10", "9F1E", "DF31", "9F36")
# Field 55 is LLLVAR binary of at most 255 bytes (spec.py).
MAX_ICC_DATA: Final = 255
# 60.4 (read capability) + 60.5 (chip condition): a terminal with a contact chip slot says
# "5" on every financial message, then "0" (normal) or "2" (a fallback swipe after the chip
# could not be read). A terminal without a chip slot sends neither (docs/dialect.md).
CHIP_NORMAL: Final = "50"
CHIP_FALLBACK: Final = "52"
# Field 53: PIN format 2 (ANSI X9.8 with PAN), double-length key, tracks not encrypted.
SECURITY_CONTROL: Final = "2600000000000000"
# Its third digit: 1 = fields 35/36 are encrypted under the TDK (docs/dialect.md, "Track
# encryption"), 0 = clear.
_TRACKS_ENCRYPTED_AT: Final = 2
PIN_CAPTURE: Final = "12"  # field 26: the PIN pad takes up to 12 digits
# Fields a CUP host copies from request to reply (response_for, simulator use).
ECHOED_FIELDS: Final = ("2", "3", "4", "11", "14", "25", "41", "42", "49", "60", "61")
# What a 0400 copies from its original (section 5); 38 is overwritten by the reply's own
# auth code when one came back.
_REVERSAL_KEEPS: Final = ("3", "4", "11", "22", "23", "25", "38", "41", "42", "49", "55", "60",
                          "61")
# The issuer-script result advice (Aviapay ScriptTrans.java / trans.properties: MTI 0620,
# 60.1 = 00, 60.3 = 951); its reply is 0630.
SCRIPT_ADVICE_MTI: Final = "0620"
SCRIPT_ADVICE_NETWORK: Final = "951"
# Batch upload of one chip transaction (0320 with 55; Aviapay trans.properties UPSEND: 203).
CHIP_UPLOAD_NETWORK: Final = "203"
_DIGITS: Final = frozenset("0123456789")


def mask_pan(pan: str) -> str:
    """First 6 and last 4 digits, '*' between; shorter PANs show at most the last 4."""
    n = len(pan)
    if n > 10:
        return pan[:6] + "*" * (n - 10) + pan[-4:]
    if n > 4:
        return "*" * (n - 4) + pan[-4:]
    return "*" * n


def loggable(fields: dict[str, str]) -> dict[str, str]:
    """A copy of `fields` safe for logs: PAN masked, tracks, PIN, ICC data and keys hidden."""
    out: dict[str, str] = {}
    for key, value in fields.items():
        if key == "2":
            out[key] = mask_pan(value)
        elif key in SENSITIVE_FIELDS:
            out[key] = f"<{len(value)} chars hidden>"
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Message:
    """One ISO 8583 message: MTI and fields as strings (binary fields as uppercase hex)."""

    mti: str
    fields: dict[str, str]
    header: Header = field(default_factory=Header)
    tpdu: bytes = DEFAULT_TPDU

    def __repr__(self) -> str:
        # Messages end up in logs and tracebacks: never show card data in clear.
        return (f"Message(mti={self.mti!r}, fields={loggable(self.fields)!r}, "
                f"header={self.header!r}, tpdu={self.tpdu.hex()!r})")


@dataclass(frozen=True)
class CardInput:
    """What the card reader produced; the PIN block is already encrypted under the PIK."""

    entry_mode: str  # "swipe" | "chip" | "keyed" | "contactless"
    pan: str
    expiry: str | None = None  # YYMM
    track2: str | None = None
    track3: str | None = None
    card_seq: str | None = None
    icc_data: str | None = None  # hex
    pin_block: bytes | None = None

    def __repr__(self) -> str:
        icc = f"<{len(self.icc_data) // 2} bytes>" if self.icc_data else None
        return (f"CardInput(entry_mode={self.entry_mode!r}, pan={mask_pan(self.pan)!r}, "
                f"track2={'<set>' if self.track2 else None}, "
                f"track3={'<set>' if self.track3 else None}, card_seq={self.card_seq!r}, "
                f"icc_data={icc}, pin_block={'<set>' if self.pin_block else None})")

    __str__ = __repr__


@dataclass(frozen=True)
class Terminal:
    tid: str  # field 41, 8 characters
    mid: str  # field 42, 15 characters

    def __post_init__(self) -> None:
        for name, value, width in (("terminal id", self.tid, 8), ("merchant id", self.mid, 15)):
            if len(value) != width or not value.isascii() or not value.isprintable():
                raise LocalProtocolError(f"{name} must be {width} printable ASCII characters, "
                                         f"got {value!r}")


@dataclass(frozen=True)
class FinancialParams:
    """Everything a financial request (and its reversal) is built from.

    The first five fields may be given by position; the rest by keyword only.
    """

    kind: TxnKind
    stan: str
    batch: str
    term: Terminal
    amount: int  # fen
    _: KW_ONLY
    card: CardInput
    currency: str = "156"
    orig_rrn: str | None = None
    orig_auth: str | None = None
    orig_batch: str | None = None
    orig_stan: str | None = None
    orig_date: str | None = None  # MMDD
    orig_card_org: str | None = None  # field 63 of a refund: the original's card organisation
    # How the card was read, as the original request carried it (field 22 and 60.4 + 60.5).
    # None: derived from `card`. A message rebuilt from the journal (a reversal, a resent
    # advice) passes the values the journal kept, since the card itself is gone by then.
    pos_entry: str | None = None
    read_cap: str | None = None
    chip_capable: bool = False  # the terminal has a contact chip slot (60.4)
    fallback_entry_code: str = DEFAULT_FALLBACK_ENTRY_CODE  # field 22 of a fallback: "80"/"02"


@dataclass(frozen=True)
class UploadItem:
    """One transaction in a batch-upload 0320."""

    foreign: bool
    trace: str
    pan: str
    amount: int


@dataclass(frozen=True)
class SideTotals:
    """Gross totals of one side (domestic or foreign cards) for the 0500."""

    debit_amount: int
    debit_count: int
    credit_amount: int
    credit_count: int


# -- validation helpers: every builder input is checked here, so a LocalProtocolError
#    names the field instead of pyiso8583 failing later with a byte count.

def _digits(what: str, value: object, width: int | None = None, *, secret: bool = False) -> str:
    if not isinstance(value, str) or not value or not set(value) <= _DIGITS:
        # Card data must not reach an error message (which may be logged).
        shown = "<hidden>" if secret else repr(value)
        raise LocalProtocolError(f"{what} must be digits, got {shown}")
    if width is not None and len(value) != width:
        raise LocalProtocolError(f"{what} must be {width} digits, got {len(value)}")
    return value


def _number(what: str, value: int, width: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 10**width:
        raise LocalProtocolError(f"{what} must be an integer 0..{10**width - 1}, got {value!r}")
    return f"{value:0{width}d}"


def _pan(pan: str) -> str:
    _digits("PAN (field 2)", pan, secret=True)
    if not 12 <= len(pan) <= 19:
        raise LocalProtocolError(f"PAN (field 2) must be 12-19 digits, got {len(pan)}")
    return pan


def _operator(operator: str) -> str:
    # Field 63 carries a 3-character operator code; shorter codes are space padded.
    if not 1 <= len(operator) <= 3 or not operator.isascii() or not operator.isprintable():
        raise LocalProtocolError(f"operator code (field 63) must be 1-3 characters, "
                                 f"got {operator!r}")
    return operator.ljust(3)


def _card_org(org: str) -> str:
    # The card organisation the original's reply named (CUP, VIS, MCC ...), 3 characters.
    if not 1 <= len(org) <= 3 or not org.isascii() or not org.isalnum():
        raise LocalProtocolError(f"card organisation (field 63) must be 1-3 letters or digits, "
                                 f"got {org!r}")
    return org.ljust(3)


def _currency(currency: str) -> str:
    return _digits("currency (field 49)", currency, 3)


def _terminal_fields(term: Terminal) -> dict[str, str]:
    return {"41": term.tid, "42": term.mid}


def pos_entry_for(entry_mode: str, pin_entered: bool,
                  fallback_code: str = DEFAULT_FALLBACK_ENTRY_CODE) -> str:
    """Field 22: how the card was read (ENTRY_MODES; a fallback swipe says `fallback_code`,
    "80" or "02" per acquirer), then 1 = PIN entered, 2 = no PIN."""
    if entry_mode == "fallback":
        if fallback_code not in FALLBACK_ENTRY_CODES:
            raise LocalProtocolError(f"fallback entry code must be one of "
                                     f"{FALLBACK_ENTRY_CODES}, got {fallback_code!r}")
        head = fallback_code
    else:
        head = ENTRY_MODES[entry_mode]
    return head + ("1" if pin_entered else "2")


def pyemv_tlv() -> ModuleType:
    """pyemv.tlv, imported at the first field 55 or chip table: importing pyemv loads its
    cryptogram and MAC modules and with them cryptography (megabytes resident), which the idle
    terminal does not need."""
    from pyemv import tlv

    return tlv


def icc_hex(data: bytes | str, what: str = "ICC data (field 55)") -> str:
    """Field 55's value as the Message carries it (uppercase hex) from bytes or hex; it must be
    well-formed BER-TLV of at most 255 bytes, so a broken kernel output never goes out."""
    if isinstance(data, str):
        try:
            raw = bytes.fromhex(data)
        except ValueError:
            raise LocalProtocolError(f"{what} must be hex") from None
    elif isinstance(data, bytes | bytearray):
        raw = bytes(data)
    else:
        raise LocalProtocolError(f"{what} must be bytes or hex, got {type(data).__name__}")
    if not raw:
        raise LocalProtocolError(f"{what} is empty")
    if len(raw) > MAX_ICC_DATA:
        raise LocalProtocolError(f"{what} is {len(raw)} bytes; the field holds {MAX_ICC_DATA}")
    tlv = pyemv_tlv()
    try:
        tlv.decode(raw, flatten=True)
    except (tlv.DecodeError, ValueError) as exc:
        # Only the decoder's words, never the bytes: they may be card data.
        raise LocalProtocolError(f"{what} is not well-formed TLV ({type(exc).__name__})") from None
    return raw.hex().upper()


def icc_subset(data: bytes | str, tags: tuple[str, ...]) -> str | None:
    """The TLVs of `data` whose tag is in `tags`, in the order of `tags`, as hex (None when
    none is there): what a reversal keeps of the original request's 55."""
    tlv = pyemv_tlv()
    decoded = tlv.decode(bytes.fromhex(icc_hex(data)), flatten=True)
    kept = {tag: decoded[tag] for tag in tags if tag in decoded}
    return tlv.encode(kept).hex().upper() if kept else None


def _card_fields(card: CardInput,
                 fallback_code: str = DEFAULT_FALLBACK_ENTRY_CODE) -> dict[str, str]:
    if card.entry_mode not in ENTRY_MODES:
        raise LocalProtocolError(f"unknown entry mode {card.entry_mode!r}; "
                                 f"expected one of {sorted(ENTRY_MODES)}")
    fields: dict[str, str] = {}
    if card.entry_mode in ("swipe", "fallback"):
        if not card.track2:
            raise LocalProtocolError("swiped card needs track 2 (field 35)")
        fields["35"] = card.track2
        if card.track3:
            fields["36"] = card.track3
    else:
        fields["2"] = _pan(card.pan)
        if card.expiry is not None:
            fields["14"] = _digits("expiry (field 14)", card.expiry, 4, secret=True)
    if card.entry_mode in ("chip", "contactless"):
        # Chip cards carry 23 and 35 only when the card has them (5F34, 57 are optional).
        if card.card_seq is not None:
            seq = _digits("card sequence (field 23)", card.card_seq)
            if len(seq) > 3:
                raise LocalProtocolError("card sequence (field 23) must be at most 3 digits")
            fields["23"] = seq.zfill(3)
        if card.track2:
            fields["35"] = card.track2
        if not card.icc_data:
            raise LocalProtocolError("chip transaction needs ICC data (field 55)")
        fields["55"] = icc_hex(card.icc_data)
    if card.pin_block is not None:
        if len(card.pin_block) != 8:
            raise LocalProtocolError("PIN block (field 52) must be 8 bytes")
        fields["26"] = PIN_CAPTURE
        fields["52"] = card.pin_block.hex().upper()
        fields["53"] = SECURITY_CONTROL
    fields["22"] = pos_entry_for(card.entry_mode, card.pin_block is not None, fallback_code)
    return fields


def security_control(pin: bool, tracks: bool) -> str:
    """Field 53: digit 1 the PIN block format (2 = ANSI X9.8 with PAN; 0 when no PIN block
    goes), digit 2 the key length (6 = double), digit 3 whether the tracks are encrypted."""
    return ("2" if pin else "0") + "6" + ("1" if tracks else "0") + "0" * 13


def tracks_encrypted(msg: Message) -> bool:
    """Field 53 says fields 35/36 are encrypted under the TDK."""
    f53 = msg.fields.get("53", "")
    return len(f53) > _TRACKS_ENCRYPTED_AT and f53[_TRACKS_ENCRYPTED_AT] == "1"


def with_tracks_encrypted(msg: Message) -> Message:
    """The request as it goes when the tracks are encrypted: field 53 present with its third
    digit 1 (a swipe without a PIN carries 53 for this alone). Unchanged when the message
    carries no track: there is nothing for 53 to speak of."""
    if not TRACK_FIELDS & msg.fields.keys():
        return msg
    fields = dict(msg.fields)
    fields["53"] = security_control(pin="52" in fields, tracks=True)
    return Message(msg.mti, fields, header=msg.header, tpdu=msg.tpdu)


def _field60(type_code: str, batch: str, network_code: str) -> str:
    return type_code + _digits("batch (60.2)", batch, 6) + network_code


def _read_cap(p: FinancialParams) -> str:
    """60.4 + 60.5 of a financial message: as kept in the journal, else from the card read."""
    if p.read_cap is not None:
        if p.read_cap:  # empty: the original carried neither
            _digits("60.4/60.5", p.read_cap, 2)
        return p.read_cap
    if p.card.entry_mode == "fallback":
        return CHIP_FALLBACK
    if p.card.entry_mode == "chip":
        return CHIP_NORMAL  # a chip read proves the slot, whatever chip_capable says
    return CHIP_NORMAL if p.chip_capable else ""


def financial_request(p: FinancialParams) -> Message:
    """Build the request of a financial transaction (sale, void, refund, ...), without 64."""
    if not isinstance(p.kind, TxnKind):
        raise LocalProtocolError(f"kind must be a TxnKind, got {p.kind!r}")
    if not isinstance(p.card, CardInput):
        raise LocalProtocolError(f"card must be a CardInput, got {type(p.card).__name__}")
    w = WIRE[p.kind]
    fields: dict[str, str] = {
        "3": w.proc,
        "11": _digits("STAN (field 11)", p.stan, 6),
        "25": w.cond,
        **_terminal_fields(p.term),
        "49": _currency(p.currency),
        "60": _field60(w.type_code, p.batch, "000"),
    }
    fields["60"] += _read_cap(p)
    if w.has_amount:
        if isinstance(p.amount, int) and not isinstance(p.amount, bool) and p.amount <= 0:
            raise LocalProtocolError(f"amount must be positive, got {p.amount}")
        fields["4"] = _number("amount (field 4)", p.amount, 12)
    fields.update(_card_fields(p.card, p.fallback_entry_code))
    if p.pos_entry is not None:
        fields["22"] = _digits("entry mode (field 22)", p.pos_entry, 3)
    if w.sends_orig_rrn:
        if not p.orig_rrn or len(p.orig_rrn) != 12:
            raise LocalProtocolError(f"{p.kind.value} needs the original RRN (12 characters)")
        fields["37"] = p.orig_rrn
    if w.sends_orig_auth:
        if not p.orig_auth or len(p.orig_auth) != 6:
            raise LocalProtocolError(f"{p.kind.value} needs the original auth code "
                                     "(6 characters)")
        fields["38"] = p.orig_auth
    if p.kind is TxnKind.REFUND and p.orig_card_org is not None:
        fields["63"] = _card_org(p.orig_card_org)
    if w.sends_orig_ref:
        ref = (_digits("original batch (61.1)", p.orig_batch, 6)
               + _digits("original trace (61.2)", p.orig_stan, 6))
        if w.orig_has_date:
            ref += _digits("original date MMDD (61.3)", p.orig_date, 4)
        fields["61"] = ref
    return Message(w.mti, fields)


def reversal_request(p: FinancialParams, reason: str, auth_code: str | None,
                     icc_data: bytes | str | None = None) -> Message:
    """The 0400 for a financial request whose outcome is unknown (section 5).

    A copy of the original request (built from `p`, whose pos_entry and read_cap carry what
    the original said of the card read) under MTI 0400: 3, 4, 11, 22, 23, 25, 41, 42, 49, 60
    and the PAN in field 2, 61 whenever the original carried it; 39 the reason;
    38 the auth code the reply carried (`auth_code`), else the original's own 38 (voids and
    completions name the authorisation they refer to).

    Chip: 55 is `icc_data` when given (the app passes the reversal's tags: 95, 9F10, 9F1E,
    DF31, and 9F36 when the card declined after a host approval; docs/dialect.md), else the
    REVERSAL_55_TAGS found in the original's 55, else none. A reversal rebuilt from the journal
    has no card, so only `icc_data` can give it a 55.
    """
    if not WIRE[p.kind].reversible:
        raise LocalProtocolError(f"{p.kind.value} is not reversible")
    if reason not in REVERSAL_REASONS:
        raise LocalProtocolError(f"reversal reason (field 39) must be one of "
                                 f"{sorted(REVERSAL_REASONS)}, got {reason!r}")
    orig = financial_request(p)
    fields = {k: orig.fields[k] for k in _REVERSAL_KEEPS if k in orig.fields}
    fields.pop("55", None)
    if icc_data is not None:
        fields["55"] = icc_hex(icc_data, "reversal ICC data (field 55)")
    elif "55" in orig.fields:
        subset = icc_subset(orig.fields["55"], REVERSAL_55_TAGS)
        if subset is not None:
            fields["55"] = subset
    fields["2"] = _pan(p.card.pan)
    fields["39"] = reason
    if auth_code:
        if len(auth_code) != 6:
            raise LocalProtocolError("auth code (field 38) must be 6 characters")
        fields["38"] = auth_code
    return Message("0400", fields, header=orig.header, tpdu=orig.tpdu)


def signon_request(stan: str, term: Terminal, batch: str, operator: str,
                   with_tdk: bool, ic: bool = False) -> Message:
    """0800 sign-on; 60.3 asks for PIK+MAK (003) or PIK+MAK+TDK (004). `ic`: the header says
    application type 61 (an IC terminal), and the host may then ask it, in the reply's header,
    to load the chip parameters (firmware/app/core/chip_params.py)."""
    return Message("0800", {
        "11": _digits("STAN (field 11)", stan, 6),
        **_terminal_fields(term),
        "60": _field60("00", batch, "004" if with_tdk else "003"),
        "63": _operator(operator),
    }, header=Header(app_type="61" if ic else "60"))


def signoff_request(stan: str, term: Terminal, batch: str) -> Message:
    return Message("0820", {
        "11": _digits("STAN (field 11)", stan, 6),
        **_terminal_fields(term),
        "60": _field60("00", batch, "002"),
    })


def deregister_request(stan: str, term: Terminal, batch: str) -> Message:
    """0820 with 60.3 "009": the terminal deregisters (注销). No MAC: the keys are wiped first.
    The host answers 0830 "00" and marks the terminal unbound (97 to everything after)."""
    return Message("0820", {
        "11": _digits("STAN (field 11)", stan, 6),
        **_terminal_fields(term),
        "60": _field60("00", batch, "009"),
    })


def echo_request(term: Terminal, batch: str) -> Message:
    """0820 echo test; carries no STAN, so its reply is matched on MTI, 41 and 42 only."""
    return Message("0820", {**_terminal_fields(term), "60": _field60("00", batch, "301")})


def settlement_request(stan: str, term: Terminal, batch: str, operator: str, field48: str,
                       currency: str = "156") -> Message:
    _digits("settlement totals (field 48)", field48, 62)
    return Message("0500", {
        "11": _digits("STAN (field 11)", stan, 6),
        **_terminal_fields(term),
        "48": field48,
        "49": _currency(currency),
        "60": _field60("00", batch, "201"),
        "63": _operator(operator),
    })


def batch_upload_request(stan: str, term: Terminal, batch: str,
                         items: list[UploadItem]) -> Message:
    """0320 with up to 8 transaction details in field 48."""
    if not 1 <= len(items) <= 8:
        raise LocalProtocolError(f"batch upload carries 1-8 items, got {len(items)}")
    parts = [f"{len(items):02d}"]
    for item in items:
        pan = _pan(item.pan)
        parts.append(("01" if item.foreign else "00")
                     + _digits("upload trace", item.trace, 6)
                     + pan.rjust(20, "0")
                     + _number("upload amount", item.amount, 12))
    return Message("0320", {
        "11": _digits("STAN (field 11)", stan, 6),
        **_terminal_fields(term),
        "48": "".join(parts),
        "60": _field60("00", batch, "201"),
    })


def batch_upload_end(stan: str, term: Terminal, batch: str, count: int,
                     balanced: bool) -> Message:
    """Closing 0320: 48 = total count uploaded, 60.3 = 207 balanced / 202 unbalanced."""
    return Message("0320", {
        "11": _digits("STAN (field 11)", stan, 6),
        **_terminal_fields(term),
        "48": _number("upload count (field 48)", count, 4),
        "60": _field60("00", batch, "207" if balanced else "202"),
    })


@dataclass(frozen=True)
class ChipUploadItem:
    """One chip transaction for a batch-upload 0320 (one per message, with its 55)."""

    trace: str  # the transaction's own STAN (61.2)
    pan: str
    amount: int
    pos_entry: str  # field 22 as the transaction carried it
    icc_data: bytes | str  # the TC (or ARQC) record's 55
    card_seq: str | None = None  # field 23
    proc: str = "000000"
    currency: str = "156"


def chip_upload_request(stan: str, term: Terminal, batch: str, item: ChipUploadItem) -> Message:
    """0320 for one chip transaction: 2, 3, 4, 11, 22, 23, 41, 42, 49, 55, 60 (00 + batch +
    203) and 61 = batch + the transaction's trace (our choice: the magstripe upload puts the
    trace in 48, a chip upload has 55 instead and names its transaction in 61)."""
    fields = {
        "2": _pan(item.pan),
        "3": _digits("processing code (field 3)", item.proc, 6),
        "4": _number("upload amount (field 4)", item.amount, 12),
        "11": _digits("STAN (field 11)", stan, 6),
        "22": _digits("entry mode (field 22)", item.pos_entry, 3),
        **_terminal_fields(term),
        "49": _currency(item.currency),
        "55": icc_hex(item.icc_data),
        "60": _field60("00", batch, CHIP_UPLOAD_NETWORK),
        "61": _digits("batch (61.1)", batch, 6) + _digits("upload trace (61.2)", item.trace, 6),
    }
    if item.card_seq is not None:
        fields["23"] = _digits("card sequence (field 23)", item.card_seq, 3)
    return Message("0320", fields)


@dataclass(frozen=True)
class ScriptAdviceParams:
    """The issuer-script result advice: what the original carried and the script results.

    Field 61 names the original (batch, trace, date MMDD); 37/38 its RRN and auth code when
    the host gave them. `icc_data` is the advice's 55 (9F33, 95, 9F37, 9F1E, 9F10, 9F26, 9F36,
    82, DF31, 9F1A, 9A: firmware.emv.field55.script_advice_55)."""

    stan: str
    batch: str
    term: Terminal
    pan: str
    amount: int
    pos_entry: str
    icc_data: bytes | str
    orig_batch: str
    orig_stan: str
    orig_date: str  # MMDD
    _: KW_ONLY
    proc: str = "000000"
    currency: str = "156"
    card_seq: str | None = None
    orig_rrn: str | None = None
    orig_auth: str | None = None


def script_advice(p: ScriptAdviceParams) -> Message:
    """0620 issuer-script result advice (60.1 00, 60.3 951), MACed like every advice; the host
    acknowledges with 0630. Sources and our choices: docs/dialect.md, "Chip"."""
    fields = {
        "2": _pan(p.pan),
        "3": _digits("processing code (field 3)", p.proc, 6),
        "4": _number("amount (field 4)", p.amount, 12),
        "11": _digits("STAN (field 11)", p.stan, 6),
        "22": _digits("entry mode (field 22)", p.pos_entry, 3),
        **_terminal_fields(p.term),
        "49": _currency(p.currency),
        "55": icc_hex(p.icc_data, "script advice ICC data (field 55)"),
        "60": _field60("00", p.batch, SCRIPT_ADVICE_NETWORK),
        "61": (_digits("original batch (61.1)", p.orig_batch, 6)
               + _digits("original trace (61.2)", p.orig_stan, 6)
               + _digits("original date MMDD (61.3)", p.orig_date, 4)),
    }
    if p.card_seq is not None:
        fields["23"] = _digits("card sequence (field 23)", p.card_seq, 3)
    if p.orig_rrn is not None:
        if len(p.orig_rrn) != 12:
            raise LocalProtocolError("original RRN (field 37) must be 12 characters")
        fields["37"] = p.orig_rrn
    if p.orig_auth is not None:
        if len(p.orig_auth) != 6:
            raise LocalProtocolError("original auth code (field 38) must be 6 characters")
        fields["38"] = p.orig_auth
    return Message(SCRIPT_ADVICE_MTI, fields)


def _side(t: SideTotals, result: str) -> str:
    return (_number("debit amount", t.debit_amount, 12) + _number("debit count", t.debit_count, 3)
            + _number("credit amount", t.credit_amount, 12)
            + _number("credit count", t.credit_count, 3) + result)


def settlement_field48(domestic: SideTotals, foreign: SideTotals) -> str:
    """The 62 digits of a 0500's field 48 (result digits 0 in the request)."""
    return _side(domestic, "0") + _side(foreign, "0")


def parse_settlement_field48(s: str) -> tuple[SideTotals, str, SideTotals, str]:
    """Split a 0500/0510 field 48 into (domestic, result, foreign, result).

    Result digits: 0 (request), 1 balanced, 2 unbalanced, 3 error.
    """
    if len(s) != 62 or not set(s) <= _DIGITS:
        raise RemoteProtocolError(f"settlement totals must be 62 digits, got {len(s)} "
                                  "characters", field="48")

    def side(part: str) -> tuple[SideTotals, str]:
        totals = SideTotals(int(part[0:12]), int(part[12:15]), int(part[15:27]),
                            int(part[27:30]))
        if part[30] not in "0123":
            raise RemoteProtocolError(f"settlement result digit {part[30]} is not 0-3",
                                      field="48")
        return totals, part[30]

    dom, dom_result = side(s[:31])
    foreign, foreign_result = side(s[31:])
    return dom, dom_result, foreign, foreign_result


# Replies that always carry a MAC (field 64): every acknowledgement of an advice (0230, and
# 0630 for the script result advice) and of a reversal (0410), whatever the code. A
# 0110/0210 carries one when it approves (39 = 00); a decline need not (the host may be
# unable to compute it, e.g. after A0), and is harmless without one: it moves no money.
# Sign-on/off, echo, settlement and batch-upload replies carry none (docs/dialect.md, "MAC").
ALWAYS_MACED_REPLIES: Final = frozenset({"0230", "0410", "0630"})
MACED_WHEN_APPROVED: Final = frozenset({"0110", "0210"})


def reply_needs_mac(reply_mti: str, code: str | None) -> bool:
    """True when the dialect says this reply carries field 64: a reply that lacks it, or whose
    MAC does not verify, is treated as no reply at all."""
    return reply_mti in ALWAYS_MACED_REPLIES or (reply_mti in MACED_WHEN_APPROVED and code == "00")


def response_for(request: Message, code: str, extra: dict[str, str]) -> Message:
    """A reply to `request` as a CUP host builds it (acquirer simulator use).

    MTI + 10, the echoed fields copied, 39 = code, then `extra` (which wins);
    same header, TPDU addresses swapped. No field 64: the encoder adds it.
    """
    mti = request.mti
    if len(mti) != 4 or not set(mti) <= _DIGITS or int(mti[2]) % 2:
        raise LocalProtocolError(f"{mti!r} is not a request MTI")
    fields = {k: request.fields[k] for k in ECHOED_FIELDS if k in request.fields}
    fields["39"] = code
    fields.update(extra)
    fields.pop("64", None)
    return Message(f"{int(mti) + 10:04d}", fields, header=request.header,
                   tpdu=swap_tpdu(request.tpdu))
