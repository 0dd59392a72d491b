"""The front panel: the keypad and LCD wired to the terminal through the sans-I/O screens.

Theory of operation: one asyncio task owns the screen machine (firmware.ui). Keys, card reads,
the terminal's progress and results, and timer ticks all arrive as UI events on one queue; each
event is fed to the machine, the frame it returns is drawn if it changed, and the commands it
returns are carried out here (operations run as tasks that answer with OpDone). The panel also
observes the terminal (TerminalObserver) so that an ECR-started operation, its PIN entry and its
result appear on the LCD. An idle panel sleeps until the next key, card or the screen's own
wake-up time (the idle clock: once a minute). No key code is logged, PIN screen or not.
The Diagnostics menu's checks run in panel_diag.py (PanelDiagnostics).

Operators (firmware/app/core/operators.py): while operators are set up and nobody is signed in,
the panel's home is the sign-in screen (at start, after a sign-out, and whenever an idle screen
comes back through a `back`); the idle screen names the operator signed in; keypad operations
carry that operator, and the keypad refuses what the operator may not do, in words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from firmware.app.core.contract import OperatorCancelled, OperatorInput
from firmware.app.frontends.panel_diag import PanelDiagnostics, diag_words
from firmware.engine.model import CardRead, OriginalRef, TxnRequest, TxnResult
from firmware.engine.tracks import CardProblem, card_from_swipe
from firmware.host.messages import TxnKind, mask_pan
from firmware.ports import (
    ChipInserted,
    ChipRemoved,
    Display,
    Frame,
    Keypad,
    MagstripeRead,
    PrinterUnavailable,
    ReaderUnavailable,
    ReadFailed,
    ReadTimedOut,
)
from firmware.ui import core as ui

if TYPE_CHECKING:
    from firmware.app.terminal import Terminal

log = logging.getLogger("posfw.panel")

FINANCIAL = frozenset(k.value for k in TxnKind if k.value in {
    "sale", "void", "refund", "balance", "preauth", "preauth_void", "completion", "completion_void"})
TRACE_KINDS = frozenset({"void", "preauth_void", "completion", "completion_void"})
READER_RETRY_S = 30.0  # the idle card watch waits this long after the reader failed


class FrontPanel:
    """Keypad + display + screens for one Terminal. run() until cancelled; close() after."""

    def __init__(self, terminal: Terminal, keypad: Keypad | None, display: Display,
                 machine: ui.Ui | None = None, *, clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], datetime] | None = None) -> None:
        if machine is None:
            from firmware.ui.machine import build_ui

            machine = build_ui(lambda: terminal.operators.needs_sign_in)
        self.terminal = terminal
        self.keypad = keypad
        self.display = display
        self.ui = machine
        self._clock = clock
        self._now = now or terminal.now
        self._events: asyncio.Queue[ui.UiEvent] = asyncio.Queue()
        self._shown: Frame | None = None
        self._held_card: CardRead | None = None
        self._watch: asyncio.Task[None] | None = None
        self._watch_purpose: str | None = None
        self._reader_retry_at = 0.0  # after the reader failed: no idle watch before this
        self._op: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pin: asyncio.Future[str | None] | None = None
        self._choice: asyncio.Future[int | None] | None = None  # a chip application being chosen
        self._changed = asyncio.Event()
        self._refresh_queued = False
        self.frames_drawn = 0  # for the idle benchmark: how often the LCD was redrawn
        self.wakeups = 0  # events handled (keys, ticks, terminal news)
        self.diagnostics = PanelDiagnostics(terminal, clock, self._changed, self._lang)
        self.echo_history = self.diagnostics.echo_history  # kept across echo tests
        terminal.observer = self

    # ------------------------------------------------------------------ main loop

    def apply_display_settings(self) -> None:
        """Contrast from the settings, on displays that have one (LCD panels; not a terminal)."""
        set_contrast = getattr(self.display, "set_contrast", None)
        if set_contrast is None:
            return
        try:
            set_contrast(int(self.terminal.settings.get("display", {}).get("contrast", 5)))
        except (OSError, ValueError) as exc:
            log.error("display contrast: %s", exc)

    async def run(self) -> None:
        keys = asyncio.create_task(self._pump_keys(), name="keypad") if self.keypad else None
        try:
            self.apply_display_settings()
            self._guard_home()  # operators set up: the keypad starts at the sign-in screen
            self._draw(self.ui.frame(self._ctx()))
            self._sync_card_watch()
            while True:
                event = await self._next_event()
                self.wakeups += 1
                self.feed(event)
        finally:
            if keys is not None:
                keys.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await keys
            await self._stop_everything()

    def feed(self, event: ui.UiEvent) -> None:
        """One event through the screens: draw, then carry out the commands."""
        if isinstance(event, ui.Tick):
            self._refresh_queued = False
        out = self.ui.feed(event, self._ctx())
        self._draw(out.frame)
        for command in out.commands:
            self._execute(command)
        if self._guard_home():
            self._draw(self.ui.frame(self._ctx()))
        self._sync_card_watch()

    def _guard_home(self) -> bool:
        """The idle screen while nobody is signed in (operators set up) becomes the sign-in
        screen, and the sign-in screen the idle one once no sign-in is needed; True: swapped."""
        from firmware.ui.machine import home_for

        swapped = home_for(self.ui.screen, self.terminal.operators.needs_sign_in)
        if swapped is None:
            return False
        self.ui.screen = swapped
        return True

    async def _next_event(self) -> ui.UiEvent:
        wake = self.ui.next_wakeup(self._ctx())
        if wake is None:
            return await self._events.get()
        try:
            async with asyncio.timeout(max(0.0, wake - self._clock())):
                return await self._events.get()
        except TimeoutError:
            return ui.Tick()

    async def _pump_keys(self) -> None:
        assert self.keypad is not None
        while True:
            try:
                press = await self.keypad.next_key()
            except OSError as exc:  # KeypadUnavailable: unplugged, device gone
                log.error("keypad: %s", exc)
                self.terminal.notice = "keypad_unavailable"
                self.changed()
                return  # the LCD and the ECR link go on; the keypad needs a restart or service
            self._events.put_nowait(ui.KeyIn(press.key))

    def _draw(self, frame: Frame) -> None:
        if frame == self._shown:
            return
        self._shown = frame
        self.frames_drawn += 1
        try:
            self.display.show(frame)
        except (OSError, ValueError) as exc:
            log.error("display: %s", exc)

    def post(self, event: ui.UiEvent) -> None:
        """Queue an event from outside the loop's own tasks (tests, the console's hot keys)."""
        self._events.put_nowait(event)

    async def close(self) -> None:
        await self._stop_everything()
        if self.keypad is not None:
            self.keypad.close()
        self.display.close()
        if self.terminal.observer is self:
            self.terminal.observer = None

    async def _stop_everything(self) -> None:
        self._held_card = None
        tasks = [t for t in (*self._tasks, self._watch) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watch = None

    # ------------------------------------------------------------------ context

    def _ctx(self) -> ui.UiContext:
        t = self.terminal
        settings = t.settings or {}
        counts: dict[str, int] = {}
        declined = 0
        if t.journal is not None:
            with contextlib.suppress(Exception):
                counts = t.journal.unresolved_counts()
                declined = len(t.journal.declined_after_stored())
        paper, printing, confirm, tear_off = "none", "", None, None
        if t.prints is not None:
            with contextlib.suppress(Exception):
                paper, printing, confirm, tear_off = self._paper_state()
        held_open, held_aged = self._held_counts()
        signed_on = bool(t.link is not None and not t.link.sign_on_required and t.link.has_keys)
        locked = t.password_guard.seconds_left("keypad")  # its own lock or everyone's
        notice = (t.service_problem and t.service_notice) or t.notice
        return ui.UiContext(
            now=self._now(), mono=self._clock(),
            rows=self.display.rows, cols=self.display.cols,
            lang=str(settings.get("display", {}).get("language", "en")),
            merchant_name=str(settings.get("merchant", {}).get("name", "")),
            tid=str(settings.get("merchant", {}).get("tid", "")),
            signed_on=signed_on, link_up=t.link_up, paper=paper, printing=printing,
            reversals_due=counts.get("REVERSAL_DUE", 0), advices_due=counts.get("ADVICE_DUE", 0),
            quarantined=counts.get("QUARANTINED", 0), refunds_declined=declined,
            backlog_left=t.backlog_left,
            deregistered=self._deregistered(), notice=notice, settings=settings,
            print_confirm_job=confirm, tear_off_job=tear_off, password_locked_s=locked,
            held_orders=held_open, held_aged=held_aged, operator=t.operators.signed_in or "",
        )

    def _deregistered(self) -> bool:
        from firmware.app.core.lifecycle import deregistered_on_disk, lifecycle
        from firmware.engine.deregistration import Lifecycle

        t = self.terminal
        if deregistered_on_disk(t.data_dir):
            return True
        return t.journal is not None and lifecycle(t) is not Lifecycle.ACTIVE

    def _held_counts(self) -> tuple[int, int]:
        if self.terminal.journal is None:
            return 0, 0
        from firmware.app.services.held import counts

        try:
            return counts(self.terminal)
        except Exception as exc:  # the idle screen must draw even if this count cannot be made
            log.error("held orders: %s", exc)
            return 0, 0

    def _paper_state(self) -> tuple[str, str, int | None, int | None]:
        desk = self.terminal.prints
        assert desk is not None
        status = desk.status()
        confirm = status["awaiting_confirmation"][0] if status["awaiting_confirmation"] else None
        tear_off = status.get("tear_off")
        if status["printer"] == "none":
            return "none", "", confirm, None
        paper = "ok"
        if status.get("paper_out"):
            paper = "out"
        elif status.get("cover_open"):
            paper = "cover"
        elif status.get("problem") in ("printer_offline", "printer_unavailable"):
            paper = "offline"
        printing = ""
        progress = status.get("progress")
        if progress:
            job = desk.journal.print_job(int(progress[0]))
            if job.state.value in ("PRINTING", "PAUSED"):
                printing = f"{min(job.copies_done + 1, len(job.copies))}/{len(job.copies)}"
        return paper, printing, confirm, tear_off

    # ------------------------------------------------------------------ TerminalObserver

    def op_started(self, op: str, source: str, amount: int | None) -> None:
        # The screen names the kind of source ("ECR: Sale"), not the peer ("ecr tcp 10.0.0.7").
        self._events.put_nowait(ui.OpStarted(op, source.split(" ", 1)[0], amount))

    def op_step(self, step: str, done: int | None = None, total: int | None = None,
                cancellable: bool = True) -> None:
        self._events.put_nowait(ui.OpStep(step, done, total, cancellable))

    def op_finished(self, op: str, source: str, result: TxnResult) -> None:
        self._events.put_nowait(ui.OpDone(outcome_of(op, result)))

    def card_refused(self, message_key: str) -> None:
        self._events.put_nowait(ui.CardRefused(message_key))

    def changed(self) -> None:
        self._changed.set()
        if not self._refresh_queued:
            self._refresh_queued = True
            self._events.put_nowait(ui.Tick())

    async def ask_pin(self, pan_masked: str, amount: int | None, bypass_allowed: bool,
                      tries_left: int | None = None) -> str | None:
        loop = asyncio.get_running_loop()
        self._pin = loop.create_future()
        self._events.put_nowait(ui.PinWanted(pan_masked, amount, bypass_allowed, tries_left))
        try:
            return await self._pin
        finally:
            self._pin = None

    async def choose_application(self, labels: list[str]) -> int | None:
        loop = asyncio.get_running_loop()
        self._choice = loop.create_future()
        self._events.put_nowait(ui.AppChoiceWanted(tuple(labels)))
        try:
            return await self._choice
        finally:
            self._choice = None

    async def release_reader(self) -> None:
        watch, self._watch = self._watch, None
        self._watch_purpose = None
        if watch is not None and not watch.done():
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await watch

    # ------------------------------------------------------------------ commands

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _execute(self, command: ui.UiCommand) -> None:
        t = self.terminal
        if isinstance(command, ui.StartOp):
            if (self._op is not None and not self._op.done()) or t.busy:
                self._events.put_nowait(ui.OpDone(ui.OpOutcome(
                    command.op, "refused", "busy", detail=t.busy_message(self._lang()))))
                return
            self._op = self._spawn(self._run_op(command), f"op-{command.op}")
        elif isinstance(command, ui.CancelOp):
            t.cancel("keypad")
            if self._pin is not None and not self._pin.done():
                self._pin.set_exception(OperatorCancelled())
            if self._choice is not None and not self._choice.done():
                self._choice.set_exception(OperatorCancelled())
        elif isinstance(command, ui.SubmitChoice):
            if self._choice is not None and not self._choice.done():
                self._choice.set_result(command.index)
        elif isinstance(command, ui.SubmitPin):
            if self._pin is not None and not self._pin.done():
                self._pin.set_result(command.pin)
        elif isinstance(command, ui.CheckPassword):
            self._spawn(self._check_password(command), "password")
        elif isinstance(command, ui.DropCard):
            self._held_card = None
        elif isinstance(command, ui.Audit):
            if t.journal is not None:
                t.journal.audit(t.actor("keypad"), command.action, command.detail, command.outcome)
        elif isinstance(command, ui.SignIn):
            self._spawn(self._sign_in(command), "sign-in")
        elif isinstance(command, ui.SignOut):
            answer = t.operators.sign_out(command.by_supervisor)
            self._events.put_nowait(ui.OperatorAnswer(answer.ok, answer.key))
        elif isinstance(command, ui.ManageOperator):
            self._spawn(self._manage(command), "operators")
        elif isinstance(command, ui.ConfirmPrint):
            if t.prints is not None:
                try:
                    t.prints.confirm(command.job_id, command.print_again, t.actor("keypad"))
                except Exception as exc:  # the operator gets words, never a hung panel
                    log.error("print confirmation: %s", exc)
            self.changed()
        elif isinstance(command, ui.TearOff):
            if t.prints is not None:
                t.prints.torn(command.job_id)
            self.changed()
        elif isinstance(command, ui.LookupOriginal):
            try:
                found = self._original(command)
            except Exception:  # the operator gets words, never a screen stuck on "Reading..."
                log.exception("looking up voucher %s for %s failed", command.voucher, command.op)
                found = ui.OriginalFound(command.voucher, False, "internal_error")
            self._events.put_nowait(found)
        elif isinstance(command, ui.RunDiag):
            self._spawn(self._run_diag(command.name), f"diag-{command.name}")
        elif isinstance(command, ui.SaveSettings | ui.RestorePrevious | ui.FactoryDefaults
                        | ui.RollBackSettings | ui.ChangePassword):
            self._spawn(self._settings(command), "settings")

    def _original(self, command: ui.LookupOriginal) -> ui.OriginalFound:
        """The original a void or completion names, from this batch of the journal, judged by
        the same rule the engine applies when the operation runs (validation.check_original):
        what the operator is shown is what the transaction would get."""
        t = self.terminal
        voucher = command.voucher
        if t.journal is None:
            return ui.OriginalFound(voucher, False, "service_mode")
        original, refusal = t.check_follow_up(TxnKind(command.op), OriginalRef(
            invoice=voucher, batch=t.journal.current_batch()))
        if refusal is not None:
            return ui.OriginalFound(voucher, False, refusal.key)
        assert original.kind is not None and original.amount is not None
        record = t.journal.get(original.record_id) if original.record_id is not None else None
        return ui.OriginalFound(voucher, True, "", original.kind.value, original.amount,
                                record.pan_masked if record else "")

    async def _check_password(self, command: ui.CheckPassword) -> None:
        t = self.terminal
        ok = await t.check_password(command.password, command.purpose, "keypad")
        # Locked (now, or by this very try): the screen says "Locked - try again in m:ss",
        # not "Wrong password".
        locked = t.password_guard.seconds_left("keypad")
        self._events.put_nowait(ui.PasswordChecked(ok, locked))

    async def _sign_in(self, command: ui.SignIn) -> None:
        try:
            answer = await self.terminal.operators.sign_in(command.code, command.pin)
            event = ui.OperatorAnswer(answer.ok, answer.key, answer.locked_s)
        except Exception:  # the operator gets words, never a screen stuck on "Checking..."
            log.exception("operator sign-in failed")
            event = ui.OperatorAnswer(False, "internal_error")
        self._events.put_nowait(event)

    async def _manage(self, command: ui.ManageOperator) -> None:
        operators = self.terminal.operators
        try:
            if command.action == "add":
                answer = await operators.add(command.code, command.pin or "")
            elif command.action == "change_pin":
                answer = await operators.change_pin(command.code, command.pin or "")
            elif command.action == "remove":
                answer = await operators.remove(command.code)
            else:
                raise ValueError(f"no operator action {command.action!r}")
            event = ui.OperatorAnswer(answer.ok, answer.key)
        except Exception:  # the operator gets words, never a screen stuck on "Saving..."
            log.exception("operator %s failed", command.action)
            event = ui.OperatorAnswer(False, "internal_error")
        self._events.put_nowait(event)

    async def _run_op(self, command: ui.StartOp) -> None:
        try:
            outcome = await self._operation(command)
        except asyncio.CancelledError:
            raise
        except Exception:  # the operator gets words, never a hung panel
            log.exception("operation %s failed", command.op)
            # The exception's text is English and for support: it is in the log, not on screen.
            outcome = ui.OpOutcome(command.op, "failed", "internal_error")
        self._events.put_nowait(ui.OpDone(outcome))

    async def _operation(self, c: ui.StartOp) -> ui.OpOutcome:
        from firmware.app.services.registry import for_panel_op

        t = self.terminal
        refusal = t.operators.keypad_refusal(c.op)  # nobody signed in; the supervisor's payment
        if refusal is not None:
            return ui.OpOutcome(c.op, "refused", refusal)
        companion = for_panel_op(c.op)  # held orders, settlement review, deregistration
        if companion is not None:
            return await companion.run_op(t, c, self._lang(), self.display.cols)
        missing = [name for name in ui.OPS.get(c.op, ("?",)) if getattr(c, name, None) in (None, "")]
        if c.op not in ui.OPS or missing:
            return ui.OpOutcome(c.op, "refused", "invalid_request",
                                detail=f"{c.op} needs {', '.join(missing)}")
        if c.op in FINANCIAL:
            card, self._held_card = (self._held_card if c.use_card else None), None
            original = None
            if c.op in TRACE_KINDS:
                original = OriginalRef(invoice=c.voucher)
            elif c.op == "refund":
                original = OriginalRef(rrn=c.rrn, date=c.date)
            request = TxnRequest(kind=TxnKind(c.op), amount=c.amount,
                                 operator=t.operators.code_for("keypad"),
                                 original=original, reference=c.reference)
            io = OperatorInput(card=card, source="keypad", authorised=c.authorised)
            return outcome_of(c.op, await t.financial(request, io))
        if c.op == "settle":
            if not c.authorised:
                return ui.OpOutcome(c.op, "refused", "password_wrong")
            from firmware.app.services.review import settle_outcome

            result = await t.settle(None, source="keypad", authorised=True)
            return settle_outcome(t, result, self._lang())  # a refusal names what is pending
        if c.op == "sign_on":
            self.op_step("signing_on", cancellable=False)
            ok = await t.sign_on("keypad")
            return ui.OpOutcome(c.op, "done" if ok else "failed", "signed_on" if ok else "sign_on_failed",
                                detail=t.notice or "")
        if c.op == "sign_off":
            ok = await t.sign_off("keypad")
            return ui.OpOutcome(c.op, "done" if ok else "failed", "signed_off" if ok else "host_unreachable")
        if c.op == "echo":
            return self.diagnostics.echo_outcome(await t.echo())
        return await self._paper_op(c)

    async def _paper_op(self, c: ui.StartOp) -> ui.OpOutcome:
        from firmware.app.services.printing import job_payload
        from firmware.printing import reports

        t = self.terminal
        desk, j = t.prints, t.journal
        if desk is None or j is None:
            return ui.OpOutcome(c.op, "failed", "service_mode")
        lang = str(t.settings["display"].get("language", "en"))
        cols = self.display.cols
        if c.op in ("reprint_last", "reprint_voucher"):
            job = desk.reprint(c.voucher if c.op == "reprint_voucher" else None,
                               operator=t.actor("keypad"))
            if isinstance(job, str):
                return ui.OpOutcome(c.op, "refused", job)
            return ui.OpOutcome(c.op, "done", "reprint_queued", detail=str(job_payload(job)["title"]))
        if c.op == "reprint_settlement":
            job = desk.settlement_report(None, reprint=True, operator=t.actor("keypad"))
            if isinstance(job, str):
                return ui.OpOutcome(c.op, "refused", job)
            return ui.OpOutcome(c.op, "done", "reprint_queued")
        if c.op == "subtotals":
            lines = reports.subtotal_lines(j.totals_by_kind(j.current_batch()), lang, cols)
            return ui.OpOutcome(c.op, "done", "subtotals", batch=j.current_batch(), lines=tuple(lines))
        if c.op == "report_totals":
            lines = reports.subtotal_lines(j.totals_by_kind(j.current_batch()), lang, cols)
            return ui.OpOutcome(c.op, "done", "report_totals", batch=j.current_batch(),
                                lines=tuple(lines))
        if c.op == "report_list":
            lines = reports.transaction_lines(j.records(batch=j.current_batch()), lang, cols)
            return ui.OpOutcome(c.op, "done", "report_list", batch=j.current_batch(), lines=tuple(lines))
        if c.op == "print_resume":
            # ENTER after loading paper: asked now, so the answer is what the printer says
            # (the spooler also resumes by itself at its next look; ENTER saves the wait).
            ready = await self._printer_ready()
            desk.wake()
            self.changed()
            if not ready:
                return ui.OpOutcome(c.op, "refused", "paper_still_out")
            return ui.OpOutcome(c.op, "done", "print_resumed")
        return ui.OpOutcome(c.op, "refused", "invalid_request", detail=c.op)

    async def _printer_ready(self) -> bool:
        desk = self.terminal.prints
        if desk is None or desk.printer is None:
            return False
        try:
            return (await desk.printer.status()).ready
        except PrinterUnavailable as exc:
            log.warning("printer: %s", exc)
            return False

    # ------------------------------------------------------------------ diagnostics

    def _lang(self) -> str:
        return str(self.terminal.settings.get("display", {}).get("language", "en"))

    async def _run_diag(self, name: str) -> None:
        try:
            result = await self.diagnostics.run(name)
        except asyncio.CancelledError:
            raise
        except Exception:  # the operator gets words, never a hung panel (the log gets the why)
            log.exception("diagnostic %s failed", name)
            result = diag_words(name, False, "check_failed", "check_failed_next", self._lang())
        self._events.put_nowait(result)

    # ------------------------------------------------------------------ settings

    async def _settings(self, command: ui.UiCommand) -> None:
        from firmware.app.services import settings

        try:
            answer = await settings.run(self.terminal, command)
        except Exception as exc:  # the operator gets words, never a hung panel
            log.exception("settings command failed")
            answer = ui.SettingsSaved(False, {"settings": str(exc)})
        if answer.ok:
            self.apply_display_settings()
        self._events.put_nowait(answer)

    # ------------------------------------------------------------------ card watch

    def _sync_card_watch(self) -> None:
        purpose = self.ui.screen.card_purpose
        reader = self.terminal.reader
        want = (purpose is not None and reader is not None and not self.terminal.busy
                and (self._op is None or self._op.done()) and self._clock() >= self._reader_retry_at)
        if want and self._watch is not None and not self._watch.done() and self._watch_purpose == purpose:
            return
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()  # disarms the reader at once
        self._watch = None
        self._watch_purpose = None
        if want:
            self._watch_purpose = purpose
            self._watch = asyncio.create_task(self._watch_cards(str(purpose)), name="card-watch")

    async def _watch_cards(self, purpose: str) -> None:
        reader = self.terminal.reader
        assert reader is not None
        tx = self.terminal.settings["transactions"]
        while True:
            try:
                event = await reader.read(magstripe=True, chip=True, timeout_s=3600.0)
            except ReaderUnavailable as exc:
                log.error("card reader: %s", exc)
                # Not at once again: a dead reader would otherwise fail in a loop.
                self._reader_retry_at = self._clock() + READER_RETRY_S
                self._events.put_nowait(ui.CardRefused("reader_unavailable"))
                return
            if isinstance(event, ReadTimedOut):
                continue
            if isinstance(event, ReadFailed):
                self._events.put_nowait(ui.CardRefused("card_unreadable"))
                continue
            if isinstance(event, ChipInserted | ChipRemoved):
                self._events.put_nowait(ui.ChipSeen(isinstance(event, ChipInserted)))
                continue
            if not isinstance(event, MagstripeRead):
                continue
            try:
                card = card_from_swipe(event, today=self._now().date(),
                                       allow_fallback=bool(tx["allow_fallback_swipe"]))
            except CardProblem as exc:
                self._events.put_nowait(ui.CardRefused(exc.key))
                continue
            if purpose == "sale":
                self._held_card = card  # in memory only, until the sale or DropCard
            self._events.put_nowait(ui.CardPresented(mask_pan(card.pan), card.entry_mode, card.expiry))
            if purpose == "sale":
                return


def outcome_of(op: str, result: TxnResult) -> ui.OpOutcome:
    """A TxnResult as a screen shows it: words come from the catalog keys, card data masked."""
    record = result.record
    return ui.OpOutcome(
        op=op, status=result.status, message_key=result.message_key, detail=result.detail,
        amount=record.amount if record is not None else None,
        pan_masked=record.pan_masked if record is not None else None,
        auth_code=record.auth_code if record is not None else None,
        voucher=record.invoice if record is not None else None,
        rrn=record.rrn if record is not None else None,
        batch=record.batch if record is not None else None,
        response_code=result.response_code, balance=result.balance,
    )
