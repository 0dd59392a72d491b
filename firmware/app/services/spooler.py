"""The print spooler: takes jobs from the journal's queue, renders and prints them
one copy at a time, pauses on paper out / cover open (and, on a printer without a cutter,
between copies until the operator has torn one off), and carries out CANCEL as
firmware/printing/queue.py rules it. Part of the app layer (it drives a driver).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from firmware.journal.errors import JournalError
from firmware.journal.store import Journal
from firmware.ports import Document, Printer, PrinterPaused, PrinterStatus, PrinterUnavailable
from firmware.printing.queue import CopyKind, PrintJob, PrintState

log = logging.getLogger("posfw.spooler")

Render = Callable[[PrintJob, CopyKind], Document]


class Spooler:
    """One printer, one job at a time, oldest first. wake() after queueing or cancelling."""

    def __init__(self, journal: Journal, printer: Printer, render: Render, *,
                 poll_s: float = 1.0, give_up_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic,
                 tear_pause: Callable[[], bool] = lambda: False, tear_wait_s: float = 120.0) -> None:
        self.journal = journal
        self.printer = printer
        self.render = render
        self.poll_s = poll_s
        self.give_up_s = give_up_s
        self._clock = clock
        self._wake = asyncio.Event()
        self.status: PrinterStatus | None = None
        self.problem: str | None = None  # i18n key while printing is held up
        self.progress: tuple[int, int, int] | None = None  # (job id, lines done, lines)
        self.printing = False  # a copy is going to the printer now
        self.idle = asyncio.Event()  # set while nothing is printable
        # Called (no arguments, must not block) when a job starts, pauses, resumes or ends,
        # so the LCD's paper icon and "Printing 1/2" follow without anyone polling.
        self.on_change: Callable[[], None] | None = None
        # Asked after each copy that has another after it: wait for the tear-off? The wait ends
        # on torn() (the operator's ENTER) or after tear_wait_s, so a terminal left alone does
        # not hold every later receipt back.
        self.tear_pause = tear_pause
        self.tear_wait_s = tear_wait_s
        self.tear_off_job: int | None = None  # the job waiting for its copy to be torn off
        self._torn = asyncio.Event()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def wake(self) -> None:
        self._wake.set()

    def torn(self, job_id: int) -> bool:
        """The operator tore the copy of job_id off: the next copy prints. False if that job
        is not waiting (an ENTER that came late)."""
        if self.tear_off_job != job_id:
            return False
        self._torn.set()
        return True

    async def _wait_for_tear_off(self, job_id: int) -> None:
        self.tear_off_job = job_id
        self._torn.clear()
        self._changed()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tear_wait_s):
                    await self._torn.wait()
        finally:
            self.tear_off_job = None
            self._changed()

    async def run(self) -> None:
        """Forever: print what is printable, then sleep until woken (no polling when idle)."""
        while True:
            await self.drain()
            await self._wake.wait()
            self._wake.clear()

    async def drain(self) -> None:
        """Prints until no job is printable (queue empty, or only jobs awaiting the operator)."""
        while True:
            self._wake.clear()
            job = self.journal.next_print_job()
            if job is None:
                self.idle.set()
                self.progress = None
                self._changed()
                return
            self.idle.clear()
            try:
                await self._print_job(job)
            except JournalError as exc:
                # The queue could not record a step: stop rather than print without a record.
                log.error("print queue: %s", exc)
                self.problem = "journal_full"
                self.idle.set()
                return

    async def _print_job(self, job: PrintJob) -> None:
        j = self.journal
        while True:
            job = j.print_job(job.id)
            if job.state not in (PrintState.QUEUED, PrintState.PRINTING, PrintState.PAUSED):
                return
            copy = job.current_copy
            if copy is None:
                j.update_print_job(job.id, PrintState.DONE, reason=None)
                return
            if job.cancel_requested and not job.printed_any:
                j.finish_print_cancel(job.id)  # between copies: the VOID slip names the last one
                return
            try:
                doc = self.render(job, copy)
            except (JournalError, LookupError, ValueError) as exc:
                log.error("print job %d cannot be rendered: %s", job.id, exc)
                j.update_print_job(job.id, PrintState.FAILED, reason="print_unrenderable")
                return
            # Marked as on paper before the first byte goes: a power loss from here on
            # re-queues this copy as a REPRINT (conservative: a reprint too many, never
            # a second "original").
            job = j.update_print_job(job.id, PrintState.PRINTING, printed_any=True)
            self._changed()
            try:
                await self._print_copy(doc, job.id)
            except PrinterPaused as exc:
                printed = exc.printed_any or job.copy_restarted
                j.update_print_job(job.id, PrintState.PAUSED, printed_any=printed,
                                   copy_restarted=printed, reason=exc.status.problem)
                self.status = exc.status
                self._changed()
                if not await self._wait_until_ready(job.id):
                    return
                continue  # the copy starts again from its top (marked REPRINT if any of it printed)
            except PrinterUnavailable as exc:
                log.warning("printer unavailable: %s", exc)
                j.update_print_job(job.id, PrintState.PAUSED, copy_restarted=True,
                                   reason="printer_unavailable")
                if not await self._wait_until_ready(job.id):
                    return
                continue
            self.problem = None
            job = j.update_print_job(job.id, copies_done=job.copies_done + 1, printed_any=False,
                                     copy_restarted=False, reason=None)
            if job.cancel_requested:
                j.finish_print_cancel(job.id)
                return
            if job.current_copy is not None and self.tear_pause():
                await self._wait_for_tear_off(job.id)

    async def _print_copy(self, doc: Document, job_id: int) -> None:
        """One copy to the printer; `printing` while it goes (the journal's idle checkpoint
        waits for the end of it)."""
        self.printing = True
        try:
            await self.printer.print_document(
                doc, lambda done, total: self._on_progress(job_id, done, total))
        finally:
            self.printing = False

    def _on_progress(self, job_id: int, done: int, total: int) -> None:
        self.progress = (job_id, done, total)

    async def _wait_until_ready(self, job_id: int) -> bool:
        """Paused: polls the printer's real-time status until it is ready, the job is
        cancelled (dropped), or the wait passes give_up_s (FAILED)."""
        started = self._clock()
        while True:
            job = self.journal.print_job(job_id)
            if job.state is not PrintState.PAUSED:
                return False  # cancelled while paused with nothing printed
            self.problem = job.reason
            try:
                self.status = await self.printer.status()
            except PrinterUnavailable:
                self.status = None
            if self.status is not None and self.status.ready:
                self.problem = None
                self._changed()
                return True
            if self._clock() - started > self.give_up_s:
                self.journal.update_print_job(job_id, PrintState.FAILED,
                                              reason=job.reason or "printer_unavailable")
                log.error("print job %d failed: printer not ready for %.0f s", job_id, self.give_up_s)
                return False
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a task cancel
            # that lands as the wait finishes, and close() relies on that cancel.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()
