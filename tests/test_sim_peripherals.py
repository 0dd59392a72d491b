"""The sim board's peripherals process: slips archived as NNNN.txt/.png, numbered on from what a
kept device directory already holds (make qemu-run keeps its own), and told to any stream."""

from __future__ import annotations

import io
import os
import time
import tty
from pathlib import Path

from board.sim.peripherals import Peripherals


def test_slips_are_numbered_on_after_the_archive_and_told_to_the_echo_stream(tmp_path: Path) -> None:
    (tmp_path / "slips").mkdir()
    (tmp_path / "slips" / "0007.txt").write_text("an older run's slip\n")
    told = io.StringIO()
    peripherals = Peripherals(tmp_path, echo=False)
    peripherals.echo_to = told
    peripherals.start()
    try:
        fd = os.open(os.path.realpath(peripherals.printer.path), os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd)
        os.write(fd, b"\x1b@HELLO SLIP\n\n\n\x1dV\x00")  # init, a line, feed, full cut
        deadline = time.monotonic() + 5
        while not (tmp_path / "slips" / "0008.txt").exists():
            assert time.monotonic() < deadline, sorted(os.listdir(tmp_path / "slips"))
            time.sleep(0.02)
        os.close(fd)
    finally:
        peripherals.stop()
    assert (tmp_path / "slips" / "0007.txt").read_text() == "an older run's slip\n"
    assert "HELLO SLIP" in (tmp_path / "slips" / "0008.txt").read_text()
    assert (tmp_path / "slips" / "0008.png").exists()
    assert "--- printed slip 8" in told.getvalue() and "HELLO SLIP" in told.getvalue()
