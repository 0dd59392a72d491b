"""The ESC/POS thermal printer on a serial port: firmware.ports.Printer over drivers.serial_io.

Owns the print conversation: status before a copy (DLE EOT 1, 2, 4), the copy written line by
line with a status check every few lines (which also bounds the bytes in flight), and the
translation of what the printer says into PrinterPaused / PrinterUnavailable. One copy per call,
never retried here: the print queue decides (cancel-semantics.md).
"""

from __future__ import annotations

import asyncio
import logging

from c_ext import posio
from drivers.serial_io import PortGone, SerialPort
from firmware.ports import Document, PrinterPaused, PrinterStatus, PrinterUnavailable, Progress

from .profiles import PrinterProfile, get_profile
from .render import (
    MODES,
    STATUS_QUERIES,
    RenderMode,
    StatusByteError,
    merge_status,
    parse_status,
    render,
    status_query,
)

log = logging.getLogger(__name__)

BITS_PER_BYTE = 10  # 8N1 on the wire
DRAIN_READS = 16  # stray input is drained in reads of 256 bytes; more than this is a babbling line


class PrinterLostMidCopy(PrinterUnavailable):
    """PrinterUnavailable after lines of the copy went out (power or cable lost part way).

    printed_any means what it means on PrinterPaused: firmware.ports.PrinterUnavailable has no
    such field, and the print queue needs it to pick the cancel-semantics row.
    """

    def __init__(self, message: str, printed_any: bool = True) -> None:
        super().__init__(message)
        self.printed_any = printed_any


