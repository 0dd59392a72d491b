"""A small ECR client: drive the terminal from a shell, a script or a till.

    python -m firmware.ecr.client pair T01 123456      # the code the terminal shows (Manage > 0)
    python -m firmware.ecr.client sale 12.34 --card cup_debit --pin 123456
    python -m firmware.ecr.client raw '{"op": "status"}'

Once paired, the till's key and its last sequence number live in the till file (--till-file,
0600; var/ecr-till.json by default): every request is sent with till, seq and mac and every
reply's MAC is checked (firmware/ecr/auth.py). Without a till file requests go unauthenticated,
which only a terminal set to comms.ecr_auth = "open" (an emulated board) takes.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from firmware.ecr.auth import AuthError, TillPairing, check_reply, sign

DEFAULT_TILL_FILE = Path(os.environ.get("POSFW_TILL_FILE", "var/ecr-till.json"))


class PairedTill:
    """A paired till's key and sequence number, kept in a 0600 file. The sequence number is
    written (fsync) before the request leaves, so a till that crashes never sends one twice."""

    def __init__(self, path: Path) -> None:
        self.path = path
        data = json.loads(path.read_text())
        self.till = str(data["till"])
        self._key = bytes.fromhex(data["key"])
        self.seq = int(data["seq"])

    def __repr__(self) -> str:
        return f"PairedTill({self.till}, seq {self.seq}, <key hidden>)"

    @classmethod
    def create(cls, path: Path, till: str, key: bytes) -> PairedTill:
        _write_private(path, {"till": till, "key": key.hex(), "seq": 0})
        return cls(path)

    def next_request(self, request: dict[str, Any]) -> tuple[dict[str, Any], int]:
        self.seq += 1
        _write_private(self.path, {"till": self.till, "key": self._key.hex(), "seq": self.seq})
        return sign(request, self.till, self.seq, self._key), self.seq

    def checked(self, reply: dict[str, Any], seq: int) -> dict[str, Any]:
        return check_reply(reply, self.till, seq, self._key)


def _write_private(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(data).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


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


def call(host: str, port: int, request: dict[str, Any], timeout: float = 120.0,
         till: PairedTill | None = None) -> dict[str, Any]:
    """One request, one reply; with `till`, signed and its reply's MAC checked (AuthError)."""
    if till is None:
        return _exchange(host, port, request, timeout)
    signed, seq = till.next_request(request)
    return till.checked(_exchange(host, port, signed, timeout), seq)


def pair(host: str, port: int, till: str, code: str, path: Path,
         timeout: float = 30.0) -> PairedTill:
    """Pair with the terminal showing `code` for `till` (SPAKE2: `pair`, then `pair_confirm`
    on the same connection); the key goes to `path` (0600) once the terminal said it kept it."""
    pairing = TillPairing(till, code)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        buf = bytearray()
        offer = _ask(sock, buf, pairing.request("pair-1"))
        key = pairing.finish(_ask(sock, buf, pairing.answer(offer, "pair-2")))
    return PairedTill.create(path, till, key)


def _exchange(host: str, port: int, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        return _ask(sock, bytearray(), request)


def _ask(sock: socket.socket, buf: bytearray, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request line, read its reply line (`buf` keeps what came after it)."""
    sock.sendall((json.dumps(request) + "\n").encode())
    while b"\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise SystemExit("the terminal closed the ECR link")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return json.loads(line)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="ECR client for the POS terminal firmware")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8583)
    p.add_argument("--till-file", type=Path, default=DEFAULT_TILL_FILE,
                   help="the paired till's key and sequence number (written by pair)")
    sub = p.add_subparsers(dest="op", required=True)
    s = sub.add_parser("pair", help="pair this till: the code the terminal shows for it")
    s.add_argument("till", help="the till's name, T01 to T99")
    s.add_argument("code", help="the 6-digit code on the terminal's screen")
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
    if args.op == "pair":
        try:
            paired = pair(args.host, args.port, args.till, args.code, args.till_file)
        except AuthError as exc:
            raise SystemExit(f"not paired: {exc}") from None
        print(f"paired as till {paired.till}; key kept in {args.till_file}")
        return 0
    if args.op == "raw":
        request = json.loads(args.json)
    else:
        request = {"op": args.op}
        for name, value in vars(args).items():
            if name in ("host", "port", "op", "till_file") or value is None:
                continue
            if name == "answer":
                request["print"] = value == "print"
                continue
            request[name] = to_fen(value) if name == "amount" else value
    till = PairedTill(args.till_file) if args.till_file.exists() else None
    try:
        reply = call(args.host, args.port, request, till=till)
    except AuthError as exc:
        raise SystemExit(f"reply refused: {exc}") from None
    json.dump(reply, sys.stdout, ensure_ascii=False, indent=2)
    print()
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
