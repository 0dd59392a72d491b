"""The log under a flood (issue 12, item 12): repeated lines are collapsed with a count, and the
log rotates under a size cap (it shares the data partition with the journal), masked throughout.
"""

from __future__ import annotations

import logging
from pathlib import Path

from firmware.app.process import LOG_BACKUPS, LOG_MAX_BYTES, setup_logging
from firmware.logmask import MaskingFormatter
from firmware.lograte import RepeatFilter


def test_repeated_log_lines_are_collapsed_with_a_count():
    now = [0.0]
    flt = RepeatFilter(window_s=60, clock=lambda: now[0])

    def record(msg: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, args, None)

    passed = [flt.filter(record("socket.accept() out of system resource")) for _ in range(1000)]
    assert passed.count(True) == 1
    assert flt.filter(record("another line %d", 1)) and flt.filter(record("another line %d", 2))
    now[0] = 61.0
    later = record("socket.accept() out of system resource")
    assert flt.filter(later)
    assert later.getMessage() == ("socket.accept() out of system resource "
                                  "(repeated 999 times in the last 60 s)")
    assert flt.filter(record("socket.accept() out of system resource")) is False


def test_the_log_rotates_under_its_cap_masked_and_collapsed(tmp_path: Path):
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        setup_logging(tmp_path, "INFO", to_stderr=True)
        added = [h for h in root.handlers if h not in before]
        for handler in added:  # every handler masks card data and collapses repeats
            assert isinstance(handler.formatter, MaskingFormatter)
            assert any(isinstance(f, RepeatFilter) for f in handler.filters)
        stderr = [h for h in added if isinstance(h, logging.StreamHandler)
                  and not isinstance(h, logging.FileHandler)]
        root.removeHandler(stderr[0])  # the file is what is under test
        log = logging.getLogger("posfw.test")
        line = "x" * 200
        for n in range((LOG_BACKUPS + 2) * LOG_MAX_BYTES // 240):
            log.info("card 6222021234567890128 line %d %s", n, line)
    finally:
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    files = sorted(tmp_path.glob("terminal.log*"))
    assert [f.name for f in files] == ["terminal.log"] + [f"terminal.log.{n}" for n in
                                                          range(1, LOG_BACKUPS + 1)]
    assert all(f.stat().st_size <= LOG_MAX_BYTES for f in files)
    assert "6222021234567890128" not in "".join(f.read_text() for f in files)
