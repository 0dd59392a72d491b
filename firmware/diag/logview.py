"""The log viewer's lines: the tail of the terminal log read from the end of the file,
masked again for card data (defence in depth) and shortened for the LCD (time, level, message).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from firmware.logmask import mask_text
from firmware.ui.core import Catalog, DiagResult, say

NAME = "log"
BLOCK = 4096
LINE_BYTES_BUDGET = 1024  # bytes read per wanted line at most: one huge line cannot eat memory
MAX_LINE_CHARS = 240  # a shown line is cut after masking (cutting first could split a PAN)

# firmware/app/process.py's format: "%(asctime)s %(levelname)s %(name)s: %(message)s"
_RECORD = re.compile(
    r"^\d{4}-\d{2}-\d{2}[ T](?P<time>\d{2}:\d{2}:\d{2})(?:[,.]\d+)?\s+"
    r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(?:[\w.\-]+:\s)?(?P<message>.*)$"
)
_LEVEL_LETTER = {"DEBUG": "D", "INFO": "I", "WARNING": "W", "ERROR": "E", "CRITICAL": "C"}
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\ufffd]")

CATALOG: Catalog = {
    "ok": ("Last {count} log lines, newest first", "最近{count}行日志, 新的在前"),
    "ok_errors": ("Last {count} log lines, {errors} errors", "最近{count}行日志, {errors}条错误"),
    "ok_next": ("UP/DOWN to scroll", "上下键翻页"),
    "errors_next": ("Note the errors for support", "请记下错误告知维护"),
    "empty": ("The log is empty", "日志为空"),
    "missing": ("No log file at {path}", "找不到日志文件 {path}"),
    "missing_next": ("Logging is off or the disk is not mounted; call support",
                     "日志未开启或磁盘未挂载; 请联系维护"),
    "unreadable": ("Log cannot be read: {error}", "日志无法读取: {error}"),
    "unreadable_next": ("Restart the terminal; if it repeats, call support",
                        "请重启终端; 如再发生请联系维护"),
    "bad_count": ("Log viewer asked for {count} lines", "日志行数无效: {count}"),
    "bad_count_next": ("Call support", "请联系维护"),
}


def read_tail(path: Path, max_lines: int) -> list[str]:
    """The last max_lines lines of a file, oldest first, reading blocks from the end.

    A partial first line (where the byte budget ran out) is dropped rather than shown cut.
    """
    budget = max_lines * LINE_BYTES_BUDGET
    with open(path, "rb") as log_file:
        end = log_file.seek(0, os.SEEK_END)
        position, data = end, b""
        while position > 0 and data.count(b"\n") <= max_lines and end - position < budget:
            step = min(BLOCK, position)
            position -= step
            log_file.seek(position)
            data = log_file.read(step) + data
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the file ends with a newline
    if position > 0 and lines:
        lines.pop(0)  # started mid-line
    return [line.decode("utf-8", errors="replace") for line in lines[-max_lines:]]


def shorten(line: str) -> str:
    """A log record as the LCD shows it: '12:03:04 W message' (the date and logger dropped)."""
    line = _UNPRINTABLE.sub("?", line.rstrip("\r"))
    match = _RECORD.match(line)
    if match:
        line = f"{match['time']} {_LEVEL_LETTER[match['level']]} {match['message']}"
    return line[:MAX_LINE_CHARS]


def log_tail(path: str | Path, max_lines: int, lang: str) -> DiagResult:
    """The newest max_lines lines of the log, newest first, masked and shortened."""
    path = Path(path)
    if not isinstance(max_lines, int) or max_lines < 1:
        return DiagResult(NAME, False, say(CATALOG, "bad_count", lang, count=max_lines),
                          say(CATALOG, "bad_count_next", lang))
    try:
        raw = read_tail(path, max_lines)
    except FileNotFoundError:
        return DiagResult(NAME, False, say(CATALOG, "missing", lang, path=path),
                          say(CATALOG, "missing_next", lang))
    except OSError as exc:
        return DiagResult(NAME, False, say(CATALOG, "unreadable", lang, error=exc.strerror or exc),
                          say(CATALOG, "unreadable_next", lang))
    # Masked before anything else looks at the line, and again after shortening in case the
    # cut joined digits into something PAN-like.
    shown = [mask_text(shorten(mask_text(line))) for line in reversed(raw)]
    if not shown:
        return DiagResult(NAME, True, say(CATALOG, "empty", lang), say(CATALOG, "ok_next", lang))
    errors = sum(1 for line in raw if _is_error(line))
    if errors:
        return DiagResult(NAME, True, say(CATALOG, "ok_errors", lang, count=len(shown), errors=errors),
                          say(CATALOG, "errors_next", lang), tuple(shown))
    return DiagResult(NAME, True, say(CATALOG, "ok", lang, count=len(shown)),
                      say(CATALOG, "ok_next", lang), tuple(shown))


def _is_error(line: str) -> bool:
    match = _RECORD.match(line)
    return bool(match and match["level"] in ("ERROR", "CRITICAL"))
