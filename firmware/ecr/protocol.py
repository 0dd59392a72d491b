"""The ECR wire protocol: one JSON object per line, requests in, responses out.

Owns the framing (LineFramer), the check of every field of every op (FIELD_CHECKS) and the
reply encoding that cannot fail (encode_response). Parsing is strict and every refusal says in
words what was wrong, because a till integrator reads these messages while wiring a till to us.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from firmware.digits import is_digits
from firmware.engine.validation import valid_mmdd

MAX_LINE = 4096
MAX_AMOUNT = 999_999_999_999  # ISO 8583 field 4 holds 12 digits
MAX_NUMBER = 999_999_999  # a print job or held order number
MAX_ID = 2**53 - 1  # a number id the till's JSON library can hold exactly
MAX_ID_TEXT = 64

# op -> (required fields, optional fields)
OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sale": (("amount",), ("ref", "card", "pin")),
    "void": (("voucher", "password"), ("ref",)),
    "refund": (("amount", "orig_rrn", "orig_date", "password"),
               ("orig_voucher", "orig_batch", "ref", "card", "pin")),
    "balance": ((), ("card", "pin")),
    "preauth": (("amount",), ("ref", "card", "pin")),
    "preauth_void": (("voucher", "password"), ("ref",)),
    "completion": (("voucher", "amount"), ("ref",)),
    "completion_void": (("voucher", "password"), ("ref",)),
    "settle": (("password",), ()),
    "status": ((), ()),
    "last": ((), ()),
    "lookup": (("voucher",), ("batch",)),
    "signon": ((), ()),
    "signoff": ((), ()),
    "echo": ((), ()),
    "cancel": ((), ()),
    "set_password": (("old", "new"), ()),
    "resolve_reversal": (("voucher", "password", "reason"), ("batch",)),
    "present_card": (("card",), ("pin",)),
    "reprint": ((), ("voucher", "batch")),
    "print_jobs": ((), ("all",)),
    "print_cancel": ((), ("job",)),
    "print_confirm": (("job", "print"), ()),
    "print_test": ((), ()),
}
PRINT_OPS = frozenset({"reprint", "print_jobs", "print_cancel", "print_confirm", "print_test"})
FINANCIAL_OPS = frozenset(
    {"sale", "void", "refund", "balance", "preauth", "preauth_void", "completion", "completion_void"}
)
# Fields that named an original by its trace number (STAN) before the voucher number became the
# one number a merchant sees: a till still sending them is told the new name, not "unknown".
RENAMED = {"trace": "voucher", "orig_trace": "orig_voucher"}
CARD_DATA_FIELDS = ("card", "pin")  # only an emulated board takes these over the link


class EcrError(Exception):
    """A request that cannot be carried out as sent; str() is the words to show the till.

    envelope: the request's id and op where they could be read, so the refusal names its request.
    """

    def __init__(self, message: str, envelope: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.envelope = dict(envelope or {})

    def reply(self) -> dict[str, Any]:
        return {**self.envelope, "ok": False, "result": "error", "message": str(self)}


@dataclass(frozen=True)
class EcrRequest:
    op: str
    id: Any = None
    args: dict[str, Any] = field(default_factory=dict)


# -- framing ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Overlong:
    """A line longer than MAX_LINE: refused once; all of it, up to its newline, is discarded."""


class LineFramer:
    """Splits a byte stream (TCP or serial) into request lines.

    After an over-long line everything up to the next newline is discarded, so no tail of it can
    run as a request of its own, however the bytes were cut into reads. Blank lines are skipped.
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | Overlong]:
        self._buffer += data
        out: list[bytes | Overlong] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            if self._discarding:
                self._discarding = False  # the over-long line ends here; it was refused already
            elif len(line) > self.limit:
                out.append(Overlong())
            elif line.strip():
                out.append(line)
        if len(self._buffer) > self.limit:
            if not self._discarding:
                out.append(Overlong())
                self._discarding = True
            self._buffer.clear()
        return out


def overlong_message() -> str:
    return f"request longer than {MAX_LINE} bytes: refused, and discarded up to its end of line"


# -- field checks -------------------------------------------------------------------------------

