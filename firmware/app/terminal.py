"""The terminal as the process runs it: the core (firmware/app/core/terminal.py) with the
services plugged in through its hooks.

The core asks for its key store, paper, a card reader and two pieces of start-up work without
importing any service; this module answers: the board's key store, the print desk with the
board's printer, the board's reader (firmware/app/devices.py chooses the drivers), the
deregistration's resume after a power loss and the held orders' reconcile. Front ends and tests
take this Terminal; services take the core.
"""

from __future__ import annotations

from typing import Any

from firmware.app import devices
from firmware.app.core.terminal import AppConfig, TerminalCore
from firmware.app.services import deregister, held, updates
from firmware.app.services.printing import PrintDesk
from firmware.ports import CardReader, KeyStore


class Terminal(TerminalCore):
    """The terminal with the print desk, the board's reader, the deregistration's start-up
    resume and the held orders' start-up reconcile plugged in."""

    prints: PrintDesk | None

    def __init__(self, cfg: AppConfig, *args: Any, **kwargs: Any) -> None:
        super().__init__(cfg, *args, **kwargs)
        self.update_agent = devices.make_update_agent(self.board)

    def _open_key_store(self) -> KeyStore:
        reader = None
        if devices.key_store_kind(self.board, self.cfg.key_store) == "pinpad":
            # The PIN pad is in the card reader: the reader opens first, and stays the board's
            # (close() closes it, a start in service mode included).
            reader = self.reader = devices.make_reader(self.board, self.cfg)
        return devices.open_key_store(self.board, self.data_dir, self.cfg.key_store, reader)

    def _open_paper(self) -> PrintDesk:
        assert self.journal is not None
        printer = devices.make_printer(self.board, self.cfg, self.settings)
        desk = PrintDesk(self.journal, printer, lambda: self.settings, self.now,
                         poll_s=self.cfg.print_poll_s, logo_path=self.data_dir / "logo.png")
        desk.start()
        if desk.spooler is not None:
            desk.spooler.on_change = self.notify_changed
        return desk

    def _open_reader(self) -> CardReader | None:
        if self.reader is not None:  # a PIN pad board's, opened with its keys
            return self.reader
        return devices.make_reader(self.board, self.cfg)

    async def _after_open(self) -> None:
        # A deregistration cut by a power loss: undone if the wipe had not begun, else finished.
        await deregister.resume_at_startup(self)
        # The first start of a newly installed slot: its health check, then mark it good.
        await updates.confirm_at_startup(self)

    def _before_start_up_sign_on(self) -> None:
        # An order whose operation was cut before its record was written goes back now;
        # one with a record follows it (journal/follow.py).
        held.held(self).reconcile(stale=True)
