"""What the idle terminal has imported (issue 19: resident memory under 40 MB).

The firmware as a device runs it (`python -m firmware.app`, through tests/idle_entry.py, which
only adds a SIGUSR1 handler that writes sys.modules out), with its keypad and LCD on a pty, its
key store in SoftHSM2, signed on at the simulator (the chip tables downloaded) and at the idle
screen. What only an operation needs is imported by that operation: a module named here found
loaded at idle is a lazy import that became an eager one again (each costs resident memory,
and start-up time, for as long as the terminal runs).

Still loaded at idle, and why (each a module-level import outside this issue's changes):
cryptography and psec (drivers/keystore/pkcs11.py and tr31.py, firmware/host/mac.py import psec,
whose package import loads cryptography), importlib.metadata (drivers/keystore/pkcs11.py),
pyemv (the chip-parameter download after the first sign-on encodes TLV with it, and importing
pyemv loads cryptography too).
"""

from __future__ import annotations

import json
import os
import pty
import signal
import threading
import time
from pathlib import Path

from helpers import TerminalProcess, provision

# Not at idle: module -> what needs it (where it is imported, lazily).
NOT_AT_IDLE: dict[str, str] = {
    "PIL": "a logo on the receipt, raster printing, a framebuffer or SPI LCD",
    "escpos": "printer capabilities and raster rendering (drivers/printer/render.py)",
    "luma": "a framebuffer or SPI LCD board (drivers/display/luma_backend.py)",
    "smartcard": "a PC/SC chip reader (drivers/reader/pcsc.py)",
    "serial": "a board with a receipt printer or a serial reader (none here)",
    "spake2": "pairing a till (firmware/ecr/auth.py)",
    "firmware.emv.kernel": "a chip card inserted (firmware/app/core/flows.py)",
    "firmware.app.core.chip": "a chip card inserted (firmware/app/core/flows.py)",
    "platform": "the diagnostics screen's version lines (firmware/diag/buildinfo.py)",
}
# Loaded at idle, or the list above proves nothing (the handler ran before the idle screen).
AT_IDLE = ("firmware.ui.idle", "firmware.app.frontends.panel", "firmware.journal.store",
           "drivers.keystore.pkcs11")


class Drain(threading.Thread):
    """Reads the LCD's output off the pty master so the terminal never blocks writing a frame."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd

    def run(self) -> None:
        while True:
            try:
                if not os.read(self.fd, 65536):
                    return
            except OSError:
                return


def idle_modules(tmp: Path, sim_port: int) -> set[str]:
    """The modules of a terminal at its idle screen, signed on and not busy."""
    data = provision(tmp / "terminal", sim_port)
    out = tmp / "modules.json"
    master, slave = pty.openpty()
    Drain(master).start()
    terminal = TerminalProcess(
        data, ["--panel", "board", "--printer", "", "--reader", "", "--log-level", "WARNING"],
        module="tests.idle_entry", env={"POSFW_MODULES_FILE": str(out)}, tty=slave)
    try:
        terminal.start()  # ready, then `status` says not busy: sign-on and its downloads are done
        assert terminal.proc is not None
        os.kill(terminal.proc.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 20
        while not out.exists():
            assert time.monotonic() < deadline, "the terminal did not write its modules"
            time.sleep(0.02)
        return set(json.loads(out.read_text()))
    finally:
        terminal.stop()
        os.close(slave)
        os.close(master)


def test_the_idle_terminal_has_not_imported_what_only_an_operation_needs(tmp_path: Path,
                                                                           sim) -> None:
    modules = idle_modules(tmp_path, sim.port)
    missing = [name for name in AT_IDLE if name not in modules]
    assert not missing, f"not at the idle screen yet: {missing} not imported"
    loaded = {name: why for name, why in NOT_AT_IDLE.items()
              if any(m == name or m.startswith(name + ".") for m in modules)}
    assert not loaded, "imported at idle, needed only for: " + "; ".join(
        f"{name} ({why})" for name, why in loaded.items())
