"""The ECR wire protocol: one JSON object per line, requests in, responses out.

Parsing is strict and every refusal says in words what was wrong, because a
till integrator reads these messages while wiring a cash register to us.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from firmware.digits import is_digits

MAX_LINE = 4096

# op -> (required fields, optional fields)
OPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sale": (("amount",), ("ref", "card", "pin")),
    "void": (("trace", "password"), ("ref",)),
    "refund": (("amount", "orig_rrn", "orig_date", "password"),
               ("orig_trace", "orig_batch", "ref", "card", "pin")),
    "balance": ((), ("card", "pin")),
    "preauth": (("amount",), ("ref", "card", "pin")),
    "preauth_void": (("trace", "password"), ("ref",)),
    "completion": (("trace", "amount"), ("ref",)),
    "completion_void": (("trace", "password"), ("ref",)),
    "settle": (("password",), ()),
    "status": ((), ()),
    "last": ((), ()),
    "lookup": (("trace",), ("batch",)),
    "signon": ((), ()),
    "signoff": ((), ()),
    "echo": ((), ()),
    "cancel": ((), ()),
    "set_password": (("old", "new"), ()),
    "resolve_reversal": (("trace", "password", "reason"), ("batch",)),
    "present_card": (("card",), ("pin",)),
    "reprint": ((), ("trace", "batch")),
    "print_jobs": ((), ("all",)),
    "print_cancel": ((), ("job",)),
    "print_confirm": (("job", "print"), ()),
    "print_test": ((), ()),
}
PRINT_OPS = frozenset({"reprint", "print_jobs", "print_cancel", "print_confirm", "print_test"})
FINANCIAL_OPS = frozenset(
    {"sale", "void", "refund", "balance", "preauth", "preauth_void", "completion", "completion_void"}
)
AMOUNT_FIELDS = ("amount",)
TRACE_FIELDS = ("trace", "orig_trace", "orig_batch", "batch")


class EcrError(Exception):
    """A request that cannot be carried out as sent; str() is the words to show the till."""


@dataclass(frozen=True)
class EcrRequest:
    op: str
    id: Any = None
    args: dict[str, Any] = field(default_factory=dict)


def parse_request(line: bytes,
                  extra_ops: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
                  ) -> EcrRequest:
    """One request line, checked field by field; extra_ops: the app companions' ops (held
    orders, review, deregistration) with their required and optional fields."""
    ops = {**OPS, **(extra_ops or {})}
    if len(line) > MAX_LINE:
        raise EcrError(f"request longer than {MAX_LINE} bytes")
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EcrError(f"request is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise EcrError("request must be a JSON object like {\"op\": \"sale\", \"amount\": 100}")
    op = obj.get("op")
    if op not in ops:
        raise EcrError(f"unknown op {op!r}; known ops: {', '.join(sorted(ops))}")
    required, optional = ops[op]
    missing = [name for name in required if name not in obj]
    if missing:
        raise EcrError(f"{op} needs {', '.join(missing)}")
    unknown = set(obj) - set(required) - set(optional) - {"op", "id"}
    if unknown:
        raise EcrError(f"{op} does not take {', '.join(sorted(unknown))}")
    args = {k: v for k, v in obj.items() if k not in ("op", "id")}
    for name in AMOUNT_FIELDS:
        if name in args:
            value = args[name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise EcrError(
                    f"{name} must be a whole number of fen (e.g. 1234 for 12.34), got {value!r}"
                )
            if value <= 0:
                raise EcrError(f"{name} must be greater than zero, got {value}")
    for name in TRACE_FIELDS:
        if name in args:
            value = args[name]
            if isinstance(value, int) and not isinstance(value, bool):
                value = f"{value:06d}"
            if not (isinstance(value, str) and is_digits(value) and 1 <= len(value) <= 6):
                raise EcrError(f"{name} must be up to 6 digits, got {args[name]!r}")
            args[name] = value.zfill(6)
    if "orig_date" in args:
        value = args["orig_date"]
        if not (isinstance(value, str) and len(value) == 4 and is_digits(value)):
            raise EcrError(f"orig_date must be MMDD, got {value!r}")
    if "job" in args and (not isinstance(args["job"], int) or isinstance(args["job"], bool)
                          or args["job"] <= 0):
        raise EcrError(f"job must be a print job number from print_jobs, got {args['job']!r}")
    for name in ("print", "all"):
        if name in args and not isinstance(args[name], bool):
            raise EcrError(f"{name} must be true or false, got {args[name]!r}")
    if "order" in args and (not isinstance(args["order"], int) or isinstance(args["order"], bool)
                            or args["order"] <= 0):
        raise EcrError(f"order must be a held order number from held_list, got {args['order']!r}")
    for name in ("password", "old", "new", "pin", "card", "ref", "reason", "orig_rrn", "note", "path"):
        if name in args and not isinstance(args[name], str):
            raise EcrError(f"{name} must be a string")
    return EcrRequest(op=op, id=obj.get("id"), args=args)


def encode_response(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
