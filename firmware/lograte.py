"""The logging filter that collapses repeated lines, so that a flood cannot fill the partition.

The log shares the data partition with the journal: a line repeated (same logger, level and
text) within WINDOW_S is counted, not written; its next appearance after the window carries
"(repeated N times in the last 60 s)". One filter per handler (each keeps its own count).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

WINDOW_S = 60.0
MAX_KEYS = 1000  # distinct lines remembered; older ones are forgotten first


class RepeatFilter(logging.Filter):
    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key -> (written at, repeats)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        written = self._seen.get(key)
        if written is not None and now - written[0] < self.window_s:
            self._seen[key] = (written[0], written[1] + 1)
            return False
        self._seen.pop(key, None)
        if len(self._seen) >= MAX_KEYS:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = (now, 0)
        if written is not None and written[1]:
            record.msg = f"{record.getMessage()} (repeated {written[1]} times in the last " \
                         f"{self.window_s:.0f} s)"
            record.args = None
        return True
