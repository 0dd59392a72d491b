"""The ECR link server: JSON lines over TCP (loopback by default) or a serial port.

Theory of operation: each peer (a TCP connection, or the serial port) feeds its bytes to a
LineFramer; every complete line becomes a task that answers it (`_handle`), so that `cancel`
and `status` are heard while an operation runs (one operation at a time; anything else gets
"busy"). `_handle` is the reply guarantee: whatever happens inside, exactly one reply line is
queued for the peer. On the way in: the paired-till gate (ecr_gate.py: the till, its seq and
MAC; a till's `pair` and `pair_confirm` go to the pairing window), the fields (firmware/ecr/protocol.py),
the board's card-data rule (`dispatch`, for every op), then the repeat rule (ecr_repeats.py).
A paired till's reply is sealed with its key (firmware/ecr/auth.py sealed_line). On the way
out, a peer's output is bounded: a peer that does not read its replies is not read from
either, and its replies are dropped past OUTPUT_CAP (serial) or its connection closed (TCP),
so it can neither block nor spin the terminal. TCP connections are capped in number and
closed when idle (settings).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import os
import termios
import time
import tty
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from firmware.app.core.contract import OperatorInput
from firmware.app.frontends.ecr_gate import UNAUTHENTICATED, Admitted, Pairing, Seal, TillGate
from firmware.app.frontends.ecr_refusals import RefusalLog
from firmware.app.frontends.ecr_repeats import RepeatGate
from firmware.app.frontends.ecr_replies import failed_inside, language, record_state, refusal, result_payload
from firmware.ecr.auth import sealed_line
from firmware.ecr.protocol import (
    CARD_DATA_FIELDS,
    FINANCIAL_OPS,
    PRINT_OPS,
    EcrError,
    EcrRequest,
    LineFramer,
    Overlong,
    encode_response,
    overlong_message,
    parse_object,
    parse_request,
)
from firmware.engine.model import CardRead, OriginalRef, RequestKey, TxnRequest, TxnResult
from firmware.host.messages import TxnKind
from firmware.i18n import text
from firmware.journal.errors import JournalError

if TYPE_CHECKING:
    from firmware.app.terminal import Terminal

log = logging.getLogger("posfw.ecr")

VOUCHER_KINDS = {
    "void": TxnKind.VOID,
    "preauth_void": TxnKind.PREAUTH_VOID,
    "completion": TxnKind.COMPLETION,
    "completion_void": TxnKind.COMPLETION_VOID,
}
READ_SIZE = 4096
# Replies waiting for a peer that does not read: the largest reply (a print job or held order
# list) is a few kB, so 256 kB is many replies behind, and little memory on the device.
OUTPUT_CAP = 256 * 1024
TCP_HIGH_WATER = 16 * 1024  # above this a TCP peer's requests are not read until it catches up


# A board whose ECR link may name test cards ("card": "visa") plugs in what turns a name into card
# data (board/sim/firmware.py); unknown names raise LookupError with words for the till. The
# firmware itself ships without test cards.
TestCards = Callable[[str], CardRead]
NO_TEST_CARDS = "test cards come with the sim board's entry point: python -m board.sim.firmware"


# -- peers ----------------------------------------------------------------------------------------

class Peer(abc.ABC):
    """One ECR peer: who it is (`source`: audits, passwords and repeat keys name it), its line
    framing, how many of its requests are running, and its bounded output."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.framer = LineFramer()
        self.running = 0
        self.last_active = time.monotonic()

    def send(self, payload: dict[str, Any], seal: Seal | None = None) -> None:
        """Queue one reply line (sealed with a paired till's key: its till, seq and MAC);
        never blocks, never raises."""
        self.send_line(encoded(payload, seal))

    @abc.abstractmethod
    def send_line(self, data: bytes) -> None:
        """Queue one encoded reply line; never blocks, never raises."""


def encoded(payload: dict[str, Any], seal: Seal | None) -> bytes:
    """The reply line: as encode_response makes it, or, for a paired till, the same content
    (made encodable first) with its till and seq, canonical and MACed under its key."""
    line = encode_response(payload)
    if seal is None:
        return line
    try:
        return sealed_line({**json.loads(line), "till": seal.till, "seq": seal.seq}, seal.key)
    except Exception:  # never: encode_response's line is canonical-encodable; still one reply
        log.exception("ECR reply to till %s not sealed", seal.till)
        return line


