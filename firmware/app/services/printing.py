"""The app's printing desk: renders queued jobs (receipts, slips, reports) with the
layouts and the settings, runs the spooler, and offers reprint / cancel / confirm /
test page / reports to the ECR link and the keypad. A service of the app layer: the core sees
it only as a PaperQueue (firmware/app/core/contract.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from drivers.printer.profiles import get_profile
from firmware import __version__
from firmware.app.core.terminal import TerminalCore
from firmware.app.services.spooler import Spooler
from firmware.engine.codes import lookup
from firmware.journal.errors import JournalError
from firmware.journal.store import Journal
from firmware.ports import Cut, Document, Feed, Image, Printer, TextLine
from firmware.printing import layout, reports
from firmware.printing.queue import (
    REPORT_KINDS,
    CancelAction,
    CopyKind,
    JobKind,
    PrintJob,
)

log = logging.getLogger("posfw.printing")

# What a VOID slip calls a printout that names no transaction (receipt-catalog keys).
VOIDED_TITLE_KEYS: dict[JobKind, str] = {
    JobKind.SETTLEMENT: "settlement_report", JobKind.SUBTOTALS: "subtotals_title",
    JobKind.TXN_LIST: "txn_list", JobKind.TEST: "test_page", JobKind.HELD_TRAIL: "held_trail",
    JobKind.DEREG_REPORT: "dereg_report",
}


class PrintDesk:
    """Everything the terminal does with paper. Without a printer, jobs wait in the queue."""

    def __init__(self, journal: Journal, printer: Printer | None,
                 settings: Callable[[], dict[str, dict[str, Any]]],
                 now: Callable[[], datetime] = datetime.now, *, poll_s: float = 1.0,
                 logo_path: Path | None = None) -> None:
        self.journal = journal
        self.logo = load_logo(logo_path, self.columns_for(printer, settings())) if logo_path else None
        self.printer = printer
        self._settings = settings
        self._now = now
        self.spooler = (Spooler(journal, printer, self.render, poll_s=poll_s,
                                tear_pause=self.tear_pause)
                        if printer is not None else None)
        self._task: asyncio.Task[None] | None = None

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        recovery = self.journal.recover_prints()
        if recovery.requeued_for_confirm or recovery.cancelled_with_void_slip:
            log.warning("print queue after power loss: %s", recovery)
        if self.spooler is not None:
            self._task = asyncio.create_task(self.spooler.run(), name="spooler")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.printer is not None:
            await self.printer.close()

    def wake(self) -> None:
        if self.spooler is not None:
            self.spooler.wake()

    @property
    def printing(self) -> bool:
        return self.spooler is not None and self.spooler.printing

    # -- settings ---------------------------------------------------------------

    @property
    def copies(self) -> tuple[CopyKind, ...]:
        # Settings validation keeps copies in 1..3.
        return layout.copies_for(int(self._settings()["printer"].get("copies", 2)))

    @staticmethod
    def columns_for(printer: Printer | None, settings: dict[str, dict[str, Any]]) -> int:
        if printer is not None:
            return printer.columns
        return get_profile(settings["printer"].get("profile", "58mm")).columns

    @property
    def columns(self) -> int:
        return self.columns_for(self.printer, self._settings())

    def tear_pause(self) -> bool:
        """Pause between copies for the tear-off (printer.tear_pause; auto: the printer profile
        has no cutter). Read at each copy, so a settings change applies to the next one."""
        printer = self._settings()["printer"]
        choice = printer.get("tear_pause", "auto")
        if choice == "auto":
            return not get_profile(printer.get("profile", "58mm")).has_cutter
        return bool(choice == "on")

    def torn(self, job_id: int) -> None:
        """The operator's ENTER after tearing a copy off (the idle screen asked for it)."""
        if self.spooler is not None:
            self.spooler.torn(job_id)

    @property
    def lang(self) -> str:
        return str(self._settings()["display"].get("language", "en"))

    @property
    def currency(self) -> str:
        return str(self._settings().get("transactions", {}).get("currency", "156"))

    # -- rendering --------------------------------------------------------------

    def render(self, job: PrintJob, copy: CopyKind) -> Document:
        """The document for one copy of a job, rebuilt from the journal (masked PAN only), at
        the print density the settings hold now."""
        density = int(self._settings()["printer"].get("density", 4))
        return dataclasses.replace(self._document(job, copy), density=density)

    def _held_trail(self, job: PrintJob, settings: dict[str, dict[str, Any]],
                    printed_at: datetime) -> Document:
        from firmware.journal.held import HeldOrders
        from firmware.printing.held_slip import held_trail_slip

        if job.held_order_id is None:
            raise LookupError(f"print job {job.id} names no held order")
        orders = HeldOrders(self.journal)
        return held_trail_slip(orders.get(job.held_order_id), orders.trail(job.held_order_id),
                               lang=self.lang, columns=self.columns,
                               merchant=str(settings["merchant"].get("name", "")),
                               tid=str(settings["merchant"].get("tid", "")), printed_at=printed_at)

    def _dereg_report(self) -> Document:
        """The deregistration report as its last step laid it out (no card data in it)."""
        rows = self.journal.read("SELECT value FROM terminal_state WHERE name = 'dereg_report'")
        if not rows:
            raise LookupError("no deregistration report has been made")
        lines = json.loads(rows[0][0])
        return Document((*(TextLine(line) for line in lines), Feed(3), Cut()),
                        title="deregistration report")

    def dereg_report(self) -> PrintJob:
        job = self.journal.enqueue_print(JobKind.DEREG_REPORT, (CopyKind.MERCHANT,),
                                         title="deregistration report")
        self.wake()
        return job

    def held_trail(self, order_id: int, operator: str = "operator") -> PrintJob:
        job = self.journal.enqueue_held_trail(order_id, operator)
        self.wake()
        return job

    def _document(self, job: PrintJob, copy: CopyKind) -> Document:
        settings = self._settings()
        merchant = layout.MerchantInfo.from_settings(settings)
        printed_at = self._now()
        if job.kind is JobKind.TEST:
            return layout.test_slip(merchant, lang=self.lang, columns=self.columns,
                                    firmware_version=__version__, printed_at=printed_at)
        if job.kind in REPORT_KINDS:
            return self._render_report(job, merchant, printed_at)
        if job.kind is JobKind.HELD_TRAIL:
            return self._held_trail(job, settings, printed_at)
        if job.kind is JobKind.DEREG_REPORT:
            return self._dereg_report()
        if job.kind is JobKind.VOID_SLIP and job.txn_id is None:
            return layout.void_slip(self._void_ref(job, copy), merchant, lang=self.lang,
                                    columns=self.columns, printed_at=printed_at)
        if job.txn_id is None:
            raise LookupError(f"print job {job.id} names no transaction")
        record = self.journal.get(job.txn_id)
        if job.kind is JobKind.VOID_SLIP:
            return layout.void_slip(layout.SlipRef.from_record(record, copy), merchant,
                                    lang=self.lang, columns=self.columns, printed_at=printed_at)
        if job.kind is JobKind.ADVICE_DECLINED:
            code = record.response_code or ""
            return layout.refund_declined_slip(
                record, merchant, lang=self.lang, columns=self.columns, printed_at=printed_at,
                answer=f"{code} {lookup(code).text(self.lang)}")
        limit = int(settings["printer"].get("no_signature_limit", 0))
        return layout.receipt(record, copy, merchant, lang=self.lang, columns=self.columns,
                              reprint=job.marked_reprint, printed_at=printed_at,
                              no_signature_limit=limit, logo=self.logo)

    def _render_report(self, job: PrintJob, merchant: layout.MerchantInfo,
                       printed_at: datetime) -> Document:
        j = self.journal
        common: dict[str, Any] = dict(lang=self.lang, columns=self.columns, printed_at=printed_at,
                                      reprint=job.marked_reprint, currency=self.currency)
        if job.kind is JobKind.SETTLEMENT:
            if job.settlement_id is None:
                raise LookupError(f"print job {job.id} names no settlement")
            settlement = j.get_settlement(job.settlement_id)
            return reports.settlement_report(settlement, j.settled_totals_by_kind(settlement.id), merchant,
                                             operator=j.settlement_operator(settlement.id), **common)
        if job.batch is None:
            raise LookupError(f"print job {job.id} names no batch")
        # Settled between the request and the printing: the report says so, not "NOT SETTLED".
        settled = job.batch != j.current_batch()
        if job.kind is JobKind.SUBTOTALS:
            return reports.subtotals_report(job.batch, j.totals_by_kind(job.batch), merchant,
                                            settled=settled, **common)
        return reports.transaction_list(j.records(batch=job.batch), merchant, batch=job.batch,
                                        settled=settled, **common)

    def _void_ref(self, job: PrintJob, copy: CopyKind) -> layout.SlipRef:
        """What a VOID slip for a report or test page names: the printout, its copy and batch."""
        voided = self.journal.print_job(job.voids_job) if job.voids_job is not None else None
        if voided is None or voided.kind not in VOIDED_TITLE_KEYS:
            raise LookupError(f"print job {job.id} names no printout to void")
        return layout.SlipRef(VOIDED_TITLE_KEYS[voided.kind], copy=copy, batch=voided.batch,
                              reprint=voided.marked_reprint)

    # -- operations -------------------------------------------------------------

    def reprint(self, voucher: str | None = None, batch: str | None = None,
                operator: str = "operator") -> PrintJob | str:
        """Reprint the last receipt, or one by voucher number (the open batch's newest with it,
        unless a batch is named); always marked REPRINT. Returns the job, or the i18n key of why not."""
        if voucher is None:
            record = self.journal.last_receipt_txn()
        else:
            record = self.journal.find_by_invoice(voucher, batch)
        if record is None:
            return "reprint_not_found"
        if record.state.value not in ("APPROVED", "VOIDED", "ADVICE_DUE") or \
                record.kind.value == "balance":
            return "reprint_no_receipt"
        job = self.journal.enqueue_print(JobKind.RECEIPT, self.copies, txn_id=record.id, reprint=True,
                                         title=f"{record.kind.value} {record.invoice}", operator=operator)
        self.wake()
        return job

    def settlement_report(self, settlement_id: int | None = None, reprint: bool = True,
                          operator: str = "operator") -> PrintJob | str:
        """Print a settlement's report again (None: the last finished settlement), marked
        REPRINT. Returns the job, or the i18n key of why not."""
        if settlement_id is None:
            last = self.journal.last_settlement()
            if last is None:
                return "no_settlement_yet"
            settlement_id = last.id
        else:
            try:
                if self.journal.get_settlement(settlement_id).state != "DONE":
                    return "settlement_not_finished"
            except JournalError:
                return "settlement_not_found"
        job = self.journal.enqueue_report(JobKind.SETTLEMENT, settlement_id, reprint=reprint,
                                          operator=operator)
        self.wake()
        return job

    def subtotals(self, operator: str = "operator") -> PrintJob:
        """The X report of the open batch (nothing is settled or closed)."""
        job = self.journal.enqueue_report(JobKind.SUBTOTALS, operator=operator)
        self.wake()
        return job

    def transaction_list(self, operator: str = "operator") -> PrintJob:
        """The open batch's transactions on paper."""
        job = self.journal.enqueue_report(JobKind.TXN_LIST, operator=operator)
        self.wake()
        return job

    def test_page(self) -> PrintJob:
        job = self.journal.enqueue_print(JobKind.TEST, (CopyKind.MERCHANT,), title="test page")
        self.wake()
        return job

    def cancel(self, job_id: int | None, operator: str = "operator") -> CancelAction:
        """CANCEL on a job (the one printing, if none is named)."""
        if job_id is None:
            # The job the spooler is printing (or prints next), however long the queue; only
            # when every open job waits for the operator's reprint answer, the oldest of them.
            _, _, oldest = self.journal.open_print_jobs()
            job = self.journal.next_print_job() or oldest
            if job is None:
                return CancelAction.NOTHING
            job_id = job.id
        action = self.journal.request_print_cancel(job_id, operator)
        self.wake()
        return action

    def confirm(self, job_id: int, print_again: bool, operator: str = "operator") -> PrintJob:
        """The operator's answer for a copy cut by a power loss: print it again (REPRINT) or drop it
        (a VOID slip then names what is on paper)."""
        if print_again:
            job = self.journal.confirm_print(job_id, operator)
        else:
            job = self.journal.print_job(job_id)
            if not job.needs_confirm:
                raise JournalError(f"print job {job_id} is not waiting for a confirmation")
            self.journal.request_print_cancel(job_id, operator)
            job = self.journal.print_job(job_id)
        self.wake()
        return job

    def status(self) -> dict[str, Any]:
        queued, waiting, _ = self.journal.open_print_jobs()
        info: dict[str, Any] = {
            "printer": "none" if self.printer is None else "present",
            "queued": queued,
            "awaiting_confirmation": waiting,
        }
        if self.spooler is not None:
            st = self.spooler.status
            info["problem"] = self.spooler.problem
            info["paper_out"] = bool(st and st.paper_out)
            info["cover_open"] = bool(st and st.cover_open)
            if self.spooler.progress is not None:
                info["progress"] = list(self.spooler.progress)
            if self.spooler.tear_off_job is not None:
                info["tear_off"] = self.spooler.tear_off_job
        return info


