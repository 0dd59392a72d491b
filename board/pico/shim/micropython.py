"""Host-side stand-in for MicroPython's `micropython` module, so board/pico/main.py runs on CPython.

Only what the program uses: const().
"""

from __future__ import annotations

from typing import TypeVar

_T = TypeVar("_T")


def const(expr: _T) -> _T:
    """MicroPython folds these at compile time; on CPython it is the value itself."""
    return expr

