"""A minimal blocking test terminal for driving the acquirer simulator with raw frames.

Owns nothing of the wire format: every message is built by firmware.host.messages and
encoded by firmware.host.codec; this only keeps STAN, batch and the sign-on keys.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Final

from firmware.host.codec import Decoded, decode, encode, verify_mac
from firmware.host.keys import (
    DEFAULT_MAK_CHECK,
    WorkingKeys,
    encrypt_pin_block,
    parse_signon_keys,
)
from firmware.host.mac import DEFAULT_MAC_ALGORITHM, clear_mac
from firmware.host.messages import (
    CardInput,
    FinancialParams,
    Message,
    Terminal,
    TxnKind,
    financial_request,
    reversal_request,
    signon_request,
)

from .cards import TestCard

__all__ = ["TEST_MID", "TEST_TID", "TEST_TMK", "SimTerminal", "card_input"]

TEST_TID: Final = "10000001"
TEST_MID: Final = "898100012340001"
# A fixed, obviously fake terminal master key for tests and `make run`.
TEST_TMK: Final = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")


def card_input(card: TestCard, *, pin: str | None = None, pik: bytes | None = None,
               entry: str = "swipe") -> CardInput:
    """What a reader would produce for this card; pin is encrypted under pik."""
    block = encrypt_pin_block(pin, card.pan, pik) if pin is not None and pik else None
    if entry == "swipe":
        return CardInput("swipe", card.pan, track2=card.track2, pin_block=block)
    return CardInput(entry, card.pan, expiry=card.expiry, pin_block=block,
                     icc_data="9F2608" + "00" * 8 if entry in ("chip", "contactless") else None)


@dataclass
class SimTerminal:
    """A socket to the simulator plus the counters a terminal keeps. Not thread-safe."""

    port: int
    tid: str = TEST_TID
    mid: str = TEST_MID
    tmk: bytes = TEST_TMK
    mak_check: str = DEFAULT_MAK_CHECK  # as the simulator was started with
    mac_algorithm: str = DEFAULT_MAC_ALGORITHM  # likewise
    host: str = "127.0.0.1"
    timeout: float = 3.0
    stan: int = 0
    batch: str = "000001"
    keys: WorkingKeys | None = None
    sock: socket.socket | None = field(default=None, repr=False)

    @property
    def term(self) -> Terminal:
        return Terminal(self.tid, self.mid)

    def connect(self) -> SimTerminal:
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        return self

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self) -> SimTerminal:
        return self.connect() if self.sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_stan(self) -> str:
        self.stan = self.stan % 999_999 + 1
        return f"{self.stan:06d}"

    # ---- raw I/O ---------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        assert self.sock is not None, "not connected"
        self.sock.sendall(data)

    def _read_exact(self, n: int) -> bytes:
        assert self.sock is not None, "not connected"
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError("the simulator closed the connection")
            out += chunk
        return out

    def recv_payload(self, timeout: float | None = None) -> bytes | None:
        """One frame's payload, None on timeout; EOFError when the peer closed."""
        assert self.sock is not None, "not connected"
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            length = int.from_bytes(self._read_exact(2), "big")
        except TimeoutError:
            return None
        return self._read_exact(length)

    def recv(self, timeout: float | None = None) -> Decoded | None:
        payload = self.recv_payload(timeout)
        return None if payload is None else decode(payload)

    def send(self, msg: Message, *, mac: bool = True) -> None:
        mak = self.keys.mak if (mac and self.keys is not None) else None
        self.send_bytes(encode(msg, clear_mac(mak, self.mac_algorithm) if mak else None))

    def exchange(self, msg: Message, *, mac: bool = True,
                 timeout: float | None = None) -> Decoded:
        self.send(msg, mac=mac)
        reply = self.recv(timeout)
        if reply is None:
            raise TimeoutError(f"no reply to {msg.mti}")
        return reply

    def mac_ok(self, reply: Decoded) -> bool:
        assert self.keys is not None
        return verify_mac(reply, clear_mac(self.keys.mak, self.mac_algorithm))

    # ---- transactions ----------------------------------------------------------

    def sign_on(self, *, with_tdk: bool = False) -> Decoded:
        reply = self.exchange(signon_request(self.next_stan(), self.term, self.batch, "001",
                                             with_tdk), mac=False)
        if reply.fields.get("39") == "00":
            self.keys = parse_signon_keys(reply.fields["62"], self.tmk, self.mak_check)
            self.batch = reply.fields["60"][2:8]
        return reply

    def params(self, kind: TxnKind, amount: int, card: TestCard, *, pin: str | None = None,
               entry: str = "swipe", **orig: str | None) -> FinancialParams:
        """FinancialParams with a fresh STAN; orig_* keywords for voids and refunds."""
        pik = self.keys.pik if self.keys else None
        return FinancialParams(kind, self.next_stan(), self.batch, self.term, amount,
                               card=card_input(card, pin=pin, pik=pik, entry=entry), **orig)

    def request(self, params: FinancialParams) -> Decoded:
        return self.exchange(financial_request(params))

    def reverse(self, params: FinancialParams, reason: str = "98",
                auth: str | None = None) -> Decoded:
        return self.exchange(reversal_request(params, reason, auth))
