"""The acquirer host simulator: a CUP ISO 8583 host on loopback TCP with fault knobs.

Owns the host's decisions (sign-on keys, approvals, declines, voids, reversals,
settlement), the wire faults, the JSON-lines control port, SimulatorThread and the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import ipaddress
import json
import logging
import secrets
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from psec.des import decrypt_tdes_ecb
from pyemv import tlv

from firmware.digits import is_digits
from firmware.emv.params import AidParams, Capk
from firmware.engine.cardclass import is_foreign, luhn_ok
from firmware.engine.codes import advice_answer
from firmware.host import params_download as pd
from firmware.host.codec import Decoded, decode, decrypt_tracks, encode, verify_mac
from firmware.host.errors import HostError, LocalProtocolError, RemoteProtocolError
from firmware.host.framing import MAX_FRAME, read_frame, swap_tpdu
from firmware.host.keys import (
    DEFAULT_MAK_CHECK,
    MAK_CHECK_CONVENTIONS,
    build_signon_keys,
    decrypt_pin,
    expand_key,
    generate_working_keys,
)
from firmware.host.mac import DEFAULT_MAC_ALGORITHM, MAC_ALGORITHMS, MacFunction, clear_mac
from firmware.host.messages import (
    WIRE,
    Message,
    SideTotals,
    TxnKind,
    mask_pan,
    parse_settlement_field48,
    reply_needs_mac,
    response_for,
)

from . import chipcards
from . import issuer as chip_issuer
from .cards import BLOCKED_PANS, card_by_pan, org_for_pan
from .faults import CHIP_KNOBS, Fault, FaultBook, FaultKind, Rule, RuleBook
from .ledger import Ledger, TxnRow
from .testkit import TEST_MID, TEST_TID, TEST_TMK

__all__ = [
    "ACQUIRER_ID",
    "NOT_SIGNED_ON_CODE",
    "AcquirerSimulator",
    "SimulatorThread",
    "balance_field54",
    "identify",
    "main",
]

log = logging.getLogger("board.sim.acquirer")

T = TypeVar("T")

# Field 32 of our replies: the acquiring institution id this simulator claims.
ACQUIRER_ID: Final = "01020000"
# Field 44 of an approval: the issuing bank by card organisation (domestic cards: a CUP member
# bank's code; foreign cards: the organisation's), then the acquirer, each 11 characters.
ISSUER_IDS: Final = {"CUP": "03080000", "VIS": "04000000", "MCC": "05000000", "JCB": "06000000",
                     "AEX": "07000000"}


def institution_field(org: str) -> str:
    """Field 44: issuer and acquirer institution codes, each left-justified in 11 characters."""
    return f"{ISSUER_IDS.get(org, '00000000'):<11}{ACQUIRER_ID:<11}"
# A known terminal that has no working keys gets 22 "terminal state mismatch - sign on
# again" plus header processing requirement 3 (sign on again). A0 would also send it to
# sign-on, but claims a MAC was checked, which is impossible without keys.
NOT_SIGNED_ON_CODE: Final = "22"
# A financial request whose STAN a reversal already consumed (the original arrived after
# its own reversal): declined as a duplicate and never approved.
LATE_ORIGINAL_CODE: Final = "94"

_REQUEST_MTIS: Final = frozenset({"0100", "0200", "0220", "0320", "0400", "0500", "0620",
                                  "0800", "0820"})
_MACED_REQUESTS: Final = frozenset({"0100", "0200", "0220", "0400", "0620"})
# The issuer-script result advice (firmware.host.messages.script_advice) and a chip upload.
_SCRIPT_ADVICE_NETWORK: Final = "951"
# The chip parameter download (firmware/host/params_download.py) and its query page size.
_PARAM_NETWORKS: Final = frozenset({"370", "371", "372", "380", "381", "382"})
_QUERY_PAGE: Final = 4
_CHIP_UPLOAD_NETWORK: Final = "203"
_BY_TYPE_CODE: Final[dict[str, TxnKind]] = {w.type_code: k for k, w in WIRE.items()}
_VOIDS: Final[dict[TxnKind, TxnKind]] = {
    # void kind -> the kind of the original it cancels
    TxnKind.VOID: TxnKind.SALE,
    TxnKind.COMPLETION_VOID: TxnKind.COMPLETION,
    TxnKind.PREAUTH_VOID: TxnKind.PREAUTH,
}
# Kinds that authorise against the card now: expiry and the PIN requirement apply.
_CARD_AUTH_KINDS: Final = frozenset({TxnKind.SALE, TxnKind.PREAUTH, TxnKind.BALANCE})
# The built-in "amount ending in 51 -> insufficient funds" rule applies where money is
# asked of the card's balance for the first time (not to completions, voids or refunds).
_FUNDS_KINDS: Final = frozenset({TxnKind.SALE, TxnKind.PREAUTH})
# Size of one batch-upload item in field 48 (domain doc section 4): org 2, trace 6,
# PAN 20, amount 12.
_UPLOAD_ITEM_LEN: Final = 40


def balance_field54(balance: int, currency: str = "156") -> str:
    """Field 54 of a balance inquiry reply, CUP style, 20 characters.

    Account type "10" + amount type "02" (available balance) + currency N3 +
    sign "C" (credit balance) or "D" + amount N12 in fen.
    """
    sign = "C" if balance >= 0 else "D"
    return f"1002{currency}{sign}{abs(balance):012d}"


def identify(msg: Message) -> TxnKind | None:
    """The transaction kind of a 0100/0200/0220/0400 by MTI, 3, 25 and 60.1 (doc table).

    A reversal carries the original's 3, 25 and 60; None if the fields match no row.
    """
    kind = _BY_TYPE_CODE.get(msg.fields.get("60", "")[:2])
    if kind is None:
        return None
    wire = WIRE[kind]
    if msg.mti not in (wire.mti, "0400"):
        return None
    if msg.fields.get("3") != wire.proc or msg.fields.get("25") != wire.cond:
        return None
    return kind


def _tdk_decrypt(tdk: bytes) -> Callable[[bytes], bytes]:
    """One track block decrypted under a terminal's clear TDK (the acquirer's side)."""
    key = expand_key(tdk)
    return lambda block: decrypt_tdes_ecb(key, block)


def _pan_of(fields: dict[str, str]) -> str | None:
    if "2" in fields:
        return fields["2"]
    track2 = fields.get("35")
    if track2 and "=" in track2:
        return track2.split("=", 1)[0]
    return None


def _expiry_of(fields: dict[str, str]) -> str | None:
    if "14" in fields:
        return fields["14"]
    track2 = fields.get("35")
    if track2 and "=" in track2:
        after = track2.split("=", 1)[1]
        return after[:4] if len(after) >= 4 else None
    return None


def is_chip_request(msg: Message) -> bool:
    """A 0100/0200 read from the chip (22 = 05x) with its 55: the issuer checks its ARQC."""
    return (msg.mti in ("0100", "0200") and msg.fields.get("22", "").startswith("05")
            and "55" in msg.fields)


def _fingerprint(msg: Message) -> str:
    """What must be equal for a repeat to count as the same request.

    MAC and PIN block are left out: a resend under new keys is still the same request.
    A reversal is identified by what it reverses (a retry may update its reason 39 or
    add the auth code 38 it learnt meanwhile).
    """
    if msg.mti == "0400":
        keep = {k: msg.fields.get(k) for k in ("3", "4", "25", "41", "42", "61")}
        keep["pan"] = _pan_of(msg.fields)
    else:
        keep = {k: v for k, v in msg.fields.items() if k not in {"64", "52"}}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


def _now_fields() -> dict[str, str]:
    now = datetime.now()
    return {"12": now.strftime("%H%M%S"), "13": now.strftime("%m%d")}


def _with_results(field48: str, dom: str, foreign: str) -> str:
    # Layout of the 0500 field 48 (domain doc section 4): each half is 31 digits and
    # ends with its result digit. The terminal's figures are echoed; only those change.
    return field48[:30] + dom + field48[31:61] + foreign


@dataclass
class _Reply:
    """A reply to send; `mak` set means field 64 is computed."""

    message: Message
    mak: bytes | None
    summary: str  # for the log line


class _Conn:
    """One terminal connection: its writer and its in-flight frame tasks."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.tasks: set[asyncio.Task[None]] = set()
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()

    async def send(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        # One write() per frame: concurrent replies on a connection never interleave.
        self.writer.write(data)
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()


class AcquirerSimulator:
    """A CUP acquirer host on loopback.

    Every frame is handled in its own task, so a delayed reply does not hold back a
    later request (a reversal may overtake its original, as on a real network). The
    decision for one message is synchronous: nothing else interleaves with it.
    """

    def __init__(self, db_path: str | Path, *, host: str = "127.0.0.1", port: int = 0,
                 control_port: int | None = 0, mak_check: str = DEFAULT_MAK_CHECK,
                 tls: ssl.SSLContext | None = None,
                 mac_algorithm: str = DEFAULT_MAC_ALGORITHM) -> None:
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the simulator listens on loopback only, not {host!r}")
        if mak_check not in MAK_CHECK_CONVENTIONS:
            raise ValueError(f"mak_check must be one of {MAK_CHECK_CONVENTIONS}, got {mak_check!r}")
        if mac_algorithm not in MAC_ALGORITHMS:
            raise ValueError(f"mac_algorithm must be one of {MAC_ALGORITHMS}, "
                             f"got {mac_algorithm!r}")
        self.mak_check = mak_check  # how field 62 carries the MAK's check value (keys.py)
        # Which MAC fills field 64 both ways (firmware/host/mac.py); the terminal's
        # comms.mac_algorithm must say the same.
        self.mac_algorithm = mac_algorithm
        self.tls = tls  # a server context: the acquirer's side of TLS (its test CA's certificate)
        self.host = host
        self.port = port
        self.control_port = control_port
        self.ledger = Ledger(db_path)
        self.faults = FaultBook()
        self.rules = RuleBook()
        # Who holds a chip card's issuer keys (tests may stand in another issuer).
        self.issuer_lookup: chip_issuer.IssuerLookup = chip_issuer.default_lookup
        # The chip parameters served by 370-382 (tests may serve others, or a broken key).
        self.capks: list[Capk] = chipcards.test_capks()
        self.aid_params: list[AidParams] = chipcards.test_aid_params()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._control: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._refusing = False
        self._refuse_timer: asyncio.TimerHandle | None = None
        self._running = False

    # ---- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._running = True
        if not self._refusing:
            await self._serve(self._listen_socket())
        if self.control_port is not None:
            self._control = await asyncio.start_server(self._on_control, self.host,
                                                       self.control_port)
            self.control_port = self._control.sockets[0].getsockname()[1]
        log.info("acquirer simulator listening on %s:%s (control %s)", self.host, self.port,
                 self.control_port)

    async def stop(self) -> None:
        self._running = False
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
        for server in (self._server, self._control):
            if server is not None:
                server.close()
        for conn in list(self._conns):
            conn.close()
            for task in conn.tasks:
                task.cancel()
        for server in (self._server, self._control):
            if server is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 2)
        self._server = self._control = None
        self.ledger.close()

    def _listen_socket(self) -> socket.socket:
        # Bound synchronously, so the port accepts connections the moment this returns
        # (clear_faults() after a refuse is then immediately effective).
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    async def _serve(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._on_connection, sock=sock,
                                                  limit=MAX_FRAME * 2, ssl=self.tls)

    # ---- knobs -------------------------------------------------------------

    def register_terminal(self, tid: str, mid: str, tmk: bytes) -> None:
        if len(tmk) != 16:
            raise ValueError("the terminal master key must be 16 bytes")
        if len(tid) != 8 or len(mid) != 15:
            raise ValueError("tid must be 8 characters and mid 15")
        self.ledger.register_terminal(tid, mid, tmk.hex())

    def unbind(self, tid: str) -> bool:
        return self.ledger.unbind(tid)

    def add_fault(self, fault: Fault | FaultKind | str, **kw: Any) -> Fault:
        """Add a wire fault (see faults.Fault); returns it (its count goes down as used)."""
        if not isinstance(fault, Fault):
            fault = Fault(FaultKind(fault), **kw)
        if fault.kind is FaultKind.REFUSE:
            self._start_refusing(fault.seconds)
        else:
            self.faults.add(fault)
        log.info("fault added: %s", fault.to_json())
        return fault

    def add_rule(self, rule: Rule | str | None = None, **kw: Any) -> Rule:
        """Add a decision rule (see faults.Rule): add_rule("05", kind="sale")."""
        if not isinstance(rule, Rule):
            rule = Rule(rule, **kw) if rule is not None else Rule(**kw)
        self.rules.add(rule)
        log.info("rule added: %s", rule.to_json())
        return rule

    def clear_faults(self) -> None:
        """Remove every wire fault and end a refuse (the listener re-opens at once)."""
        self.faults.clear()
        self._stop_refusing()

    def clear_rules(self) -> None:
        self.rules.clear()

    # ---- refuse ------------------------------------------------------------

    def _start_refusing(self, seconds: float) -> None:
        # A listening socket lets the kernel complete handshakes before we see them, so
        # the only real "connection refused" is no listener at all: close it, and close
        # the open connections too. The process never sees the refused attempts, which
        # is why a refuse lasts for a time or until cleared, not for N attempts.
        self._refusing = True
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._conns):
            conn.close()
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
            self._refuse_timer = None
        if seconds > 0 and self._loop is not None:
            self._refuse_timer = self._loop.call_later(seconds, self._stop_refusing)

    def _stop_refusing(self) -> None:
        if self._refuse_timer is not None:
            self._refuse_timer.cancel()
            self._refuse_timer = None
        if not self._refusing:
            return
        self._refusing = False
        if self._running and self._loop is not None:
            sock = self._listen_socket()
            task = self._loop.create_task(self._serve(sock))
            task.add_done_callback(_log_task_error)
            log.info("refuse ended: listening again on %s:%s", self.host, self.port)

    # ---- connections -------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        conn = _Conn(reader, writer)
        if self._refusing or not self._running:
            writer.close()
            return
        self._conns.add(conn)
        try:
            while True:
                try:
                    payload = await read_frame(reader, MAX_FRAME)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                except RemoteProtocolError as exc:
                    log.warning("%s: bad frame, closing the connection: %s", conn.peer, exc)
                    break
                task = asyncio.create_task(self._handle_frame(conn, payload))
                conn.tasks.add(task)
                task.add_done_callback(conn.tasks.discard)
                task.add_done_callback(_log_task_error)
                if writer.is_closing():
                    break
            # Let replies to requests already read go out (the peer may have half-closed).
            if conn.tasks:
                await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            self._conns.discard(conn)
            conn.close()

    async def _handle_frame(self, conn: _Conn, payload: bytes) -> None:
        try:
            decoded = decode(payload)
        except Exception as exc:  # decode promises RemoteProtocolError; be safe anyway
            # Framing can no longer be trusted on this connection: close it.
            log.warning("%s: malformed message, closing the connection: %s", conn.peer, exc)
            conn.close()
            return
        msg = decoded.message
        if msg.mti not in _REQUEST_MTIS:
            log.warning("%s: %s is not a request; ignored", conn.peer, msg.mti)
            return
        kind = identify(msg) if msg.mti in _MACED_REQUESTS else None
        tid = msg.fields.get("41")
        faults = self.faults.take(msg.mti, kind.value if kind else None, tid,
                                  chip=is_chip_request(msg))
        early = [f for f in faults if not f.process and f.kind in
                 (FaultKind.DELAY, FaultKind.DROP, FaultKind.CLOSE, FaultKind.GARBAGE)]
        late = [f for f in faults if f not in early]
        for fault in early:
            if fault.kind is FaultKind.DELAY:
                await asyncio.sleep(fault.seconds)
            elif await self._replace_reply(conn, fault, msg, "before processing"):
                return

        try:
            reply = self._process(decoded, kind,
                                  frozenset(f.kind for f in late) & CHIP_KNOBS)
        except Exception:
            # A bug in a decision must not take the whole host down: log, no reply.
            log.exception("%s: error processing %s", conn.peer, msg.mti)
            return
        if reply is None:
            return
        log.info("%s %s", _describe(msg, kind), reply.summary)

        try:
            data = self._encode_reply(reply, late)
        except LocalProtocolError as exc:
            log.error("%s: cannot encode the reply to %s: %s", conn.peer, msg.mti, exc)
            return
        for fault in late:
            if fault.kind is FaultKind.DELAY:
                await asyncio.sleep(fault.seconds)
        for fault in late:
            if await self._replace_reply(conn, fault, msg, "after processing"):
                return
        await conn.send(data)
        if any(f.kind is FaultKind.TWICE for f in late):
            log.info("fault twice: reply to %s sent again", msg.mti)
            await conn.send(data)

    async def _replace_reply(self, conn: _Conn, fault: Fault, msg: Message, when: str) -> bool:
        """Apply drop/close/garbage; True when the normal reply must not be sent."""
        if fault.kind is FaultKind.DROP:
            log.info("fault drop (%s): no reply to %s", when, msg.mti)
            return True
        if fault.kind is FaultKind.CLOSE:
            log.info("fault close (%s): closing instead of replying to %s", when, msg.mti)
            conn.close()
            return True
        if fault.kind is FaultKind.GARBAGE:
            log.info("fault garbage (%s, framed=%s): reply to %s", when, fault.framed, msg.mti)
            await conn.send(_garbage(fault.framed))
            return True
        return False

    def _encode_reply(self, reply: _Reply, faults: list[Fault]) -> bytes:
        message = reply.message
        kinds = {f.kind for f in faults}
        if FaultKind.WRONG_STAN in kinds and "11" in message.fields:
            fields = dict(message.fields)
            fields["11"] = f"{(int(fields['11']) + 1) % 1_000_000:06d}"
            message = dataclasses.replace(message, fields=fields)
            log.info("fault wrong_stan: reply carries STAN %s", fields["11"])
        if FaultKind.BAD_MAC in kinds:
            if reply.mak is not None:
                data = bytearray(encode(message, self._mac(reply.mak)))
                data[-1] ^= 0x01  # field 64 is the last 8 bytes of the frame
                data = bytes(data)
            else:
                # The reply had no MAC: add one under a key nobody has.
                data = encode(message, self._mac(secrets.token_bytes(16)))
            log.info("fault bad_mac: reply to %s carries a wrong MAC", message.mti)
            return data
        if FaultKind.NO_MAC in kinds:
            log.info("fault no_mac: reply to %s goes without field 64", message.mti)
            return encode(message, None)
        return encode(message, self._mac(reply.mak) if reply.mak is not None else None)

    def _mac(self, mak: bytes) -> MacFunction:
        """Field 64 under a terminal's clear MAK, by the algorithm this acquirer uses."""
        return clear_mac(mak, self.mac_algorithm)

    # ---- decisions ---------------------------------------------------------

    def _process(self, decoded: Decoded, kind: TxnKind | None,
                 knobs: frozenset[FaultKind] = frozenset()) -> _Reply | None:
        msg = decoded.message
        f = msg.fields
        tid = f.get("41")
        term = self.ledger.terminal_status(tid) if tid else None
        if term is None or term.status != "bound":
            return self._plain(msg, "97", "unknown or unbound terminal")
        network_code = f.get("60", "")[8:11]
        if network_code in _PARAM_NETWORKS and msg.mti in ("0800", "0820"):
            return self._param_download(msg, tid or "", network_code)
        if msg.mti == "0800":
            return self._sign_on(msg, tid or "", term.batch)
        if msg.mti == "0820" and network_code == "301":
            return self._plain(msg, "00", "echo")
        if msg.mti == "0820" and network_code == "002":
            self.ledger.sign_off(tid or "")
            return self._plain(msg, "00", "signed off")
        if msg.mti == "0820" and network_code == "009":
            self.ledger.unbind(tid or "")  # every later message from this TID gets 97
            return self._plain(msg, "00", "terminal deregistered")
        if msg.mti == "0820":
            return self._plain(msg, "40", f"unknown network code {network_code!r}")

        keys = self.ledger.working_keys(tid or "")
        if keys is None:
            reply = self._plain(msg, NOT_SIGNED_ON_CODE, "not signed on")
            header = dataclasses.replace(reply.message.header, processing="3")
            reply.message = dataclasses.replace(reply.message, header=header)
            return reply
        pik, mak, tdk = keys
        if msg.mti in _MACED_REQUESTS and not verify_mac(decoded, self._mac(mak)):
            # Not processed and not remembered: the same STAN may come back correctly.
            return self._reply(msg, "A0", mak, "bad MAC")
        if decoded.tracks_encrypted:
            # The MAC covered the encrypted tracks; everything from here reads them in clear.
            if tdk is None:
                return self._reply(msg, "30", mak, "encrypted tracks, but no track data key "
                                                   "was given at sign-on")
            try:
                msg = decrypt_tracks(decoded, _tdk_decrypt(tdk))
            except RemoteProtocolError as exc:
                return self._reply(msg, "30", mak, str(exc))
            f = msg.fields

        stan_text, batch_text = f.get("11", ""), f.get("60", "")[2:8]
        if len(stan_text) != 6 or len(batch_text) != 6:
            return self._plain(msg, "30", "no STAN or batch")
        stan, batch = int(stan_text), int(batch_text)
        stored = self.ledger.stored_reply(tid or "", batch, stan, msg.mti)
        if stored is not None:
            fingerprint, fields = stored
            if fingerprint != _fingerprint(msg):
                return self._reply(msg, "94", mak, "same STAN, different request")
            again = Message(f"{int(msg.mti) + 10:04d}", fields, header=msg.header,
                            tpdu=swap_tpdu(msg.tpdu))
            return _Reply(again, self._mac_for(again, mak),
                          f"-> {fields.get('39')} (repeat, stored reply)")

        ctx = _Ctx(msg=msg, tid=tid or "", batch=batch, stan=stan, current_batch=term.batch,
                   pik=pik, mak=mak, knobs=knobs)
        with self.ledger.atomic():
            if msg.mti == "0500":
                outcome = self._settlement(ctx)
            elif msg.mti == "0320":
                outcome = self._batch_upload(ctx)
            elif msg.mti == "0620":
                outcome = self._script_result(ctx)
            elif kind is None:
                # Not booked, not remembered: nothing in the table matches.
                return self._reply(msg, "40" if _BY_TYPE_CODE.get(f.get("60", "")[:2]) is None
                                   else "30", mak, "not a transaction of the table")
            elif msg.mti == "0400":
                outcome = self._reversal(ctx, kind)
            else:
                outcome = self._financial(ctx, kind)
            if outcome.store:
                self.ledger.store_reply(ctx.tid, batch, stan, msg.mti, _fingerprint(msg),
                                        outcome.reply.message.fields)
        return outcome.reply

    def _mac_for(self, message: Message, mak: bytes) -> bytes | None:
        # The dialect's rule, shared with the terminal (messages.reply_needs_mac): MAC on
        # approvals and on every 0410 and 0230; never on sign-on/off, echo, settlement or upload.
        return mak if reply_needs_mac(message.mti, message.fields.get("39")) else None

    def _plain(self, msg: Message, code: str, summary: str) -> _Reply:
        """A reply without MAC (no keys to compute one, or a management message)."""
        return _Reply(response_for(msg, code, _now_fields()), None, f"-> {code} ({summary})")

    def _reply(self, msg: Message, code: str, mak: bytes, summary: str,
               extra: dict[str, str] | None = None) -> _Reply:
        message = response_for(msg, code, {**_now_fields(), **(extra or {})})
        return _Reply(message, self._mac_for(message, mak), f"-> {code} ({summary})")

    def _sign_on(self, msg: Message, tid: str, batch: int) -> _Reply:
        network_code = msg.fields.get("60", "")[8:11]
        if network_code not in ("003", "004"):
            return self._plain(msg, "40", f"sign-on network code {network_code!r}")
        tmk = self.ledger.tmk(tid)
        assert tmk is not None  # terminal_status found it
        keys = generate_working_keys(with_tdk=network_code == "004")
        self.ledger.sign_on(tid, keys.pik, keys.mak, keys.tdk)
        extra = {
            **_now_fields(),
            "32": ACQUIRER_ID,
            "37": self.ledger.next_rrn(),
            "60": f"00{batch:06d}{network_code}",
            "62": build_signon_keys(keys, tmk, self.mak_check),
        }
        reply = response_for(msg, "00", extra)
        processing = self._processing_for(tid, msg.header.app_type)
        if processing != "0":
            reply = dataclasses.replace(
                reply, header=dataclasses.replace(reply.header, processing=processing))
        return _Reply(reply, None, f"-> 00 (signed on, batch {batch:06d}, keys {keys!r}, "
                                   f"processing {processing})")

    def params_versions(self) -> dict[str, str]:
        """The version of each served table: a digest of what it holds."""
        capk = hashlib.sha1(b"".join(pd.capk_62(k).encode() for k in self.capks))
        aid = hashlib.sha1(b"".join(pd.aid_62(a).encode() for a in self.aid_params))
        return {"capk": capk.hexdigest()[:12].upper(), "aid": aid.hexdigest()[:12].upper()}

    def _processing_for(self, tid: str, app_type: str) -> str:
        """Header processing requirement of a sign-on reply: 4 "update the CA keys" or 5
        "download the IC card parameters" when an IC terminal (header application type 61)
        lacks the tables served now; a magstripe terminal (60) is never asked."""
        if app_type != "61":
            return "0"
        versions = self.params_versions()
        if self.ledger.params_version(tid, "capk") != versions["capk"]:
            return "4"
        if self.ledger.params_version(tid, "aid") != versions["aid"]:
            return "5"
        return "0"

    def _param_download(self, msg: Message, tid: str, network: str) -> _Reply:
        """0820/372 and 382 (query, paged), 0800/370 and 380 (one key / AID), 371 and 381
        (end: the terminal has the current version)."""
        raw = bytes.fromhex(msg.fields.get("62", ""))
        if network in (pd.CAPK_QUERY, pd.AID_QUERY):
            start = int(raw[1:3]) if len(raw) == 3 and raw[1:3].isdigit() else 0
            table = self.capks if network == pd.CAPK_QUERY else self.aid_params
            page = table[start:start + _QUERY_PAGE]
            more = start + _QUERY_PAGE < len(table)
            f62 = (pd.capk_query_62(page, more) if network == pd.CAPK_QUERY  # type: ignore[arg-type]
                   else pd.aid_query_62(page, more))  # type: ignore[arg-type]
            return _Reply(response_for(msg, "00", {**_now_fields(), "62": f62}), None,
                          f"-> 00 ({len(page)} of {len(table)} listed from {start})")
        if network in (pd.CAPK_END, pd.AID_END):
            table_name = "capk" if network == pd.CAPK_END else "aid"
            self.ledger.params_done(tid, table_name, self.params_versions()[table_name])
            return self._plain(msg, "00", f"{table_name} download ended")
        try:
            asked = tlv.decode(raw, flatten=True)
        except (tlv.DecodeError, ValueError):
            return self._plain(msg, "30", "field 62 is not TLV")
        if network == pd.CAPK_DOWNLOAD:
            rid, index = asked.get("9F06", b""), asked.get("9F22", b"\xff")[0]
            key = next((k for k in self.capks if k.rid == rid and k.index == index), None)
            f62 = pd.capk_62(key)
        else:
            aid = asked.get("9F06", b"")
            params = next((a for a in self.aid_params if a.aid == aid), None)
            f62 = pd.aid_62(params)
        return _Reply(response_for(msg, "00", {**_now_fields(), "62": f62}), None,
                      f"-> 00 (62 status {bytes.fromhex(f62)[:1].decode()})")

    def _rule_or_default(self, ctx: _Ctx, kind: TxnKind, pan: str | None,
                         amount: int) -> tuple[str | None, str]:
        """(code of a declining rule or None, why). A "00" rule skips built-in declines."""
        code = self.rules.decide(mti=ctx.msg.mti, txn_kind=kind.value, amount=amount, pan=pan,
                                 tid=ctx.tid)
        if code is not None:
            return (None if code == "00" else code), "rule"
        return self._built_in(ctx, kind, pan, amount)

    def _built_in(self, ctx: _Ctx, kind: TxnKind, pan: str | None,
                  amount: int) -> tuple[str | None, str]:
        f = ctx.msg.fields
        if pan is None:
            return "30", "no card number"
        if pan in BLOCKED_PANS:
            return "14", "card on the decline list"
        if not luhn_ok(pan):
            return "14", "PAN fails Luhn"
        card = card_by_pan(pan)
        if kind in _CARD_AUTH_KINDS:
            expiry = _expiry_of(f) or (card.expiry if card else None)
            if expiry is not None and expiry < datetime.now().strftime("%y%m"):
                return "54", "expired card"
        if "52" in f:
            try:
                pin = decrypt_pin(bytes.fromhex(f["52"]), pan, ctx.pik)
            except (HostError, ValueError):
                return "99", "PIN block malformed"
            if card is not None and card.pin is not None and pin != card.pin:
                return "55", "wrong PIN"
        elif kind in _CARD_AUTH_KINDS and card is not None and card.pin is not None:
            return "55", "PIN required"
        if kind in _FUNDS_KINDS and amount % 100 == 51:
            return "51", "amount ends in 51"
        return None, "approved"

    def _financial(self, ctx: _Ctx, kind: TxnKind) -> _Outcome:
        msg, f = ctx.msg, ctx.msg.fields
        if msg.mti != "0220" and ctx.batch != ctx.current_batch:
            # Advices are store-and-forward and may carry an older batch; requests may not.
            return _Outcome(self._reply(msg, "77", ctx.mak,
                                        f"batch {ctx.batch:06d}, host has "
                                        f"{ctx.current_batch:06d}"), store=False)
        pan = _pan_of(f)
        amount = int(f.get("4", "0"))
        currency = f.get("49", "156")

        orig: TxnRow | None = None
        chip = self._chip_check(ctx, pan or "") if is_chip_request(msg) else None
        if msg.mti != "0220" and self.ledger.reversal_seen(ctx.tid, ctx.batch, ctx.stan):
            code, why = LATE_ORIGINAL_CODE, "arrived after its own reversal"
        elif chip is not None and not chip.ok:
            # An ARQC that does not verify, or a replayed ATC: "05", and no 91.
            code, why = "05", f"chip: {chip.why}"
        else:
            code, why = self._rule_or_default(ctx, kind, pan, amount)
            if code is None:
                code, why, orig = self._check_original(ctx, kind, amount)

        if msg.mti == "0220" and advice_answer(code) == "retry":
            # "Try again" to an advice (96, 91, A0 ...): neither booked nor remembered, so the
            # terminal's resend of the same STAN is decided afresh.
            return _Outcome(self._reply(msg, code, ctx.mak, why), store=False)
        extra: dict[str, str] = {}
        rrn = auth = None
        if code == "00":
            rrn, auth = self.ledger.next_rrn(), f"{secrets.randbelow(1_000_000):06d}"
            card = card_by_pan(pan or "")
            org = card.org if card else org_for_pan(pan or "")
            extra = {"32": ACQUIRER_ID, "37": rrn, "38": auth, "44": institution_field(org), "63": org}
            if kind is TxnKind.BALANCE:
                extra["54"] = balance_field54(card.balance if card else 0, currency)
        if chip is not None:
            self._book_chip_auth(ctx, pan or "", chip, code)
            if chip.ok:
                extra["55"] = chip_issuer.reply_55(
                    chip, code, wrong_arpc=FaultKind.WRONG_ARPC in ctx.knobs,
                    block_script=FaultKind.SCRIPT_BLOCK in ctx.knobs,
                    harmless_script=FaultKind.SCRIPT_HARMLESS in ctx.knobs)
                if ctx.knobs:
                    why += f" (knobs: {', '.join(sorted(ctx.knobs))})"
        ref = f.get("61", "")
        txn_id = self.ledger.insert_txn(
            tid=ctx.tid, batch=ctx.batch, stan=ctx.stan, mti=msg.mti, kind=kind.value,
            amount=amount, currency=currency, pan_masked=mask_pan(pan or ""),
            foreign=is_foreign(pan or ""), rrn=rrn, auth=auth, response_code=code, orig=orig,
            orig_batch=int(ref[0:6]) if len(ref) >= 12 else None,
            orig_stan=int(ref[6:12]) if len(ref) >= 12 else None,
            orig_rrn=f.get("37"), orig_auth=f.get("38"))
        if code == "00" and kind in _VOIDS and orig is not None:
            self.ledger.set_voided_by(orig.id, txn_id)
        return _Outcome(self._reply(msg, code, ctx.mak, why, extra), store=True)

    def _chip_check(self, ctx: _Ctx, pan: str) -> chip_issuer.ChipCheck:
        """The issuer's verdict on a chip request's ARQC, the ATC replay check included."""
        f = ctx.msg.fields
        check = chip_issuer.verify_arqc(f["55"], pan, f.get("23"), self.issuer_lookup)
        if check.ok and check.atc is not None and self.ledger.atc_seen(
                chip_issuer.card_key(pan, f.get("23") or "00"), check.atc):
            return dataclasses.replace(check, ok=False,
                                       why=f"ATC {check.atc} replayed (already authorised)")
        return check

    def _book_chip_auth(self, ctx: _Ctx, pan: str, chip: chip_issuer.ChipCheck,
                        code: str) -> None:
        self.ledger.record_chip(
            tid=ctx.tid, batch=ctx.batch, stan=ctx.stan, mti=ctx.msg.mti, event="auth",
            card_key=chip_issuer.card_key(pan, ctx.msg.fields.get("23") or "00"),
            atc=chip.atc, cryptogram=chip.arqc, tvr=chip.tvr,
            result="ok" if chip.ok else "refused", why=chip.why, detail=f"39={code}")

    def _book_chip_event(self, ctx: _Ctx, event: str, why: str) -> str | None:
        """Book a reversal's, script advice's or upload's 55 (ATC, cryptogram, TVR, DF31);
        the 55's problem in words when it is not TLV, else None."""
        f = ctx.msg.fields
        try:
            tags = chip_issuer.decode_55(f["55"])
        except ValueError as exc:
            return str(exc)
        atc = tags.get("9F36")
        pan = _pan_of(f) or ""
        self.ledger.record_chip(
            tid=ctx.tid, batch=ctx.batch, stan=ctx.stan, mti=ctx.msg.mti, event=event,
            card_key=chip_issuer.card_key(pan, f.get("23") or "00") if pan else None,
            atc=int.from_bytes(atc, "big") if atc else None, cryptogram=tags.get("9F26"),
            tvr=tags.get("95"), result="ok", why=why,
            detail=f"DF31={tags['DF31'].hex().upper()}" if "DF31" in tags else None)
        return None

    def _script_result(self, ctx: _Ctx) -> _Outcome:
        """0620 issuer-script result advice: booked with its DF31 and acknowledged (0630)."""
        msg = ctx.msg
        network = msg.fields.get("60", "")[8:11]
        if network != _SCRIPT_ADVICE_NETWORK:
            return _Outcome(self._reply(msg, "40", ctx.mak, f"0620 network code {network!r}"),
                            store=False)
        if "55" not in msg.fields:
            return _Outcome(self._reply(msg, "30", ctx.mak, "script advice without 55"),
                            store=False)
        ref = msg.fields.get("61", "")
        problem = self._book_chip_event(ctx, "script_result",
                                        f"script result of {ref[:6]}/{ref[6:12]}")
        if problem is not None:
            return _Outcome(self._reply(msg, "30", ctx.mak, problem), store=False)
        return _Outcome(self._reply(msg, "00", ctx.mak, "script result booked"), store=True)

    def _check_original(self, ctx: _Ctx, kind: TxnKind,
                        amount: int) -> tuple[str, str, TxnRow | None]:
        """Find and check the original of a void, completion or refund; "00" if fine."""
        f = ctx.msg.fields
        if kind in (TxnKind.SALE, TxnKind.PREAUTH, TxnKind.BALANCE):
            return "00", "approved", None
        ref = f.get("61", "")
        ref_batch = int(ref[0:6]) if len(ref) >= 12 else None
        ref_stan = int(ref[6:12]) if len(ref) >= 12 else None

        if kind is TxnKind.REFUND:
            orig = self.ledger.by_rrn(ctx.tid, f.get("37", ""))
            # A refund whose original is not at hand names no batch and trace: 61.1 and 61.2
            # are zeros, and the RRN (with the date) finds the original alone.
            named = bool(ref_batch or ref_stan)
            if (orig is None or orig.kind not in ("sale", "completion")
                    or orig.state != "approved"
                    or (named and (orig.batch, orig.stan) != (ref_batch, ref_stan))):
                return "25", "original not found", None
            if orig.voided:
                return "12", "original already voided", orig
            refunded = sum(r.amount for r in self.ledger.live_children(orig.id, "refund"))
            if refunded + amount > orig.amount:
                return "61", f"refunds would exceed the original ({orig.amount})", orig
            return "00", "refund accepted", orig

        if ref_batch is None or ref_stan is None:
            return "30", "field 61 missing", None
        orig_kind = TxnKind.PREAUTH if kind is TxnKind.COMPLETION else _VOIDS[kind]
        orig_mti = WIRE[orig_kind].mti
        orig = self.ledger.original(ctx.tid, ref_batch, ref_stan, (orig_mti,))
        if (orig is None or orig.kind != orig_kind.value or orig.state != "approved"
                or ("38" in f and f["38"] != orig.auth)
                or ("37" in f and f["37"] != orig.rrn)):
            return "25", "original not found", None
        if orig.voided:
            return "12", "original already voided", orig
        if kind in (TxnKind.VOID, TxnKind.COMPLETION_VOID) and \
                self.ledger.live_children(orig.id, "refund"):
            # The money went back once already: a void would pay it out a second time.
            return "12", "original already refunded", orig
        if kind in (TxnKind.VOID, TxnKind.COMPLETION_VOID) and orig.batch != ctx.current_batch:
            return "12", "original is in a settled batch", orig
        if kind in (TxnKind.COMPLETION, TxnKind.PREAUTH_VOID) and \
                self.ledger.live_children(orig.id, "completion"):
            return "12", "pre-auth already completed", orig
        if kind is TxnKind.COMPLETION:
            if amount > orig.amount:
                return "61", f"completion above the pre-auth ({orig.amount})", orig
            return "00", "completion", orig
        if amount != orig.amount:
            return "64", f"amount differs from the original ({orig.amount})", orig
        return "00", "void", orig

    def _reversal(self, ctx: _Ctx, kind: TxnKind) -> _Outcome:
        msg = ctx.msg
        code = self.rules.decide(mti="0400", txn_kind=kind.value,
                                 amount=int(msg.fields.get("4", "0")),
                                 pan=_pan_of(msg.fields), tid=ctx.tid)
        if code is not None and code != "00":
            # A failing reversal is not remembered: the terminal retries the same STAN.
            return _Outcome(self._reply(msg, code, ctx.mak, "reversal refused by rule"),
                            store=False)
        orig = self.ledger.original(ctx.tid, ctx.batch, ctx.stan, ("0100", "0200"))
        reason = msg.fields.get("39")
        if "55" in msg.fields:
            # The chip data of the reversal (its 9F36 names the cryptogram cancelled): booked
            # whatever becomes of the reversal itself; a malformed 55 is logged, not fatal.
            problem = self._book_chip_event(ctx, "reversal", f"reversal, reason {reason}")
            if problem is not None:
                log.warning("reversal %06d: %s", ctx.stan, problem)
        if orig is None:
            # Tombstone: should the original still arrive, it is refused (never approved).
            self.ledger.record_reversal(tid=ctx.tid, batch=ctx.batch, stan=ctx.stan,
                                        orig_id=None, reason=reason, response_code="25")
            return _Outcome(self._reply(msg, "25", ctx.mak, "original not found"), store=True)
        why = f"original {orig.kind} was {orig.state}"
        if orig.state == "approved":
            self.ledger.mark_reversed(orig.id)
            if orig.orig_id is not None and TxnKind(orig.kind) in _VOIDS:
                parent = self.ledger.get(orig.orig_id)
                if parent is not None and parent.voided_by == orig.id:
                    self.ledger.set_voided_by(parent.id, None)  # the void never happened
            why = f"{orig.kind} reversed"
        self.ledger.record_reversal(tid=ctx.tid, batch=ctx.batch, stan=ctx.stan,
                                    orig_id=orig.id, reason=reason, response_code="00")
        return _Outcome(self._reply(msg, "00", ctx.mak, why), store=True)

    def _refused_by_rule(self, ctx: _Ctx) -> _Outcome | None:
        """A settlement or upload refused by a rule naming its MTI (and 60.3): not processed,
        not remembered, so the terminal's resend of the same STAN is decided afresh."""
        network = ctx.msg.fields.get("60", "")[8:11]
        code = self.rules.decide(mti=ctx.msg.mti, txn_kind=None, amount=None, pan=None,
                                 tid=ctx.tid, network=network)
        if code is None or code == "00":
            return None
        return _Outcome(self._plain(ctx.msg, code, f"{ctx.msg.mti}/{network} refused by rule"),
                        store=False)

    def _settlement(self, ctx: _Ctx) -> _Outcome:
        msg = ctx.msg
        if ctx.batch != ctx.current_batch:
            return _Outcome(self._reply(msg, "77", ctx.mak, "settlement of another batch"),
                            store=False)
        refused = self._refused_by_rule(ctx)
        if refused is not None:
            return refused
        try:
            t_dom, _, t_for, _ = parse_settlement_field48(msg.fields.get("48", ""))
        except RemoteProtocolError as exc:
            return _Outcome(self._reply(msg, "30", ctx.mak, str(exc)), store=False)
        h_dom, h_for = self.ledger.totals(ctx.tid, ctx.batch)
        r_dom = "1" if h_dom == t_dom else "2"
        r_for = "1" if h_for == t_for else "2"
        self.ledger.record_settlement(ctx.tid, ctx.batch, r_dom, r_for, (h_dom, h_for),
                                      (t_dom, t_for))
        extra = {"48": _with_results(msg.fields["48"], r_dom, r_for), "15": _now_fields()["13"]}
        summary = f"settlement domestic {_word(r_dom)}, foreign {_word(r_for)}"
        message = response_for(msg, "00", {**_now_fields(), **extra})
        # No MAC on settlement messages (domain doc section 6).
        return _Outcome(_Reply(message, None, f"-> 00 ({summary})"), store=True)

    def _batch_upload(self, ctx: _Ctx) -> _Outcome:
        msg = ctx.msg
        if ctx.batch != ctx.current_batch:
            return _Outcome(self._plain(msg, "77", "upload for another batch"), store=False)
        refused = self._refused_by_rule(ctx)
        if refused is not None:
            return refused
        network_code = msg.fields.get("60", "")[8:11]
        field48 = msg.fields.get("48", "")
        if network_code == "201":
            try:
                items = _parse_upload(field48)
            except ValueError as exc:
                return _Outcome(self._plain(msg, "30", f"upload field 48: {exc}"), store=False)
            for foreign, trace, pan, amount in items:
                self.ledger.add_upload(ctx.tid, ctx.batch, trace, mask_pan(pan), amount, foreign)
            return _Outcome(self._plain(msg, "00", f"{len(items)} upload item(s)"), store=True)
        if network_code == _CHIP_UPLOAD_NETWORK:
            return self._chip_upload(ctx)
        if network_code in ("202", "207"):
            count = int(field48) if is_digits(field48) else None
            new_batch = self.ledger.close_batch(ctx.tid, ctx.batch, count)
            return _Outcome(self._plain(msg, "00", f"batch {ctx.batch:06d} closed, "
                                                   f"now {new_batch:06d}"), store=True)
        return _Outcome(self._plain(msg, "40", f"upload network code {network_code!r}"),
                        store=False)

    def _chip_upload(self, ctx: _Ctx) -> _Outcome:
        """0320/203: one chip transaction with its 55 (messages.chip_upload_request)."""
        f = ctx.msg.fields
        ref, pan = f.get("61", ""), _pan_of(f)
        if len(ref) < 12 or not is_digits(ref[:12]) or pan is None or "55" not in f:
            return _Outcome(self._plain(ctx.msg, "30", "chip upload needs 2, 55 and 61"),
                            store=False)
        problem = self._book_chip_event(ctx, "upload", f"chip upload of trace {ref[6:12]}")
        if problem is not None:
            return _Outcome(self._plain(ctx.msg, "30", problem), store=False)
        self.ledger.add_upload(ctx.tid, ctx.batch, int(ref[6:12]), mask_pan(pan),
                               int(f.get("4", "0")), is_foreign(pan))
        return _Outcome(self._plain(ctx.msg, "00", "1 chip upload item"), store=True)

    # ---- control interface ---------------------------------------------------

    async def _on_control(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = self.control(json.loads(line))
                except Exception as exc:  # every bad command gets words, not a dead port
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    def control(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one control command (the JSON-lines protocol, also callable directly)."""
        if not isinstance(request, dict) or "cmd" not in request:
            return {"ok": False, "error": 'a command is a JSON object with "cmd"'}
        args = dict(request)
        cmd = args.pop("cmd")
        if cmd == "ping":
            return {"ok": True, "pong": True}
        if cmd == "fault":
            return {"ok": True, "fault": self.add_fault(Fault.from_json(args)).to_json()}
        if cmd == "clear_faults":
            self.clear_faults()
            return {"ok": True}
        if cmd == "rule":
            return {"ok": True, "rule": self.add_rule(Rule.from_json(args)).to_json()}
        if cmd == "clear_rules":
            self.clear_rules()
            return {"ok": True}
        if cmd == "register":
            self.register_terminal(args["tid"], args["mid"], bytes.fromhex(args["tmk"]))
            return {"ok": True}
        if cmd == "unbind":
            if not self.unbind(args["tid"]):
                return {"ok": False, "error": f"unknown terminal {args['tid']}"}
            return {"ok": True}
        if cmd == "status":
            status = self.ledger.terminal_status(args["tid"])
            if status is None:
                return {"ok": False, "error": f"unknown terminal {args['tid']}"}
            return {"ok": True, **status.to_json()}
        if cmd == "ledger":
            batch = args.get("batch")
            rows = self.ledger.rows(args["tid"], None if batch is None else int(batch))
            return {"ok": True, "rows": [r.to_json() for r in rows]}
        if cmd == "totals":
            dom, foreign = self.ledger.totals(args["tid"], int(args["batch"]))
            return {"ok": True, "domestic": dataclasses.asdict(dom),
                    "foreign": dataclasses.asdict(foreign)}
        if cmd == "settlements":
            return {"ok": True, "settlements": self.ledger.settlements(args["tid"])}
        if cmd == "chip_log":
            return {"ok": True, "chip_log": self.ledger.chip_log(args["tid"])}
        if cmd == "uploads":
            return {"ok": True, "uploads": self.ledger.uploads(args["tid"], int(args["batch"]))}
        return {"ok": False, "error": f"unknown command {cmd!r}"}


@dataclass
class _Ctx:
    """What every decision about one message needs."""

    msg: Message
    tid: str
    batch: int
    stan: int
    current_batch: int
    pik: bytes
    mak: bytes
    knobs: frozenset[FaultKind] = frozenset()  # chip knobs acting on this message


@dataclass
class _Outcome:
    """A processed message's reply; store=True keeps it for repeats of the same STAN."""

    reply: _Reply
    store: bool


def _parse_upload(field48: str) -> list[tuple[bool, int, str, int]]:
    """(foreign, trace, PAN, amount) items of a batch-upload 0320's field 48.

    Inverse of firmware.host.messages.batch_upload_request, which has no parser of its own.
    """
    if len(field48) < 2 or not is_digits(field48[:2]):
        raise ValueError("no item count")
    count = int(field48[:2])
    body = field48[2:]
    if not 1 <= count <= 8 or len(body) != count * _UPLOAD_ITEM_LEN:
        raise ValueError(f"{count} item(s) announced, {len(body)} digits follow")
    items = []
    for i in range(count):
        item = body[i * _UPLOAD_ITEM_LEN:(i + 1) * _UPLOAD_ITEM_LEN]
        if item[:2] not in ("00", "01"):
            raise ValueError(f"item {i + 1}: card organisation {item[:2]}")
        items.append((item[:2] == "01", int(item[2:8]), item[8:28].lstrip("0"),
                      int(item[28:40])))
    return items


def _garbage(framed: bool) -> bytes:
    body = bytearray(secrets.token_bytes(16 + secrets.randbelow(48)))
    if framed:
        # A valid length prefix, but the payload cannot start with the TPDU id 60.
        if body[0] == 0x60:
            body[0] = 0x61
        return len(body).to_bytes(2, "big") + bytes(body)
    # Raw bytes: a first byte >= 0x80 makes any length prefix read from them larger than
    # MAX_FRAME, so the receiver fails at once instead of waiting for more.
    body[0] |= 0x80
    return bytes(body)


def _word(result: str) -> str:
    return {"1": "balanced", "2": "unbalanced"}.get(result, "error")


def _describe(msg: Message, kind: TxnKind | None) -> str:
    """One log line's head: masked PAN only, never tracks, PIN blocks or keys."""
    f = msg.fields
    parts = [f.get("41", "?"), msg.mti, kind.value if kind else "-",
             f"stan={f.get('11', '-')}", f"batch={f.get('60', '')[2:8] or '-'}"]
    if "4" in f:
        parts.append(f"amount={int(f['4'])}")
    pan = _pan_of(f)
    if pan:
        parts.append(f"pan={mask_pan(pan)}")
    return " ".join(parts)


def _log_task_error(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("simulator task failed", exc_info=task.exception())


class SimulatorThread:
    """The simulator in a background thread with its own event loop, for sync callers.

        with SimulatorThread(db_path) as sim:
            sim.register_terminal("12345678", "123456789012345", tmk)
            ... connect to ("127.0.0.1", sim.port) ...
            sim.add_fault("drop", mti="0200")
            assert sim.ledger.approved("12345678")

    Knob methods run inside the loop thread (call()); the ledger is safe to query from
    any thread (it serialises on its own lock).
    """

    def __init__(self, db_path: str | Path, *, port: int = 0, control_port: int | None = 0,
                 terminals: Iterable[tuple[str, str, bytes]] = (),
                 mak_check: str = DEFAULT_MAK_CHECK, tls: ssl.SSLContext | None = None,
                 mac_algorithm: str = DEFAULT_MAC_ALGORITHM) -> None:
        self._db_path = db_path
        self._mak_check = mak_check
        self._mac_algorithm = mac_algorithm
        self._tls = tls
        self._port = port
        self._control_port = control_port
        self._terminals = list(terminals)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.sim: AcquirerSimulator | None = None

    def __enter__(self) -> SimulatorThread:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="acquirer-sim", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError("acquirer simulator failed to start") from self._error
        if self.sim is None:
            raise RuntimeError("acquirer simulator did not start within 10 s")

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            sim = AcquirerSimulator(self._db_path, port=self._port,
                                    control_port=self._control_port, mak_check=self._mak_check,
                                    tls=self._tls, mac_algorithm=self._mac_algorithm)
            for tid, mid, tmk in self._terminals:
                sim.register_terminal(tid, mid, tmk)
            loop.run_until_complete(sim.start())
            self.sim = sim
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(sim.stop())
            # Connection handlers still waiting on a read: cancel them before closing.
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def call(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run fn(*args, **kw) in the simulator's loop thread and return its result."""
        assert self._loop is not None, "simulator not started"

        async def run() -> T:
            return fn(*args, **kw)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    @property
    def _sim(self) -> AcquirerSimulator:
        assert self.sim is not None, "simulator not started"
        return self.sim

    @property
    def port(self) -> int:
        return self._sim.port

    @property
    def control_port(self) -> int | None:
        return self._sim.control_port

    @property
    def ledger(self) -> Ledger:
        return self._sim.ledger

    def register_terminal(self, tid: str, mid: str, tmk: bytes) -> None:
        self.call(self._sim.register_terminal, tid, mid, tmk)

    def unbind(self, tid: str) -> bool:
        return self.call(self._sim.unbind, tid)

    def add_fault(self, fault: Fault | FaultKind | str, **kw: Any) -> Fault:
        return self.call(self._sim.add_fault, fault, **kw)

    def add_rule(self, rule: Rule | str | None = None, **kw: Any) -> Rule:
        return self.call(self._sim.add_rule, rule, **kw)

    def clear_faults(self) -> None:
        self.call(self._sim.clear_faults)

    def clear_rules(self) -> None:
        self.call(self._sim.clear_rules)

    def totals(self, tid: str, batch: int) -> tuple[SideTotals, SideTotals]:
        return self.ledger.totals(tid, batch)


# ---- CLI --------------------------------------------------------------------

def _parse_register(text: str) -> tuple[str, str, bytes]:
    parts = text.split(":")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected TID:MID:TMKHEX")
    tid, mid, tmk_hex = parts
    try:
        tmk = bytes.fromhex(tmk_hex)
    except ValueError:
        raise argparse.ArgumentTypeError("the TMK must be hex") from None
    if len(tmk) != 16:
        raise argparse.ArgumentTypeError("the TMK must be 16 bytes (32 hex digits)")
    return tid, mid, tmk


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = AcquirerSimulator(args.db, port=args.port,
                            control_port=None if args.control_port < 0 else args.control_port,
                            mak_check=args.mak_check, mac_algorithm=args.mac_algorithm)
    terminals = list(args.register)
    if args.test_terminal:
        terminals.append((TEST_TID, TEST_MID, TEST_TMK))
    for tid, mid, tmk in terminals:
        sim.register_terminal(tid, mid, tmk)
    await sim.start()
    print(f"acquirer simulator listening on {sim.host}:{sim.port} (control {sim.control_port})",
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m board.sim.acquirer",
                                     description="CUP ISO 8583 acquirer host simulator")
    parser.add_argument("--db", required=True, help="SQLite ledger file")
    parser.add_argument("--port", type=int, default=0, help="host port (0 = any free port)")
    parser.add_argument("--control-port", type=int, default=0,
                        help="JSON-lines control port (0 = any free port, -1 = none)")
    parser.add_argument("--register", type=_parse_register, action="append", default=[],
                        metavar="TID:MID:TMKHEX", help="register a terminal (repeatable)")
    parser.add_argument("--test-terminal", action="store_true",
                        help=f"also register the test terminal {TEST_TID} "
                             "(board.sim.testkit: TEST_TID, TEST_MID, TEST_TMK)")
    parser.add_argument("--mak-check", choices=MAK_CHECK_CONVENTIONS, default=DEFAULT_MAK_CHECK,
                        help="over what the MAK's check value in field 62 is computed: first8 "
                             "(the 8 bytes the MAC uses) or full16 (the whole key); the "
                             "terminal's comms.mak_check must say the same")
    parser.add_argument("--mac-algorithm", choices=MAC_ALGORITHMS, default=DEFAULT_MAC_ALGORITHM,
                        help="the MAC of field 64: cup_ecb (the dialect's) or x9_19 (ISO 9797-1 "
                             "algorithm 3, double-length MAK); the terminal's "
                             "comms.mac_algorithm must say the same")
    parser.add_argument("--quiet", action="store_true", help="log warnings only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        asyncio.run(_serve_forever(args))
    except OSError as exc:
        print(f"acquirer simulator: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