def desk(terminal: TerminalCore) -> PrintDesk | None:
    """The terminal's print desk, for the services that use more of it than the core's
    PaperQueue (reprints, reports, slips); None where there is no paper (service mode)."""
    prints = terminal.prints
    if prints is None:
        return None
    assert isinstance(prints, PrintDesk), f"the terminal's paper is not a print desk: {prints!r}"
    return prints


LOGO_MAX_HEIGHT = 160


def load_logo(path: Path, columns: int) -> Image | None:
    """The merchant's logo (any image file Pillow reads) as gray, scaled to fit the paper.
    A missing or unreadable file is reported and the receipt prints without it."""
    if not path.exists():
        return None
    # Pillow only for a terminal that has a logo: it is megabytes resident, and idle needs none.
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(path) as img:
            gray = img.convert("L")
    except (OSError, UnidentifiedImageError) as exc:
        log.warning("logo %s cannot be read (%s): receipts print without it", path, exc)
        return None
    gray.thumbnail((columns * layout.DOTS_PER_COLUMN, LOGO_MAX_HEIGHT))
    return Image(gray=gray.tobytes(), width=gray.width, height=gray.height)


def job_payload(job: PrintJob) -> dict[str, Any]:
    return {
        "job": job.id, "kind": job.kind.value, "state": job.state.value, "title": job.title,
        "copies": [c.value for c in job.copies], "copies_done": job.copies_done,
        "reprint": job.marked_reprint, "needs_confirm": job.needs_confirm,
        "cancel_requested": job.cancel_requested, "reason": job.reason,
    }
