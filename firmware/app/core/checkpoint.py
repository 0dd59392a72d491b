"""The journal's checkpoint at idle: once the terminal has been quiet for IDLE_S (no operation
holds the lock, no copy is printing), the WAL is copied into the database and started again
(firmware/journal/wal.py), so that no sale's commit ever pays for a checkpoint.

Event-driven, like the rest of the app: activity pokes a one-shot timer (the end of an
operation, a change the idle screen shows, the spooler going quiet); when it fires on a quiet
terminal with something written since the last checkpoint, the checkpoint runs, on the loop's
thread like every journal call (a few milliseconds at idle). Busy when it fires: nothing, the
end of that work pokes again. A terminal left idle after its checkpoint is never woken.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final, Protocol

from firmware.journal.errors import JournalError
from firmware.journal.wal import Checkpoint

log = logging.getLogger("posfw.app")

IDLE_S: Final = 2.0  # quiet this long before the checkpoint
RETRY_MAX_S: Final = 60.0  # a reader (a backup) kept frames: tried again, waiting at most this


class Timer(Protocol):
    def cancel(self) -> None: ...


Schedule = Callable[[float, Callable[[], None]], Timer]  # (seconds, callback) -> its timer


def _loop_schedule(delay: float, callback: Callable[[], None]) -> Timer:
    return asyncio.get_running_loop().call_later(delay, callback)


class IdleCheckpoint:
    """Pokes arm the timer; it checkpoints when it fires on a quiet terminal (module docstring).

    checkpoint: the journal's checkpoint_at_idle (None: nothing written since the last one);
    quiet: no operation and no printing now; schedule: the running loop's call_later (tests
    pass their own clock)."""

    def __init__(self, checkpoint: Callable[[], Checkpoint | None], quiet: Callable[[], bool],
                 delay_s: float = IDLE_S, schedule: Schedule = _loop_schedule) -> None:
        self._checkpoint = checkpoint
        self._quiet = quiet
        self._schedule = schedule
        self.delay_s = delay_s
        self._retry_s = delay_s
        self._timer: Timer | None = None
        self.done = 0  # checkpoints run (diagnostics and tests)

    def poke(self) -> None:
        """Something happened: the checkpoint waits for IDLE_S of quiet from now."""
        if self._timer is not None:
            self._timer.cancel()
        try:
            self._timer = self._schedule(self.delay_s, self._due)
        except RuntimeError:  # no running loop (a tool using the core synchronously)
            self._timer = None

    def _due(self) -> None:
        self._timer = None
        if not self._quiet():
            return  # the operation or the print job under way pokes again when it ends
        try:
            done = self._checkpoint()
        except JournalError as exc:  # a full disk: the sale's own commit will say it in words
            log.warning("idle checkpoint: %s", exc)
            return
        if done is None:
            return
        self.done += 1
        if done.complete:
            self._retry_s = self.delay_s
            return
        # A reader (a backup copying the journal) still uses frames: try again later, less often.
        self._retry_s = min(self._retry_s * 2, RETRY_MAX_S)
        self._timer = self._schedule(self._retry_s, self._due)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