class TcpPeer(Peer):
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        # The address without the port: a till that reconnects comes from a new port.
        super().__init__(f"ecr tcp {peer[0] if peer else 'unknown'}")
        self.writer = writer
        writer.transport.set_write_buffer_limits(high=TCP_HIGH_WATER)

    def send_line(self, data: bytes) -> None:
        if self.writer.is_closing():
            return
        waiting = self.writer.transport.get_write_buffer_size()
        if waiting + len(data) > OUTPUT_CAP:
            log.warning("ECR %s does not read its replies (%d bytes waiting): connection closed",
                        self.source, waiting)
            self.writer.transport.abort()
            return
        self.writer.write(data)
        self.last_active = time.monotonic()


class SerialPeer(Peer):
    """The serial port's output: written when the port takes it (the event loop says when)."""

    def __init__(self, fd: int, path: str) -> None:
        super().__init__(f"ecr serial {path}")
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()
        self._watching = False
        self._closed = False
        self.drained = asyncio.Event()
        self.drained.set()

    def send_line(self, data: bytes) -> None:
        if self._closed:
            return
        if len(self._out) + len(data) > OUTPUT_CAP:
            # Keep the rest of the line under way, so the peer's next line starts clean.
            keep = self._out.find(b"\n") + 1
            log.warning("ECR %s does not read its replies: %d bytes of replies dropped",
                        self.source, len(self._out) - keep + len(data))
            del self._out[keep:]
            return
        self._out += data
        self._flush()

    def _flush(self) -> None:
        try:
            written = os.write(self._fd, self._out)
        except BlockingIOError:
            written = 0
        except OSError as exc:
            log.warning("ECR %s: reply not written (%s)", self.source, exc.strerror or exc)
            written = len(self._out)
        del self._out[:written]
        if self._out and not self._watching:
            self._loop.add_writer(self._fd, self._flush)
            self._watching = True
        elif not self._out and self._watching:
            self._loop.remove_writer(self._fd)
            self._watching = False
        if self._out:
            self.drained.clear()
        else:
            self.drained.set()

    def close(self) -> None:
        if self._watching:
            self._loop.remove_writer(self._fd)
        self._closed = True


# -- the server -----------------------------------------------------------------------------------

