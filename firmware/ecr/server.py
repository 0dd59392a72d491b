"""The ECR link server: JSON lines over TCP (loopback by default) or a serial port.

One operation runs at a time; `cancel` and `status` are answered while one
runs, anything else gets "busy". Every request gets exactly one reply line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import tty
from typing import TYPE_CHECKING, Any

from firmware.ecr.protocol import (
    FINANCIAL_OPS,
    MAX_LINE,
    PRINT_OPS,
    EcrError,
    EcrRequest,
    encode_response,
    parse_request,
)
from firmware.engine.model import CardRead, OriginalRef, TxnRequest, TxnResult
from firmware.host.messages import TxnKind
from firmware.i18n import text
from firmware.journal.errors import JournalError

if TYPE_CHECKING:
    from firmware.app import OperatorInput, Terminal

log = logging.getLogger("posfw.ecr")

TRACE_KINDS = {
    "void": TxnKind.VOID,
    "preauth_void": TxnKind.PREAUTH_VOID,
    "completion": TxnKind.COMPLETION,
    "completion_void": TxnKind.COMPLETION_VOID,
}


def result_payload(result: TxnResult, lang: str = "en") -> dict[str, Any]:
    record = result.record
    payload: dict[str, Any] = {
        "ok": result.status in ("approved", "settled"),
        "result": result.status,
        "message": text(result.message_key, lang),
    }
    if result.detail:
        payload["detail"] = result.detail
    if result.response_code:
        payload["code"] = result.response_code
    if result.balance is not None:
        payload["balance"] = result.balance
    if record is not None:
        payload.update({
            "type": record.kind.value, "state": record.state.value, "amount": record.amount,
            "pan": record.pan_masked, "stan": record.stan, "batch": record.batch,
            "invoice": record.invoice, "rrn": record.rrn, "auth": record.auth_code,
            "date": record.local_date, "time": record.local_time, "ref": record.reference,
        })
    return payload


def sim_card(name: str) -> CardRead:
    from board.sim.cards import TEST_CARDS

    card = TEST_CARDS.get(name)
    if card is None:
        raise EcrError(f"unknown test card {name!r}; known: {', '.join(sorted(TEST_CARDS))}")
    return CardRead(entry_mode="swipe", pan=card.pan, expiry=card.expiry,
                    service_code=card.service_code, track2=card.track2)


class EcrServer:
    def __init__(self, terminal: Terminal, host: str, port: int, serial_path: str | None) -> None:
        self.terminal = terminal
        self.host = host
        self.port = port
        self.serial_path = serial_path
        self._server: asyncio.AbstractServer | None = None
        self._serial_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, self.host, self.port, limit=MAX_LINE * 2)
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
            self._serial_task = asyncio.create_task(self._serve_serial(fd))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._serial_task is not None:
            self._serial_task.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lock = asyncio.Lock()

        async def send(payload: dict[str, Any]) -> None:
            async with lock:
                writer.write(encode_response(payload))
                with contextlib.suppress(ConnectionError):
                    await writer.drain()

        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    await send({"ok": False, "result": "error",
                                "message": f"request longer than {MAX_LINE} bytes"})
                    break
                except asyncio.IncompleteReadError:
                    break
                if not line.strip():
                    continue
                task = asyncio.create_task(self._handle(line, send))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _serve_serial(self, fd: int) -> None:
        """The same protocol over a serial port (`fd`: open, raw mode, non-blocking)."""
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        readable = asyncio.Event()
        loop.add_reader(fd, readable.set)

        async def send(payload: dict[str, Any]) -> None:
            data = encode_response(payload)
            while data:
                try:
                    n = os.write(fd, data)
                    data = data[n:]
                except BlockingIOError:
                    await asyncio.sleep(0.01)

        try:
            while True:
                await readable.wait()
                readable.clear()
                try:
                    chunk = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                except OSError:
                    break
                buffer.extend(chunk)
                while b"\n" in buffer:
                    line, _, rest = bytes(buffer).partition(b"\n")
                    buffer[:] = rest
                    if line.strip():
                        # A task per request, so that `cancel` is heard mid-operation.
                        task = asyncio.create_task(self._handle(line, send))
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                if len(buffer) > MAX_LINE:
                    buffer.clear()
                    await send({"ok": False, "result": "error",
                                "message": f"request longer than {MAX_LINE} bytes"})
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    async def _handle(self, line: bytes, send: Any) -> None:
        try:
            request = parse_request(line, self._companion_ops())
        except EcrError as exc:
            await send({"ok": False, "result": "error", "message": str(exc)})
            return
        try:
            payload = await self.dispatch(request)
        except EcrError as exc:
            payload = {"ok": False, "result": "error", "message": str(exc)}
        except Exception as exc:
            log.exception("ECR request %s failed", request.op)
            payload = {"ok": False, "result": "error", "message": f"internal error: {exc}"}
        payload = {"id": request.id, "op": request.op, **payload}
        await send(payload)

    @staticmethod
    def _companion_ops() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        from firmware.app_companions import ecr_ops

        return ecr_ops()

    async def dispatch(self, req: EcrRequest) -> dict[str, Any]:
        t = self.terminal
        a = req.args
        lang = t.settings.get("display", {}).get("language", "en") if t.settings else "en"
        if req.op == "status":
            return {"ok": True, **t.status()}
        if req.op == "cancel":
            t.cancel()
            return {"ok": True, "result": "cancel requested"}
        if req.op == "present_card":
            self._require_sim()
            t.card_slot.present(sim_card(a["card"]), a.get("pin"))
            return {"ok": True, "result": "card presented"}
        if req.op in PRINT_OPS:
            return self._printing(req, lang)
        if t.busy:
            return {"ok": False, "result": "busy", "message": text("busy", lang)}
        if req.op in FINANCIAL_OPS:
            request, io = self._financial(req)
            return result_payload(await t.financial(request, io), lang)
        if req.op == "settle":
            result = await t.settle(a["password"])
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
            return {**result_payload(TxnResult(record.state.value.lower(), record.response_code
                                               or "cancelled", record), lang), "ok": True}
        if req.op == "lookup":
            assert t.journal is not None
            record = t.journal.find_by_trace(a["trace"], a.get("batch"))
            if record is None:
                return {"ok": False, "result": "none", "message": "no such trace in the batch"}
            return {**result_payload(TxnResult(record.state.value.lower(), "approved", record),
                                     lang), "ok": True}
        if req.op == "signon":
            ok = await t.sign_on()
            return {"ok": ok, "result": "signed on" if ok else "failed",
                    "message": "" if ok else text("sign_on_failed", lang)}
        if req.op == "signoff":
            ok = await t.sign_off()
            return {"ok": ok, "result": "signed off" if ok else "failed"}
        if req.op == "echo":
            ok, seconds, detail = await t.echo()
            return {"ok": ok, "result": "echo", "rtt_ms": round(seconds * 1000, 1),
                    "detail": detail}
        if req.op == "set_password":
            result = await t.set_password(a["old"], a["new"], "ecr")
            return result_payload(result, lang)
        if req.op == "resolve_reversal":
            return await self._resolve(req)
        from firmware.app_companions import for_ecr_op

        companion = for_ecr_op(req.op)
        if companion is not None:
            return await companion.ecr_op(t, req.op, dict(req.args))
        raise EcrError(f"op {req.op} is not available on this board")

    def _printing(self, req: EcrRequest, lang: str) -> dict[str, Any]:
        """Print queue ops: they do not take the operation lock (paper is not money)."""
        from firmware.app_printing import job_payload

        desk = self.terminal.prints
        if desk is None:
            return {"ok": False, "result": "error", "message": text("service_mode", lang)}
        a = req.args
        try:
            if req.op == "reprint":
                job = desk.reprint(a.get("trace"), a.get("batch"))
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

    def _require_sim(self) -> None:
        if not self.terminal.board.ecr_accepts_card_data:
            raise EcrError("card data cannot come over the ECR link on this board; "
                           "present the card at the reader")

    def _financial(self, req: EcrRequest) -> tuple[TxnRequest, OperatorInput]:
        from firmware.app import OperatorInput

        a = req.args
        kind = TxnKind(req.op)
        io = OperatorInput(password=a.get("password"))
        if "card" in a:
            self._require_sim()
            io.card = sim_card(a["card"])
        if "pin" in a:
            self._require_sim()
            io.pin = a["pin"]
        original = None
        if kind in TRACE_KINDS.values():
            original = OriginalRef(trace=a["trace"])
        elif kind is TxnKind.REFUND:
            original = OriginalRef(rrn=a["orig_rrn"], date=a["orig_date"],
                                   trace=a.get("orig_trace"), batch=a.get("orig_batch"))
        operator = self.terminal.settings["transactions"]["operator"]
        return TxnRequest(kind=kind, amount=a.get("amount"), operator=operator,
                          original=original, reference=a.get("ref")), io

    async def _resolve(self, req: EcrRequest) -> dict[str, Any]:
        t = self.terminal
        assert t.journal is not None
        a = req.args
        if not await t.check_password(a["password"], "manual reversal resolution", "ecr"):
            return result_payload(TxnResult("refused", t.password_refused("ecr")))
        record = t.journal.find_by_trace(a["trace"], a.get("batch"))
        if record is None or record.state.value != "REVERSAL_DUE":
            return {"ok": False, "result": "error", "message": "no reversal due for that trace"}
        record = t.journal.resolve_manually(record.id, "supervisor", a["reason"])
        return {**result_payload(TxnResult("resolved", "approved", record)), "ok": True}
