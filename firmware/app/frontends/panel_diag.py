"""The panel's diagnostics: the checks behind the Diagnostics menu (echo, network, journal, log,
version, firmware slots, printer, reader, settings history, display), run for the keypad/LCD front end.

Split out of panel.py by concern: FrontPanel starts a check as a task (RunDiag) and queues the
DiagResult it gets back; the checks themselves live in firmware/diag and take what they need as
arguments. This class owns what they need from the running terminal: the echo history kept
across runs, the printer test that waits for its slip, the reader's link check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from firmware.ui import core as ui

if TYPE_CHECKING:
    from firmware.app.terminal import Terminal

log = logging.getLogger("posfw.panel")  # the panel's log name: its diagnostics are the panel's

PRINT_DIAG_WAIT_S = 60.0  # a test slip that has not finished by then is reported as a failure


class PanelDiagnostics:
    """The Diagnostics menu's checks for one Terminal. `changed` is the panel's event, set when
    the terminal reports news (the printer test waits on it); `lang` is the operator's language
    now (it may change between checks)."""

    def __init__(self, terminal: Terminal, clock: Callable[[], float], changed: asyncio.Event,
                 lang: Callable[[], str]) -> None:
        from firmware.diag.checks import EchoHistory

        self.terminal = terminal
        self._clock = clock
        self._changed = changed
        self._lang = lang
        self.echo_history = EchoHistory()

    def echo_outcome(self, answer: tuple[bool, float, str]) -> ui.OpOutcome:
        """An echo test started as an operation (menu, F1 on "host unreachable"), as its result screen."""
        ok, seconds, detail = answer
        result = self.echo_result(ok, seconds, detail)
        return ui.OpOutcome("echo", "done" if ok else "failed", "echo_ok" if ok else "host_unreachable",
                            detail=result.reason, lines=(result.reason, result.next_step, *result.lines))

    def echo_result(self, ok: bool, seconds: float, detail: str) -> ui.DiagResult:
        from firmware.diag.checks import echo_result

        comms = self.terminal.settings["comms"]
        return echo_result(ok, seconds, detail, self.echo_history, self._lang(),
                           str(comms["host"]), int(comms["port"]))

    async def run(self, name: str) -> ui.DiagResult:
        """The check named by the screen (RunDiag.name)."""
        from firmware.diag import buildinfo, journal_check, logview, netinfo

        t, lang = self.terminal, self._lang()
        if name == "echo":
            if t.busy:
                return diag_words(name, False, "check_busy", "check_busy_next", lang)
            return self.echo_result(*(await t.echo()))
        if name == "network":
            comms = t.settings["comms"]
            return await asyncio.get_running_loop().run_in_executor(
                None, netinfo.network_info, str(comms["host"]), int(comms["port"]), lang)
        if name == "journal":
            if t.journal is None:
                log.error("journal check: no journal (%s)", t.service_problem)
                return diag_words(name, False, "check_no_journal", "check_failed_next", lang)
            return journal_check.check_journal(t.journal, lang, time.time())
        if name == "log":
            return logview.log_tail(t.data_dir / "terminal.log", 200, lang)
        if name == "version":  # and where the keys are (the key store's state, in words)
            result = buildinfo.version_info(t.board.name, lang)
            return replace(result, lines=(*result.lines, *t.key_words(lang)))
        if name == "printer":
            return await self.printer_test()
        if name == "reader":
            return await self.reader_check()
        if name == "settings_history":
            from firmware.settings.store import history_lines

            return ui.DiagResult(name, True, "", "", tuple(history_lines(t.settings_store.history(), lang)))
        if name == "display":
            return diag_words(name, True, "check_shown", None, lang)
        if name == "firmware":  # both slots, which runs and why, this firmware's version
            from firmware.app.services.updates import firmware_lines

            ok, lines, _data = await firmware_lines(t, lang)
            return ui.DiagResult(name, ok, lines[0], "", tuple(lines[1:]))
        log.error("diagnostics: no check named %s", name)
        return diag_words(name, False, "check_failed", "check_failed_next", lang)

    async def printer_test(self) -> ui.DiagResult:
        from firmware.diag.checks import printer_result
        from firmware.printing.queue import PrintState

        desk = self.terminal.prints
        if desk is None or desk.printer is None:
            return printer_result(PrintState.FAILED, "printer_unavailable", self._lang())
        job = desk.test_page()
        deadline = self._clock() + PRINT_DIAG_WAIT_S
        while True:
            job = desk.journal.print_job(job.id)
            if job.state in (PrintState.DONE, PrintState.FAILED, PrintState.CANCELLED) or (
                    job.state is PrintState.PAUSED):
                break
            if self._clock() > deadline:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self._changed.wait()
        problem = job.reason or (desk.spooler.problem if desk.spooler else None)
        return printer_result(job.state, problem, self._lang())

    async def reader_check(self) -> ui.DiagResult:
        from firmware.diag.checks import reader_result

        reader = self.terminal.reader
        if reader is None:
            return reader_result(None, False, {}, self._lang())
        version, chip = None, False
        try:
            async with asyncio.timeout(2.0):
                version = await reader.version()  # type: ignore[attr-defined]
                chip, _ = await reader.status()  # type: ignore[attr-defined]
        except Exception as exc:  # no answer, in words on the LCD; the why goes to the log
            log.error("card reader link check: %r", exc)
        stats = getattr(reader, "link_stats", {})  # a property of the serial link driver
        return reader_result(version, chip, stats, self._lang())


def diag_words(name: str, ok: bool, reason: str, next_step: str | None, lang: str) -> ui.DiagResult:
    """A diagnostics result in the operator's language, from the diagnostics catalog."""
    from firmware.diag.checks import CATALOG as DIAG_CATALOG

    return ui.DiagResult(name, ok, ui.say(DIAG_CATALOG, reason, lang),
                         ui.say(DIAG_CATALOG, next_step, lang) if next_step else "")