class EcrServer:
    def __init__(self, terminal: Terminal, host: str, port: int, serial_path: str | None = None, *,
                 test_cards: TestCards | None = None) -> None:
        self.terminal = terminal
        self.host = host
        self.port = port
        self.serial_path = serial_path
        self.test_cards = test_cards
        self.repeats = RepeatGate(terminal)
        self.refusals = RefusalLog(terminal)
        self.gate = TillGate(terminal)
        self._server: asyncio.AbstractServer | None = None
        self._serial_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connections: set[TcpPeer] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.serial_path:
            # Opened and set raw before start() returns (and so before the terminal says it is
            # ready): tty.setraw flushes pending input, which would drop a till's first request.
            try:
                fd = os.open(self.serial_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            except OSError as exc:
                log.error("ECR serial port %s cannot be opened (%s): the ECR link is on TCP only",
                          self.serial_path, exc.strerror or exc)
                return
            with contextlib.suppress(termios.error):
                tty.setraw(fd)
            self._serial_task = asyncio.create_task(self._serve_serial(fd, self.serial_path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._serial_task is not None:
            self._serial_task.cancel()
        for task in list(self._tasks):
            task.cancel()
        for peer in list(self._connections):
            peer.writer.transport.abort()
        self.refusals.flush()

    def _setting(self, name: str, default: int) -> int:
        return int(self.terminal.settings.get("comms", {}).get(name, default))

    # -- transports ---------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = TcpPeer(writer)
        limit = self._setting("ecr_max_connections", 8)
        if len(self._connections) >= limit:
            # One line in words, then closed: the descriptor is back at once.
            reply = refusal("ecr_too_many", language(self.terminal), result="busy")
            peer.send(reply)
            writer.close()
            self.refusals.note(peer.source, "connection", f"{limit} ECR connections already open")
            return
        self._connections.add(peer)
        try:
            await self._read_tcp(peer, reader)
        except ConnectionError:
            pass
        finally:
            self._connections.discard(peer)
            writer.close()

    async def _read_tcp(self, peer: TcpPeer, reader: asyncio.StreamReader) -> None:
        while True:
            idle = self._setting("ecr_idle_timeout_s", 300)
            try:
                # A peer that does not read its replies is not read from either (back-pressure).
                await asyncio.wait_for(peer.writer.drain(), idle)
                chunk = await asyncio.wait_for(reader.read(READ_SIZE), idle)
            except TimeoutError:
                if peer.running or time.monotonic() - peer.last_active < idle:
                    continue
                log.info("ECR %s idle for %d s: connection closed", peer.source, idle)
                return
            if not chunk:
                return
            peer.last_active = time.monotonic()
            self._feed(peer, chunk)

    async def _serve_serial(self, fd: int, path: str) -> None:
        """The same protocol over a serial port (`fd`: open, raw mode, non-blocking)."""
        loop = asyncio.get_running_loop()
        peer = SerialPeer(fd, path)
        readable = asyncio.Event()
        try:
            while True:
                # A peer that does not read its replies is not read from either (back-pressure).
                await peer.drained.wait()
                loop.add_reader(fd, readable.set)
                try:
                    await readable.wait()
                finally:
                    loop.remove_reader(fd)
                readable.clear()
                try:
                    chunk = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:  # hung up: the port would be readable forever (a busy loop)
                    log.error("ECR serial port %s hung up: the serial ECR link is closed", path)
                    return
                self._feed(peer, chunk)
        finally:
            peer.close()
            os.close(fd)

    def _feed(self, peer: Peer, chunk: bytes) -> None:
        for line in peer.framer.feed(chunk):
            if isinstance(line, Overlong):
                reply = {"ok": False, "result": "error", "message": overlong_message()}
                if not self.gate.open:
                    reply.update(UNAUTHENTICATED)
                peer.send(reply)
                self.refusals.note_reply(peer.source, reply)
                continue
            task = asyncio.create_task(self._handle(line, peer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- one request, one reply ---------------------------------------------------------------

    async def _handle(self, line: bytes, peer: Peer) -> None:
        """The reply guarantee: exactly one reply line for the line, whatever happens."""
        reply = failed_inside(language(self.terminal))
        seal: Seal | None = None
        source, audit = peer.source, True
        peer.running += 1
        try:
            # First, before any await: a till's seq numbers are taken in the order it sent them.
            verdict = self.gate.admit(line, peer.source)
            if isinstance(verdict, Admitted):
                seal, source = verdict.seal, verdict.source
                reply = await self._answer(line, verdict)
            elif isinstance(verdict, Pairing):
                reply, audited, seal = await self._pair(verdict, peer.source)
                audit = not audited  # a try at an open window is audited at once, by the window
            else:
                reply = verdict.reply
        except Exception:
            log.exception("ECR request from %s failed inside the terminal", peer.source)
        finally:
            peer.running -= 1
            if seal is None and not self.gate.open and reply.get("result") != "confirm":
                reply = {**reply, **UNAUTHENTICATED}  # says so: no MAC to check
            peer.send(reply, seal)
        if not audit:
            return
        try:
            self.refusals.note_reply(source, reply)
        except Exception:  # the audit is not the reply: never let it take the link down
            log.exception("ECR refusal from %s not recorded", source)

    async def _answer(self, line: bytes, admitted: Admitted) -> dict[str, Any]:
        try:
            if admitted.obj is None:
                req = parse_request(line, self._companion_ops())
            else:
                req = parse_object(admitted.obj, self._companion_ops())
        except EcrError as exc:
            return exc.reply()

        async def run(key: RequestKey | None) -> dict[str, Any]:
            return await self._run(req, admitted.source, key)

        return {"id": req.id, "op": req.op, **await self.repeats.run(req, admitted.source, run)}

    async def _pair(self, pairing: Pairing, source: str) -> tuple[dict[str, Any], bool, Seal | None]:
        """A till's `pair` or `pair_confirm`: the reply, whether the pairing window audited it,
        and for a till just paired the seal of its reply (the new key, seq 0)."""
        from firmware.app.services.tills import answer_pair_request

        if self.terminal.journal is None:
            return {**pairing.envelope, "ok": False, "result": "refused",
                    "message": text("service_mode", language(self.terminal))}, False, None
        reply, audited, key = await answer_pair_request(self.terminal, pairing.request, source)
        seal = None if key is None else Seal(pairing.request.till, 0, key)
        return {**pairing.envelope, **reply}, audited, seal

    async def _run(self, req: EcrRequest, source: str, key: RequestKey | None) -> dict[str, Any]:
        try:
            return await self.dispatch(req, OperatorInput(source=source, request_key=key))
        except EcrError as exc:
            return {"ok": False, "result": "error", "message": str(exc)}
        except Exception:
            # The traceback goes to the log; the till gets words, never the exception's text.
            log.exception("ECR %s from %s failed inside the terminal", req.op, source)
            return failed_inside(language(self.terminal))

    @staticmethod
    def _companion_ops() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        from firmware.app.services.registry import ecr_ops

        return ecr_ops()

    def _check_card_data(self, req: EcrRequest) -> None:
        """Card data never comes over the link on a real board: refused here, for every op,
        before anything runs."""
        given = [name for name in CARD_DATA_FIELDS if name in req.args]
        if given and not self.terminal.board.ecr_accepts_card_data:
            raise EcrError(f"card data ({', '.join(given)}) cannot come over the ECR link on this "
                           "board; present the card at the reader")

    def _test_card(self, name: str) -> CardRead:
        """The card data of a test card named in a request (the sim board's ECR only)."""
        if self.test_cards is None:
            raise EcrError(NO_TEST_CARDS)
        try:
            return self.test_cards(name)
        except LookupError as exc:
            raise EcrError(str(exc)) from None

    async def dispatch(self, req: EcrRequest, origin: OperatorInput | None = None) -> dict[str, Any]:
        """Carry out one checked request; origin: who asked (source) and its repeat key."""
        self._check_card_data(req)
        origin = origin or OperatorInput()
        t = self.terminal
        a = req.args
        lang = language(t)
        if req.op == "status":
            return {"ok": True, **t.status()}
        if req.op == "cancel":
            t.cancel(origin.source)
            return {"ok": True, "result": "cancel requested"}
        if req.op == "present_card":
            t.card_slot.present(self._test_card(a["card"]), a.get("pin"))
            return {"ok": True, "result": "card presented"}
        if req.op in PRINT_OPS:
            return self._printing(req, lang)
        if t.busy:
            return {"ok": False, "result": "busy", "message": t.busy_message(lang)}
        if req.op in FINANCIAL_OPS:
            request, io = self._financial(req, origin)
            payload = result_payload(await t.financial(request, io), lang)
            if t.card_refusal is not None and payload["result"] == "cancelled":
                # no card taken: the reader's last refusal says why (a chip card swiped...)
                payload["card_refused"] = {"key": t.card_refusal,
                                           "message": text(t.card_refusal, lang)}
            return payload
        if req.op == "settle":
            result = await t.settle(a["password"], source=origin.source)
            payload = result_payload(result, lang)
            if result.status == "settled" and t.journal is not None:
                s = t.journal.last_settlement()
                if s is not None:
                    payload.update({"batch": s.batch, "result_domestic": s.result_domestic,
                                    "result_foreign": s.result_foreign,
                                    "uploaded": s.uploaded_count})
            return payload
        if req.op == "last":
            if t.journal is None:
                return {"ok": False, "result": "error", "message": text("service_mode", lang)}
            record = t.journal.last_record()
            if record is None:
                return {"ok": False, "result": "none", "message": "no transaction yet"}
            return {**record_state(record, lang), "ok": True}
        if req.op == "lookup":
            assert t.journal is not None
            record = t.journal.find_by_invoice(a["voucher"], a.get("batch"))
            if record is None:
                return {"ok": False, "result": "none", "message": "no such voucher number in the batch"}
            return {**record_state(record, lang), "ok": True}  # found: ok; result says what happened
        if req.op == "signon":
            ok = await t.sign_on(origin.source)
            return {"ok": ok, "result": "signed on" if ok else "failed",
                    "message": "" if ok else text("sign_on_failed", lang)}
        if req.op == "signoff":
            ok = await t.sign_off(origin.source)
            return {"ok": ok, "result": "signed off" if ok else "failed"}
        if req.op == "echo":
            ok, seconds, detail = await t.echo()
            return {"ok": ok, "result": "echo", "rtt_ms": round(seconds * 1000, 1),
                    "detail": detail}
        if req.op == "set_password":
            result = await t.set_password(a["old"], a["new"], origin.source)
            return result_payload(result, lang)
        if req.op == "resolve_reversal":
            return await self._resolve(req, origin.source)
        from firmware.app.services.registry import for_ecr_op

        companion = for_ecr_op(req.op)
        if companion is not None:
            if "card" in a:  # the held orders' resume and cancel take a card like a sale
                origin = replace(origin, card=self._test_card(a["card"]))
            return await companion.ecr_op(t, req.op, dict(req.args), origin)
        raise EcrError(f"op {req.op} is not available on this board")

    def _printing(self, req: EcrRequest, lang: str) -> dict[str, Any]:
        """Print queue ops: they do not take the operation lock (paper is not money)."""
        from firmware.app.services.printing import job_payload

        desk = self.terminal.prints
        if desk is None:
            return {"ok": False, "result": "error", "message": text("service_mode", lang)}
        a = req.args
        try:
            if req.op == "reprint":
                job = desk.reprint(a.get("voucher"), a.get("batch"))
                if isinstance(job, str):
                    return {"ok": False, "result": "none", "message": text(job, lang)}
                return {"ok": True, "result": "queued", **job_payload(job)}
            if req.op == "print_test":
                return {"ok": True, "result": "queued", **job_payload(desk.test_page())}
            if req.op == "print_jobs":
                jobs = desk.journal.print_jobs(open_only=not a.get("all", False))
                return {"ok": True, "result": "jobs", "jobs": [job_payload(j) for j in jobs],
                        **desk.status()}
            if req.op == "print_cancel":
                action = desk.cancel(a.get("job"))
                return {"ok": True, "result": action.value}
            job = desk.confirm(a["job"], a["print"])
            return {"ok": True, "result": "confirmed" if a["print"] else "dropped", **job_payload(job)}
        except JournalError as exc:
            return {"ok": False, "result": "error", "message": str(exc)}

    def _financial(self, req: EcrRequest, origin: OperatorInput) -> tuple[TxnRequest, OperatorInput]:
        a = req.args
        kind = TxnKind(req.op)
        io = replace(origin, password=a.get("password"), pin=a.get("pin"),
                     card=self._test_card(a["card"]) if "card" in a else None)
        original = None
        if kind in VOUCHER_KINDS.values():
            original = OriginalRef(invoice=a["voucher"])
        elif kind is TxnKind.REFUND:
            # An original from another terminal: its slip's 凭证号 is, on a CUP terminal, the POS
            # trace number 61.2 names (one found here by RRN uses its own STAN instead).
            original = OriginalRef(rrn=a["orig_rrn"], date=a["orig_date"],
                                   trace=a.get("orig_voucher"), batch=a.get("orig_batch"))
        # The till is the operator of its requests (firmware/app/core/operators.py).
        operator = self.terminal.operators.code_for(origin.source)
        return TxnRequest(kind=kind, amount=a.get("amount"), operator=operator,
                          original=original, reference=a.get("ref")), io

    async def _resolve(self, req: EcrRequest, source: str) -> dict[str, Any]:
        t = self.terminal
        assert t.journal is not None
        a = req.args
        if not await t.check_password(a["password"], "manual reversal resolution", source):
            return result_payload(TxnResult("refused", t.password_refused(source)))
        record = t.journal.find_by_invoice(a["voucher"], a.get("batch"))
        if record is None or record.state.value not in ("REVERSAL_DUE", "QUARANTINED"):
            return {"ok": False, "result": "error",
                    "message": "no reversal due and nothing set aside for that voucher number"}
        result = await t.resolve_owed(record.id, a["reason"], source)
        return {**result_payload(result), "ok": result.status == "resolved"}
