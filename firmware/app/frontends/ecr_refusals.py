"""Refused ECR requests in the audit log and the log: who asked, what, and why.

A flood of garbage must not become a flood of journal writes: per source, the first refusal is
written at once, the rest of the window (WINDOW_S) are counted and written as one line when it
ends. So a source costs at most two audit lines a minute, however fast it sends.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware.journal.errors import JournalError

if TYPE_CHECKING:
    from firmware.app.terminal import Terminal

log = logging.getLogger("posfw.ecr")

WINDOW_S = 60.0
REFUSED_RESULTS = frozenset({"error", "busy", "refused"})


@dataclass
class _Window:
    count: int = 0
    last: str = ""
    timer: asyncio.TimerHandle | None = None


class RefusalLog:
    def __init__(self, terminal: Terminal, window_s: float = WINDOW_S) -> None:
        self.terminal = terminal
        self.window_s = window_s
        self._windows: dict[str, _Window] = {}

    def note_reply(self, source: str, reply: dict[str, Any]) -> None:
        """Every reply passes here; the refusals among them are written."""
        if reply.get("result") in REFUSED_RESULTS:
            self.note(source, str(reply.get("op") or "request"), str(reply.get("message", "")))

    def note(self, source: str, what: str, why: str) -> None:
        line = f"{what}: {why}"[:300]
        window = self._windows.get(source)
        if window is not None:
            window.count += 1
            window.last = line
            return
        self._write(source, f"ecr {what} refused", why[:300])
        window = self._windows[source] = _Window()
        window.timer = asyncio.get_running_loop().call_later(self.window_s, self._close, source)

    def flush(self) -> None:
        """The link closes: counted refusals are written now."""
        for source in list(self._windows):
            timer = self._windows[source].timer
            if timer is not None:
                timer.cancel()
            self._close(source)

    def _close(self, source: str) -> None:
        window = self._windows.pop(source)
        if window.count:
            self._write(source, "ecr requests refused",
                        f"{window.count} more in {self.window_s:.0f} s; last {window.last}")

    def _write(self, source: str, action: str, detail: str) -> None:
        log.warning("%s from %s: %s", action, source, detail)
        journal = self.terminal.journal
        if journal is None:
            return  # service mode: the log line is all there is
        try:
            journal.audit(source, action, detail, "refused")
        except JournalError as exc:  # a full disk must not stop the link from answering
            log.error("refusal not audited: %s", exc)
