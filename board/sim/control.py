"""Synchronous client of the acquirer simulator's control port (JSON lines over TCP), and its
command line: `python -m board.sim.control fault no_mac` (see --help) turns the fault knobs of
a running simulator (`make run`'s is on control port 5801) without writing Python.

Owns the client side of the protocol that board.sim.acquirer serves: one JSON object
per line each way, every answer {"ok": true, ...} or {"ok": false, "error": "words"}.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from typing import Any

__all__ = ["ControlClient", "ControlError"]


class ControlError(Exception):
    """The simulator refused a control command; the message is its error text."""


class ControlClient:
    """Blocking control client, for tests and for processes other than the simulator's.

        with ControlClient("127.0.0.1", control_port) as ctl:
            ctl.fault(kind="drop", mti="0200")
            rows = ctl.ledger("12345678")
    """

    def __init__(self, host: str | None = None, port: int | None = None, *,
                 timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None
        if port is not None:
            self.connect(host or "127.0.0.1", port)

    def connect(self, host: str, port: int) -> None:
        self.close()
        self._sock = socket.create_connection((host, port), timeout=self.timeout)
        self._file = self._sock.makefile("rwb")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, cmd: str, **kw: Any) -> dict[str, Any]:
        """Send one command; the answer without "ok", or ControlError with its words."""
        if self._file is None:
            raise ControlError("not connected: call connect(host, port) first")
        self._file.write(json.dumps({"cmd": cmd, **kw}).encode() + b"\n")
        self._file.flush()
        line = self._file.readline()
        if not line:
            raise ControlError("the simulator closed the control connection")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise ControlError(answer.get("error", "unknown error"))
        answer.pop("ok")
        return answer

    def ping(self) -> bool:
        return bool(self.request("ping").get("pong"))

    def fault(self, **kw: Any) -> dict[str, Any]:
        """Add a fault: kind, mti, kind_filter, tid, count, seconds, process, framed."""
        return self.request("fault", **kw)["fault"]

    def clear_faults(self) -> None:
        self.request("clear_faults")

    def rule(self, **kw: Any) -> dict[str, Any]:
        """Add a rule: code and any of kind, mti, network, amount, amount_mod100, pan, tid, count."""
        return self.request("rule", **kw)["rule"]

    def clear_rules(self) -> None:
        self.request("clear_rules")

    def register(self, tid: str, mid: str, tmk: bytes | str) -> None:
        self.request("register", tid=tid, mid=mid,
                     tmk=tmk.hex() if isinstance(tmk, bytes) else tmk)

    def unbind(self, tid: str) -> None:
        self.request("unbind", tid=tid)

    def status(self, tid: str) -> dict[str, Any]:
        """tid, mid, status ('bound'/'unbound'), signed_on, batch."""
        return self.request("status", tid=tid)

    def ledger(self, tid: str, batch: int | None = None) -> list[dict[str, Any]]:
        """Every booked financial message of the terminal (optionally one batch)."""
        return self.request("ledger", tid=tid, batch=batch)["rows"]

    def totals(self, tid: str, batch: int) -> dict[str, dict[str, int]]:
        """{"domestic": {...}, "foreign": {...}} with debit/credit amounts and counts."""
        return self.request("totals", tid=tid, batch=batch)

    def settlements(self, tid: str) -> list[dict[str, Any]]:
        return self.request("settlements", tid=tid)["settlements"]

    def uploads(self, tid: str, batch: int) -> list[dict[str, Any]]:
        return self.request("uploads", tid=tid, batch=batch)["uploads"]


# -- command line -------------------------------------------------------------------------------

CONTROL_PORT = 5801  # make run's (board/sim/devrun.py); --base-port N moves it to N+1


def _parser() -> argparse.ArgumentParser:
    from board.sim.faults import FaultKind  # what each kind does: its docstring

    p = argparse.ArgumentParser(
        prog="python -m board.sim.control",
        description="Turn the acquirer simulator's knobs: faults on the wire and forced response "
                    "codes. Each applies to the next matching message(s) the terminal sends.",
        epilog="examples:  fault no_mac | fault drop --mti 0200 | fault delay --seconds 40 | "
               "fault refuse --seconds 30 | rule 51 --kind sale | clear | status 12345678")
    p.add_argument("--port", type=int, default=CONTROL_PORT, help="the simulator's control port "
                   f"(default {CONTROL_PORT}, make run's)")
    sub = p.add_subparsers(dest="command", required=True)
    fault = sub.add_parser("fault", help="break the reply to the next matching request")
    fault.add_argument("kind", choices=[k.value for k in FaultKind],
                       help="delay: late reply; drop: none; close: connection closed; "
                            "bad_mac/no_mac: reply MAC wrong/missing; wrong_stan: "
                       "reply for another STAN; garbage: random bytes; twice: reply sent twice; "
                       "refuse: the host port refuses connections")
    fault.add_argument("--mti", help="only requests of this MTI (0200 financial, 0400 reversal, "
                       "0220 advice, 0500 settlement, 0800 sign-on)")
    fault.add_argument("--kind", dest="kind_filter", help="only this transaction kind (sale, void, "
                       "refund, preauth, completion...)")
    fault.add_argument("--count", type=int, default=1, help="messages it acts on (-1: until cleared)")
    fault.add_argument("--seconds", type=float, default=0.0, help="delay length; refuse: how long")
    fault.add_argument("--before-booking", dest="process", action="store_false",
                       help="drop/close/garbage/delay before the host books it (no money moves)")
    rule = sub.add_parser("rule", help="answer matching requests with a response code")
    rule.add_argument("code", help="field 39, e.g. 51 (no funds), 05, 96")
    rule.add_argument("--kind", help="only this transaction kind")
    rule.add_argument("--mti", help="only this MTI")
    rule.add_argument("--network", help="0320/0500 only: this 60.3 (201 upload, 202/207 end)")
    rule.add_argument("--amount", type=int, help="only this amount in fen")
    rule.add_argument("--count", type=int, default=-1, help="requests it answers (-1: until cleared)")
    sub.add_parser("clear", help="remove every fault and rule")
    status = sub.add_parser("status", help="a terminal as the host sees it (bound, signed on, batch)")
    status.add_argument("tid")
    ledger = sub.add_parser("ledger", help="what the host booked for a terminal")
    ledger.add_argument("tid")
    ledger.add_argument("--batch", type=int)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    requests: list[dict[str, Any]]
    if args.command == "fault":
        requests = [{"cmd": "fault", "kind": args.kind, "mti": args.mti, "kind_filter": args.kind_filter,
                     "count": args.count, "seconds": args.seconds, "process": args.process}]
    elif args.command == "rule":
        requests = [{"cmd": "rule", "code": args.code, "kind": args.kind, "mti": args.mti,
                     "network": args.network, "amount": args.amount, "count": args.count}]
    elif args.command == "clear":
        requests = [{"cmd": "clear_faults"}, {"cmd": "clear_rules"}]
    elif args.command == "status":
        requests = [{"cmd": "status", "tid": args.tid}]
    else:
        requests = [{"cmd": "ledger", "tid": args.tid, "batch": args.batch}]
    try:
        with ControlClient("127.0.0.1", args.port) as ctl:
            answers = [ctl.request(**r) for r in requests]
    except OSError as exc:
        print(f"no simulator on control port {args.port} ({exc.strerror or exc}): is `make run` "
              "running? With --base-port N its control port is N+1.", file=sys.stderr)
        return 1
    except ControlError as exc:
        print(f"{args.command} refused: {exc}", file=sys.stderr)
        return 1
    if args.command == "clear":
        print("every fault and rule cleared")
    for answer in answers:
        if answer:
            print(json.dumps(answer, ensure_ascii=False))
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
