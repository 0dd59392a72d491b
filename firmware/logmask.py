"""The one place that keeps card data out of every log line: the final formatted text of a
record (its message, its traceback and its stack alike) is masked before a handler writes it.

Anything that looks like a PAN (13-19 digits, also written in groups with spaces or dashes)
is masked to first 6 / last 4, and anything that looks like track data (PAN=YYMM... or
%B...^) is cut out, whatever logger, formatter or exception produced it.
"""

from __future__ import annotations

import logging
import re

_TRACK2 = re.compile(r";?\d{12,19}[=D]\d{4,}\??")
_TRACK1 = re.compile(r"%?B\d{12,19}\^[^^]{0,26}\^\d{4,}[^?\s]*\??")
# 13-19 digits, optionally in groups split by one space or dash ("6222 0212 3456 7890").
_PAN = re.compile(r"(?<![\d])\d(?:[ -]?\d){12,18}(?![\d])")


def _mask_pan(match: re.Match[str]) -> str:
    """First 6 and last 4 digits kept, the ones between starred; separators stay as they were."""
    text = match.group(0)
    digits = sum(ch not in " -" for ch in text)
    out, seen = [], 0
    for ch in text:
        if ch in " -":
            out.append(ch)
            continue
        seen += 1
        out.append(ch if seen <= 6 or seen > digits - 4 else "*")
    return "".join(out)


def mask_text(text: str) -> str:
    text = _TRACK1.sub("<track1 removed>", text)
    text = _TRACK2.sub("<track2 removed>", text)
    return _PAN.sub(_mask_pan, text)


class MaskingFormatter(logging.Formatter):
    """Formats with the handler's own formatter, then masks the whole text."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner if inner is not None else logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(self.inner.format(record))


class _KeepMasking(logging.Filter):
    """Runs before every emit: a formatter set on the handler after install() is wrapped too,
    so no later setFormatter() can take the mask away."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self._handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(self._handler.formatter, MaskingFormatter):
            self._handler.setFormatter(MaskingFormatter(self._handler.formatter))
        return True


def install(handler: logging.Handler) -> None:
    """Mask everything `handler` writes (idempotent)."""
    if any(isinstance(f, _KeepMasking) for f in handler.filters):
        return
    handler.setFormatter(MaskingFormatter(handler.formatter))
    handler.addFilter(_KeepMasking(handler))
