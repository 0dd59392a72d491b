"""Host-side MicroPython `time`: CPython's time plus ticks_ms/ticks_diff/ticks_add/sleep_ms.

sitecustomize.py installs this module as `time` so board/pico/main.py keeps its MicroPython
`import time`. Ticks wrap at 2**30 like the RP2040 port's; POSPICO_TICKS_START sets where they
begin, so a test can make them wrap within a few hundred milliseconds.
"""

from __future__ import annotations

import os
import time as _host_time
from time import *  # noqa: F403 - this module stands in for the whole of `time`

TICKS_PERIOD = 1 << 30
_TICKS_MAX = TICKS_PERIOD - 1
_TICKS_HALF = TICKS_PERIOD // 2

_origin = _host_time.monotonic_ns()
_ticks_start = int(os.environ.get("POSPICO_TICKS_START", "0")) & _TICKS_MAX


def _elapsed_us() -> int:
    return (_host_time.monotonic_ns() - _origin) // 1000


def ticks_ms() -> int:
    return (_ticks_start + _elapsed_us() // 1000) & _TICKS_MAX


def ticks_us() -> int:
    return (_ticks_start * 1000 + _elapsed_us()) & _TICKS_MAX


ticks_cpu = ticks_us


def ticks_diff(ticks1: int, ticks2: int) -> int:
    """Signed ticks1 - ticks2 modulo the period, as MicroPython defines it."""
    return ((ticks1 - ticks2 + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF


def ticks_add(ticks: int, delta: int) -> int:
    return (ticks + delta) & _TICKS_MAX


def sleep_ms(ms: int) -> None:
    _host_time.sleep(ms / 1000)


def sleep_us(us: int) -> None:
    _host_time.sleep(us / 1_000_000)
