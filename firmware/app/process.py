"""Process set-up shared by the firmware's entry points (firmware/app/main.py and
firmware/app/provision.py): private files (umask), the log (rotated, masked, repeats collapsed)
and the refusal to start without the C extension."""

from __future__ import annotations

import logging
import os
import sys
from logging.handlers import RotatingFileHandler
from pathlib import Path

from firmware.logmask import install as install_mask
from firmware.lograte import RepeatFilter

# The log shares the data partition with the journal: at most 5 x 1 MiB. At INFO a busy day
# writes a few hundred kB, so this keeps about a week for support, and a flood (which the repeat
# filter collapses anyway) can never take the journal's room.
LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 4


def setup_logging(data_dir: Path, level: str, to_stderr: bool = True) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.setLevel(level)
    handlers: list[logging.Handler] = [RotatingFileHandler(
        data_dir / "terminal.log", maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8")]
    if to_stderr:  # not under the console: log lines would scribble over the LCD box
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(fmt)
        handler.addFilter(RepeatFilter())
        install_mask(handler)
        root.addHandler(handler)


def private_files() -> None:
    """Every file the process creates from here on is 0600 and every directory 0700: the
    journal (with its -wal and -shm), the log, the settings and their history, exports."""
    os.umask(0o077)


def require_c_extension() -> None:
    """Without the C extension the firmware refuses to start (no silent slow path)."""
    # This file is firmware/app/process.py: parents[2] is the checkout, which holds c_ext/
    # (a wrong level would find no c_ext/ and switch the check off without a word).
    if not (Path(__file__).resolve().parents[2] / "c_ext").is_dir():
        return
    try:
        import c_ext.posio  # noqa: F401
    except ImportError as exc:
        raise SystemExit(str(exc)) from None


def seconds_since_start() -> float | None:
    """How long this process has lived (Linux: its start time in /proc/self/stat against
    /proc/uptime), interpreter start-up included; None where /proc does not say. The firmware
    logs it when it is ready: its own share of a board's boot."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        # Field 22 (starttime, clock ticks after boot), counted after the ")" that ends the name.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
