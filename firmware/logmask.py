"""The one logging filter that keeps card data out of every log line.

Anything that looks like a PAN (13-19 digits) is masked to first 6 / last 4,
and anything that looks like track data (PAN=YYMM... or %B...^) is cut out,
whatever logger or formatter produced it.
"""

from __future__ import annotations

import logging
import re

_TRACK2 = re.compile(r";?\d{12,19}[=D]\d{4,}\??")
_TRACK1 = re.compile(r"%?B\d{12,19}\^[^^]{0,26}\^\d{4,}[^?\s]*\??")
_PAN = re.compile(r"(?<!\d)(\d{6})(\d{3,9})(\d{4})(?!\d)")


def mask_text(text: str) -> str:
    text = _TRACK1.sub("<track1 removed>", text)
    text = _TRACK2.sub("<track2 removed>", text)
    return _PAN.sub(lambda m: m.group(1) + "*" * len(m.group(2)) + m.group(3), text)


class CardDataFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_text(message)
        if masked != message:
            record.msg = masked
            record.args = None
        return True


def install(handler: logging.Handler) -> None:
    handler.addFilter(CardDataFilter())
