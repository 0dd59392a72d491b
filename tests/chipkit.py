"""Test kit for chip sales through the emulated reader: the reader on a real pty (for a module's
`reader` fixture), a terminal wired to it, and a bounded wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from board.sim.reader import EmulatedReader
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal


def emulated_reader(link_dir: Path) -> Iterator[EmulatedReader]:
    """For a fixture: `yield from emulated_reader(tmp_path)`; stopped at teardown."""
    r = EmulatedReader(link_dir=link_dir).start()
    try:
        yield r
    finally:
        r.stop()


async def chip_terminal(data_dir: Path, reader: EmulatedReader) -> Terminal:
    """A started terminal (the sim board) whose card reader is `reader`."""
    t = Terminal(AppConfig(data_dir=data_dir, reader_path=str(reader.device_path)))
    await t.start()
    return t


async def until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)
