"""The whole terminal operated by keys, in-process: the real Terminal and FrontPanel, the
terminal keypad driver on a real pty (tests type bytes into its master side, as a PC
keyboard would), the capture display, and the emulated reader and printer on real ptys
paired with the acquirer simulator on loopback. Optionally the ECR server on a loopback port,
so a till can start operations that the LCD shows and the keypad finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import pty
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers import PASSWORD, provision

from board.sim.firmware import sim_card
from board.sim.printer import EmulatedPrinter
from board.sim.reader import EmulatedReader
from drivers.display.capture import CaptureDisplay
from drivers.keypad.terminal_keypad import TerminalKeypad
from firmware.app.core.terminal import AppConfig
from firmware.app.frontends.ecr_server import EcrServer
from firmware.app.frontends.panel import FrontPanel
from firmware.app.terminal import Terminal
from firmware.ports import KeyPress

# Key names -> the bytes a PC terminal sends for them (see drivers/keypad/terminal_keypad.py).
KEY_BYTES: dict[str, bytes] = {
    "ENTER": b"\r", "CANCEL": b"\x1b", "CLEAR": b"\x7f", "MENU": b"m", "D00": b"d",
    "UP": b"\x1b[A", "DOWN": b"\x1b[B", "F1": b"\x1bOP", "F2": b"\x1bOQ", "F3": b"\x1bOR",
    "F4": b"\x1bOS", "DOT": b".",
}

# Bytes per second for a printer as slow as a 58 mm thermal mechanism (a receipt copy takes about
# half a second): slower than the keys, so a test that sets it sees receipts printing on at idle.
SLOW_PRINTER = 1500


class CountingKeypad:
    """The real terminal keypad driver, counting the keys it has handed to the panel, so a test
    knows a typed key was decoded (a lone Esc only after the driver's escape timeout)."""

    def __init__(self, keypad: TerminalKeypad) -> None:
        self.keypad = keypad
        self.delivered = 0

    async def next_key(self) -> KeyPress:
        press = await self.keypad.next_key()
        self.delivered += 1
        return press

    def close(self) -> None:
        self.keypad.close()


def squeezed(screen: str) -> str:
    """The text without blanks: a sentence matches however the LCD wrapped it."""
    return "".join(screen.split())


class Shop:
    """One terminal with its keypad, LCD, reader and printer. Use `async with Shop(...)`."""

    def __init__(self, tmp: Path, sim_port: int, *, rows: int = 4, cols: int = 16,
                 printer: bool = True, reader: bool = True, reply_timeout: float = 1.5,
                 ecr: bool = False, print_poll_s: float = 0.05, chip_slot: bool = True,
                 **tx: Any) -> None:
        self.tmp = tmp
        self.data_dir = provision(tmp / "terminal", sim_port, reply_timeout=reply_timeout, **tx)
        self.rows, self.cols = rows, cols
        self.with_printer, self.with_reader = printer, reader
        self.reader: EmulatedReader | None = None
        self.printer: EmulatedPrinter | None = None
        self.terminal: Terminal | None = None
        self.panel: FrontPanel | None = None
        self.display = CaptureDisplay(rows, cols)
        self._master = -1
        self._slave = -1
        self._task: asyncio.Task[None] | None = None
        self._keypad: CountingKeypad | None = None
        self._typed = 0  # keys written to the pty so far
        self.with_ecr = ecr
        self.ecr: EcrServer | None = None
        self.print_poll_s = print_poll_s  # how often a paused printer is asked if it is ready
        self.chip_slot = chip_slot  # False: a magstripe-only board (no chip tables to load)

    async def __aenter__(self) -> Shop:
        devices = self.tmp / "devices"
        if self.with_reader:
            self.reader = EmulatedReader(link_dir=devices).start()
        if self.with_printer:
            self.printer = EmulatedPrinter(devices).start()
        cfg = AppConfig(
            data_dir=self.data_dir, print_poll_s=self.print_poll_s,
            reader_path=str(self.reader.device_path) if self.reader else "",
            printer_path=str(self.printer.path) if self.printer else "",
        )
        self.terminal = Terminal(cfg)
        if not self.chip_slot:
            self.terminal.board = dataclasses.replace(self.terminal.board, chip_slot=False)
        await self.terminal.open()
        self._master, slave = pty.openpty()
        self._slave = slave
        self._keypad = CountingKeypad(TerminalKeypad(slave))
        self.panel = FrontPanel(self.terminal, self._keypad, self.display)
        self._task = asyncio.create_task(self.panel.run())
        await self.terminal.connect()
        if self.with_ecr:
            self.ecr = EcrServer(self.terminal, "127.0.0.1", 0, serial_path=None, test_cards=sim_card)
            await self.ecr.start()
        await self.idle()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.ecr is not None:
            await self.ecr.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.panel is not None:
            await self.panel.close()
        if self.terminal is not None:
            await self.terminal.close()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.reader is not None:
            self.reader.stop()
        if self.printer is not None:
            self.printer.stop()

    # ------------------------------------------------------------------ keys

    async def press(self, *keys: str) -> None:
        """Types keys: names from KEY_BYTES, or digit strings ("1234" is four keys)."""
        for key in keys:
            data = KEY_BYTES.get(key)
            if data is None:
                assert key.isdigit() or key == ".", f"not a key: {key!r}"
                for ch in key:
                    await self._type(ch.encode())
                continue
            await self._type(data)

    async def _type(self, data: bytes) -> None:
        """One key: written, decoded by the driver (a lone Esc after its timeout), handled."""
        assert self._keypad is not None
        keypad = self._keypad
        self._typed += 1
        os.write(self._master, data)
        await self.until(lambda: keypad.delivered >= self._typed, f"the keypad to decode {data!r}", 5.0)
        await self.quiet()

    async def quiet(self, settle_s: float = 0.02) -> None:
        """Until the panel has handled everything typed so far (no event for settle_s)."""
        assert self.panel is not None
        seen = -1
        while seen != self.panel.wakeups:
            seen = self.panel.wakeups
            await asyncio.sleep(settle_s)

    # ------------------------------------------------------------------ looking

    def screen(self) -> str:
        return self.display.text()

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the LCD shows:\n{self.screen()}")
            await asyncio.sleep(0.01)

    async def shows(self, *texts: str, timeout: float = 10.0) -> str:
        """Waits until the LCD shows every text (case-insensitive); returns the screen."""
        def visible() -> bool:
            screen = self.screen().lower()
            return all(t.lower() in screen for t in texts)
        await self.until(visible, f"{texts!r} on the LCD", timeout)
        return self.screen()

    async def shows_words(self, words: str, timeout: float = 10.0) -> str:
        """Waits until the LCD shows a sentence, wherever the screen wrapped it (blanks ignored);
        returns the screen."""
        await self.until(lambda: squeezed(words) in squeezed(self.screen()), f"{words!r} on the LCD",
                         timeout)
        return self.screen()

    async def idle(self) -> None:
        from firmware.ui.idle import IdleScreen

        assert self.panel is not None
        panel = self.panel
        await self.until(lambda: isinstance(panel.ui.screen, IdleScreen), "the idle screen")

    async def reader_armed(self, timeout: float = 5.0) -> None:
        """Until an operation's own read has armed the reader (see _reader_holds)."""
        await self.until(lambda: self._reader_holds(watch=False), "the operation to arm the reader",
                         timeout)

    async def swipe(self, card: str) -> None:
        """Swipes when an operation's card step has armed the reader (not the idle watch)."""
        assert self.reader is not None
        await self.reader_armed(timeout=10.0)
        self.reader.swipe(card)

    async def swipe_at_idle(self, card: str) -> None:
        """Swipes when the idle card watch (or the reader test's) has armed the reader."""
        assert self.reader is not None
        await self.until(lambda: self._reader_holds(watch=True), "the idle card watch")
        self.reader.swipe(card)

    def _reader_holds(self, watch: bool) -> bool:
        """The emulated reader holds the arm of the read the terminal waits on now, and that read
        is the card watch's (watch=True) or an operation's.

        "Armed, last command A" alone also matches an arm the terminal has given up: a watch
        cancelled when an operation starts (or a screen changes) writes its C at once, but the
        reader keeps the old arm until it has read that C, and a card swiped into it is lost (the
        operation then waits for a card for ever). So: no other watch still winding down, and the
        reader's last A is the one the driver's pending read sent."""
        reader, panel, terminal = self.reader, self.panel, self.terminal
        assert reader is not None and panel is not None and terminal is not None
        # firmware/app/frontends/panel.py names its watch tasks "card-watch"
        watches = [t for t in asyncio.all_tasks() if t.get_name() == "card-watch" and not t.done()]
        if watches != ([panel._watch] if watch else []) or terminal.busy == watch:
            return False
        pending = terminal.reader._arm  # type: ignore[union-attr]  # the driver's pending read
        commands = reader.last_commands
        return (pending is not None and pending.seq is not None and reader.armed and bool(commands)
                and commands[-1].type == "A" and commands[-1].seq == pending.seq)

    async def slips(self, count: int, timeout: float = 10.0) -> list[str]:
        """Every slip on paper once there are at least `count` and the print queue is empty."""
        assert self.printer is not None
        printer = self.printer
        await self.until(lambda: len(printer.slips) >= count, f"{count} printed slip(s)", timeout)
        return await self.printed(timeout)

    async def printed(self, timeout: float = 10.0) -> list[str]:
        """Every slip on paper once the print queue is empty (nothing queued, printing or paused).

        Count or index slips only from here: receipts print after the operation that queued them
        has returned to idle, so `printer.slips` read at any other moment holds what a slow
        printer or a loaded machine has got to, and "the next slip" is then an older one."""
        assert self.printer is not None
        printer, journal = self.printer, self.journal
        await self.until(lambda: not journal.print_jobs(open_only=True), "the print queue to empty",
                         timeout)
        return [slip.text for slip in printer.slips]

    @property
    def journal(self) -> Any:
        assert self.terminal is not None and self.terminal.journal is not None
        return self.terminal.journal

    # ------------------------------------------------------------------ helpers for flows

    async def password(self, password: str = PASSWORD) -> None:
        """Types the supervisor password and waits for its check (scrypt runs off the loop)."""
        from firmware.ui.entry import PasswordEntry

        assert self.panel is not None
        panel = self.panel
        await self.press(password, "ENTER")

        def checked() -> bool:
            screen = panel.ui.screen
            return not (isinstance(screen, PasswordEntry) and screen.checking)
        await self.until(checked, "the password check")
        await self.quiet()

    def ecr_request(self, **request: Any) -> asyncio.Task[dict[str, Any]]:
        """Sends one request as a till does (firmware.ecr.client, in a thread); await the reply."""
        from firmware.ecr.client import call

        assert self.ecr is not None, "Shop(..., ecr=True) starts the ECR server"
        port = self.ecr.port
        return asyncio.ensure_future(asyncio.to_thread(call, "127.0.0.1", port, request, 30.0))

    @property
    def current(self) -> Any:
        """The screen object the LCD shows (for what a 4-row LCD has scrolled away)."""
        assert self.panel is not None
        return self.panel.ui.screen