def _amount(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise EcrError(f"{name} must be a whole number of fen (e.g. 1234 for 12.34), got {_shown(value)}")
    if value <= 0:
        raise EcrError(f"{name} must be greater than zero, got {value}")
    if value > MAX_AMOUNT:
        raise EcrError(f"{name} must be at most {MAX_AMOUNT} fen (12 digits), got {_shown(value)}")
    return value


def _six_digits(name: str, value: Any) -> str:
    """Up to 6 digits, as text or a number; returned padded to 6."""
    text = f"{value:06d}" if isinstance(value, int) and not isinstance(value, bool) else value
    if not is_digits(text, 1, 6):
        raise EcrError(f"{name} must be up to 6 digits, got {_shown(value)}")
    return str(text).zfill(6)


def _mmdd(name: str, value: Any) -> str:
    if not (isinstance(value, str) and valid_mmdd(value)):
        raise EcrError(f"{name} must be MMDD (a real month and day), got {_shown(value)}")
    return value


def _digits(low: int, high: int, what: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if not is_digits(value, low, high):
            raise EcrError(f"{name} must be {what} of {low}-{high} ASCII digits 0-9, got a "
                           f"{'text' if isinstance(value, str) else type(value).__name__} "
                           f"of {len(value) if isinstance(value, str) else 'no'} characters")
        return str(value)
    return check


def _text(low: int, high: int, allowed: str | None = None) -> Callable[[str, Any], str]:
    """Printable text of low..high characters (only `allowed` ones, if given)."""
    def check(name: str, value: Any) -> str:
        ok = isinstance(value, str) and low <= len(value) <= high and value.isprintable() and (
            allowed is None or all(ch in allowed for ch in value))
        if not ok:
            kind = "letters, digits and _" if allowed is not None else "printable characters"
            raise EcrError(f"{name} must be text of {low}-{high} {kind}, got {_shown(value)}")
        return str(value)
    return check


def _number(what: str) -> Callable[[str, Any], int]:
    def check(name: str, value: Any) -> int:
        if not (isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_NUMBER):
            raise EcrError(f"{name} must be {what} (1-{MAX_NUMBER}), got {_shown(value)}")
        return value
    return check


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise EcrError(f"{name} must be true or false, got {_shown(value)}")
    return value


ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

# Every field any op takes (the companions' too), with its check: a field missing here is refused.
FIELD_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "amount": _amount,
    "voucher": _six_digits, "orig_voucher": _six_digits, "orig_batch": _six_digits,
    "batch": _six_digits,
    "orig_date": _mmdd,
    "orig_rrn": _text(1, 12, ALNUM),  # field 37: 12 letters/digits
    "password": _digits(1, 12, "the supervisor password"),
    "old": _digits(1, 12, "the supervisor password"),
    "new": _digits(1, 12, "the new supervisor password"),
    "pin": _digits(4, 12, "a PIN"),
    "card": _text(1, 32, ALNUM + "_"),  # a test card's name (emulated boards only)
    "ref": _text(1, 32),
    "note": _text(0, 64),
    "reason": _text(1, 128),
    "path": _text(1, 255),
    "kind": _text(1, 8),
    "job": _number("a print job number from print_jobs"),
    "order": _number("a held order number from held_list"),
    "version": _text(1, 64),  # the firmware version a till confirms for an update
    "print": _bool, "all": _bool, "check": _bool,
}


def _shown(value: Any) -> str:
    """A wrong value in a refusal, cut short (a till may send anything, of any length)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _named(name: str) -> str:
    """A field name as the till sent it, if it is short printable text; else shown as a value."""
    return name if len(name) <= 40 and name.isprintable() else _shown(name)


def echoable_id(value: Any) -> bool:
    """An id the reply can carry back exactly: a number a JSON library holds, or short text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= MAX_ID
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_TEXT and value.isprintable()


# -- parsing ------------------------------------------------------------------------------------

def parse_request(line: bytes,
                  extra_ops: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
                  ) -> EcrRequest:
    """One request line, checked field by field; extra_ops: the app companions' ops (held
    orders, review, deregistration) with their required and optional fields."""
    if len(line) > MAX_LINE:
        raise EcrError(overlong_message())
    return parse_object(decode(line), extra_ops)


def parse_object(obj: dict[str, Any],
                 extra_ops: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
                 ) -> EcrRequest:
    """A decoded request (a paired till's, its envelope taken off: firmware/ecr/auth.py),
    checked field by field as parse_request does."""
    ops = {**OPS, **(extra_ops or {})}
    try:
        return _checked(obj, ops)
    except EcrError as exc:
        raise EcrError(str(exc), _envelope(obj, ops)) from None


def decode(line: bytes) -> dict[str, Any]:
    """A request line as a JSON object; EcrError in words if it is not one."""
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise EcrError("request is not valid JSON: it is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise EcrError(f"request is not valid JSON: {exc}") from None
    except RecursionError:
        raise EcrError("request is not valid JSON for this terminal: nested too deeply") from None
    except ValueError as exc:  # e.g. a number with more digits than Python converts
        raise EcrError(f"request is not valid JSON for this terminal: {exc}") from None
    if not isinstance(obj, dict):
        raise EcrError("request must be a JSON object like {\"op\": \"sale\", \"amount\": 100}")
    return obj


def _envelope(obj: dict[str, Any], ops: dict[str, Any]) -> dict[str, Any]:
    """The id and op a refusal can name (only what can be echoed back as sent)."""
    envelope: dict[str, Any] = {}
    if echoable_id(obj.get("id")):
        envelope["id"] = obj["id"]
    if isinstance(obj.get("op"), str) and obj["op"] in ops:
        envelope["op"] = obj["op"]
    return envelope


def _checked(obj: dict[str, Any], ops: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
             ) -> EcrRequest:
    request_id = obj.get("id")
    if request_id is not None and not echoable_id(request_id):
        raise EcrError(f"id must be a whole number (up to {MAX_ID}) or text of 1-{MAX_ID_TEXT} "
                       f"printable characters, so that the reply can carry it back; got "
                       f"{_shown(request_id)}: nothing was done")
    op = obj.get("op")
    if not isinstance(op, str):
        raise EcrError(f"op must be text naming the operation (e.g. \"sale\"), got {_shown(op)}")
    if op not in ops:
        raise EcrError(f"unknown op {_shown(op)}; known ops: {', '.join(sorted(ops))}")
    required, optional = ops[op]
    for old, new in RENAMED.items():
        if old in obj and new in required + optional:
            raise EcrError(f"{op} does not take {old}: name the original by its voucher number "
                           f"({new}, the receipt's VOUCHER NO.)")
    missing = [name for name in required if name not in obj]
    if missing:
        raise EcrError(f"{op} needs {', '.join(missing)}")
    unknown = set(obj) - set(required) - set(optional) - {"op", "id"}
    if unknown:
        raise EcrError(f"{op} does not take {', '.join(sorted(_named(k) for k in unknown))}")
    args: dict[str, Any] = {}
    for name, value in obj.items():
        if name in ("op", "id"):
            continue
        check = FIELD_CHECKS.get(name)
        if check is None:  # a companion's field nobody taught the protocol: refuse, never guess
            raise EcrError(f"{op}: field {name} is not checked by this firmware; it cannot be used")
        args[name] = check(name, value)
    return EcrRequest(op=op, id=request_id, args=args)


# -- replies ------------------------------------------------------------------------------------

UNENCODABLE = (b'{"ok":false,"result":"failed","message":"The reply could not be encoded; '
               b'check last and status before retrying"}\n')


def encode_response(payload: dict[str, Any]) -> bytes:
    """One reply line, whatever the payload holds: as it is if it encodes; else with every text
    made valid (lone surrogates replaced) and the id dropped with a note if it was the id that
    could not be sent; else a fixed line that still says the request may have run."""
    try:
        return _line(payload, ascii_only=False)
    except (TypeError, ValueError, RecursionError):
        pass
    try:
        safe = _scrubbed(payload)
        if "id" in payload and safe.get("id") != payload["id"]:
            safe["id"] = None
            safe["id_note"] = "the request's id could not be echoed (not valid text)"
        return _line(safe, ascii_only=True)
    except (TypeError, ValueError, RecursionError):
        return UNENCODABLE


def _line(payload: dict[str, Any], ascii_only: bool) -> bytes:
    text = json.dumps(payload, ensure_ascii=ascii_only, allow_nan=False, separators=(",", ":"))
    return (text + "\n").encode("utf-8")


def _scrubbed(value: Any) -> Any:
    """value with every string made encodable and anything that is not JSON turned into text."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {_scrubbed(str(k)): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    return _scrubbed(repr(value))
