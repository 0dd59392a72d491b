"""A small ECR client: drive the terminal from a shell, a script or a till.

    python -m firmware.ecr.client sale 12.34 --card cup_debit --pin 123456
    python -m firmware.ecr.client raw '{"op": "status"}'
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from decimal import Decimal, InvalidOperation
from typing import Any


def to_fen(text: str) -> int:
    """'12.34' -> 1234; refuses anything that is not a plain amount."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise SystemExit(f"not an amount: {text!r}") from None
    fen = value * 100
    if fen != fen.to_integral_value() or fen <= 0:
        raise SystemExit(f"amount must be positive with at most 2 decimals: {text!r}")
    return int(fen)


def call(host: str, port: int, request: dict[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall((json.dumps(request) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("the terminal closed the ECR link")
            buf += chunk
    return json.loads(buf)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ECR client for the POS terminal firmware")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8583)
    sub = p.add_subparsers(dest="op", required=True)
    for op in ("sale", "preauth"):
        s = sub.add_parser(op)
        s.add_argument("amount")
        s.add_argument("--card")
        s.add_argument("--pin")
        s.add_argument("--ref")
    for op in ("void", "preauth_void", "completion_void"):
        s = sub.add_parser(op)
        s.add_argument("voucher", help="the original's voucher number (VOUCHER NO. on its receipt)")
        s.add_argument("--password", required=True)
    s = sub.add_parser("completion")
    s.add_argument("voucher", help="the pre-auth's voucher number")
    s.add_argument("amount")
    s = sub.add_parser("refund")
    s.add_argument("amount")
    s.add_argument("orig_rrn")
    s.add_argument("orig_date", help="MMDD")
    s.add_argument("--password", required=True)
    s.add_argument("--card")
    s = sub.add_parser("balance")
    s.add_argument("--card")
    s.add_argument("--pin")
    s = sub.add_parser("settle")
    s.add_argument("--password", required=True)
    for op in ("status", "last", "signon", "signoff", "echo", "cancel", "print_jobs",
               "print_test"):
        sub.add_parser(op)
    s = sub.add_parser("reprint", help="reprint the last receipt, or one by voucher number")
    s.add_argument("voucher", nargs="?")
    s = sub.add_parser("print_cancel", help="cancel a print job (the one printing if none named)")
    s.add_argument("job", nargs="?", type=int)
    s = sub.add_parser("print_confirm", help="after a power loss: reprint a cut copy, or drop it")
    s.add_argument("job", type=int)
    s.add_argument("answer", choices=("print", "drop"))
    s = sub.add_parser("set_password")
    s.add_argument("old")
    s.add_argument("new")
    s = sub.add_parser("raw")
    s.add_argument("json")
    args = p.parse_args(argv)
    if args.op == "raw":
        request = json.loads(args.json)
    else:
        request = {"op": args.op}
        for name, value in vars(args).items():
            if name in ("host", "port", "op") or value is None:
                continue
            if name == "answer":
                request["print"] = value == "print"
                continue
            request[name] = to_fen(value) if name == "amount" else value
    reply = call(args.host, args.port, request)
    json.dump(reply, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
