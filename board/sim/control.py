"""Synchronous client of the acquirer simulator's control port (JSON lines over TCP).

Owns the client side of the protocol that board.sim.acquirer serves: one JSON object
per line each way, every answer {"ok": true, ...} or {"ok": false, "error": "words"}.
"""

from __future__ import annotations

import json
import socket
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
        """Add a rule: code and any of kind, mti, amount, amount_mod100, pan, tid, count."""
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