class EscPosSerialPrinter:
    """firmware.ports.Printer for an ESC/POS printer on a tty (USB-serial, UART, pty).

    status_every_lines: a status check after this many lines; the reply also paces the writer,
    so at most that many lines are in flight. status_timeout_s: how long a reply may take beyond
    the wire time of the bytes still in flight (give a slow printer more).
    """

    def __init__(self, path: str, *, profile: str | PrinterProfile = "58mm", baudrate: int = 115200,
                 mode: RenderMode = "text", status_every_lines: int = 4,
                 status_timeout_s: float = 0.5) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown printer mode {mode!r}; use one of {', '.join(MODES)}")
        if status_every_lines < 1:
            raise ValueError(f"status_every_lines must be 1 or more, not {status_every_lines}")
        if status_timeout_s <= 0:
            raise ValueError(f"status_timeout_s must be positive, not {status_timeout_s}")
        self.profile = get_profile(profile)
        self.columns = self.profile.columns
        self.path = path
        self.mode: RenderMode = mode
        self.baudrate = baudrate
        self.status_every_lines = status_every_lines
        self.status_timeout_s = status_timeout_s
        self._port = SerialPort(path, baudrate)
        self._lock = asyncio.Lock()  # one conversation at a time: replies must not cross
        self._closed = False
        self._lines_sent = 0  # of the copy being printed: decides printed_any when it fails

    # ---- firmware.ports.Printer -----------------------------------------------------------------

    async def status(self) -> PrinterStatus:
        async with self._lock:
            try:
                await self._prepare()
                return await self._query_status(in_flight=0)
            except PortGone as exc:
                raise self._gone(exc) from exc

    async def print_document(self, doc: Document, progress: Progress | None = None) -> None:
        # Rendering first, off the event loop (raster mode draws the whole slip): a document that
        # cannot print raises ValueError before a byte is sent.
        chunks = await asyncio.to_thread(render, doc, self.profile, mode=self.mode)
        async with self._lock:
            self._lines_sent = 0
            try:
                try:
                    await self._prepare()
                    status = await self._query_status(in_flight=0)
                    if not status.ready:
                        raise PrinterPaused(status, printed_any=False)
                    log.debug("printing %r: %d chunks, %d bytes", doc.title, len(chunks),
                              sum(map(len, chunks)))
                    await self._send_copy(chunks, progress)
                except PortGone as exc:
                    raise self._gone(exc) from exc
            except PrinterUnavailable as exc:
                if self._lines_sent and not isinstance(exc, PrinterLostMidCopy):
                    # Lines went out while the printer said it was ready: counted as printed, as
                    # for PrinterPaused.
                    raise PrinterLostMidCopy(str(exc), printed_any=True) from exc
                raise

    async def close(self) -> None:
        self._closed = True
        self._port.dispose()

    # ---- the copy --------------------------------------------------------------------------------

    async def _send_copy(self, chunks: list[bytes], progress: Progress | None) -> None:
        init, lines = chunks[0], chunks[1:]
        total = len(lines)
        await self._write(init, in_flight=0)
        in_flight = len(init)
        for done, chunk in enumerate(lines, 1):
            await self._write(chunk, in_flight)
            self._lines_sent = done
            in_flight += len(chunk)
            if done % self.status_every_lines and done != total:
                continue
            status = await self._query_status(in_flight)
            if not status.ready:
                # Lines went out while the printer said it was ready: some of this copy may be on
                # paper. Counting it as printed is the safe side (a VOID slip, not a lost receipt).
                raise PrinterPaused(status, printed_any=True)
            in_flight = 0
            self._report(progress, done, total)

    @staticmethod
    def _report(progress: Progress | None, done: int, total: int) -> None:
        if progress is None:
            return
        try:
            progress(done, total)
        except Exception:  # a display fault must not leave half a slip
            log.exception("print progress callback failed (printing goes on)")

    # ---- the port ---------------------------------------------------------------------------------

    def _allowance_ms(self, in_flight: int) -> int:
        """The status timeout plus the wire time of the bytes the printer has still to take."""
        return int(self.status_timeout_s * 1000 + in_flight * BITS_PER_BYTE * 1000 / self.baudrate)

    async def _prepare(self) -> None:
        """Opens the port if needed (again, if it hung up since the last job); drains stray input."""
        if self._closed:
            raise PrinterUnavailable(f"the printer driver for {self.path} was closed")
        if self._port.is_open:
            try:
                await self._drain()
                return
            except PortGone:
                self._port.close()  # unplugged and maybe back: one fresh open below
        self._port.open()
        await self._drain()

    async def _drain(self) -> None:
        for _ in range(DRAIN_READS):
            if not await self._port.aread(256, 0, 0):
                return
        raise PrinterUnavailable(f"the printer on {self.path} sends data without end; check the baud rate "
                                 f"({self.baudrate}) and that it is the printer's port")

    async def _write(self, data: bytes, in_flight: int) -> None:
        deadline_ms = self._allowance_ms(in_flight + len(data))
        try:
            await self._port.awrite(data, deadline_ms, chunk=self.profile.write_chunk)
        except posio.WriteTimeout as exc:
            raise PrinterUnavailable(
                f"the printer on {self.path} took no data for {deadline_ms} ms "
                f"({exc.written} of {len(data)} bytes went out); is it jammed or offline?") from exc

    async def _query_status(self, in_flight: int) -> PrinterStatus:
        parts = []
        for n in STATUS_QUERIES:
            parts.append(await self._ask(n, self._allowance_ms(in_flight)))
            in_flight = 0  # the first reply proves the printer has taken everything before it
        return merge_status(parts)

    async def _ask(self, n: int, wait_ms: int) -> PrinterStatus:
        problem: StatusByteError | None = None
        for _attempt in range(2):  # one retry: a single noisy byte is not a dead printer
            await self._drain()
            await self._port.awrite(status_query(n), self._allowance_ms(0))
            reply = await self._port.aread(1, -1, wait_ms)
            if not reply:
                raise PrinterUnavailable(
                    f"no answer from the printer on {self.path} within {wait_ms} ms: is it switched on "
                    f"and on this port at {self.baudrate} baud?")
            try:
                return parse_status(n, reply[0])
            except StatusByteError as exc:
                problem = exc
                log.warning("printer on %s: %s; asking again", self.path, exc)
        raise PrinterUnavailable(f"the printer on {self.path} answers the status query with garbage twice "
                                 f"({problem}); check the cable and the baud rate ({self.baudrate})")

    def _gone(self, exc: PortGone) -> PrinterUnavailable:
        self._port.close()
        return PrinterUnavailable(f"the printer port {self.path} is gone ({exc}); plug the printer in "
                                  "again: the next job opens the port anew")
