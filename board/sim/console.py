"""The development console of `make run`: the LCD as a box, a key legend, the printer's paper,
and hot keys that swipe test cards or take the paper away.

Owns the terminal layout around the real TerminalDisplay and TerminalKeypad drivers (the
firmware sees only those), the printer panel fed by the emulated printer's output pipe, and
the hot keys, which go to the emulated peripherals' control port like the CLI's commands.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sys
from collections import deque
from typing import Any, Protocol, TextIO

from board.sim.cards import TEST_CARDS
from board.sim.control import ControlClient, ControlError
from drivers.display import fit_row
from drivers.display.terminal import CSI, TerminalDisplay, move_to
from drivers.keypad.terminal_keypad import TerminalKeypad
from firmware.ports import Frame

log = logging.getLogger("posfw.console")

# Cards in the order the 'c' hot key cycles through them (the first is selected at start).
CARD_ORDER = ("cup_credit", "cup_debit", "visa", "mastercard", "jcb", "expired", "blocked",
              "bad_luhn", "cup_chip")
PAPER_LINES = 14  # printer panel height
PAPER_WIDTH = 40  # columns: 2 + a 58 mm receipt's 32 (an 80 mm one's 48 is cut)

LEGEND = (
    "Keys (PC -> terminal)",
    "  0-9     digits",
    "  .       dot (text only)",
    "  d       00",
    "  Enter   ENTER",
    "  Esc     CANCEL",
    "  Backsp  CLEAR",
    "  Up/Down UP/DOWN",
    "  F1-F4   F1-F4",
    "  m       MENU",
    "Hot keys (devices)",
    "  s  swipe the card",
    "  c  next test card",
    "  i/r insert/remove chip",
    "  k  PIN pad: card's PIN+ENTER",
    "  x  PIN pad: CANCEL",
    "  p  paper out  l load",
    "  o  open/close cover",
    "  Ctrl-C quit",
)


class CardWait(Protocol):
    """What the console asks of the terminal's card reader driver (drivers/reader/serial_link.py)
    so that a swipe reaches the read the terminal waits on."""

    events_taken: int
    stats: Any  # .stale_events: events for a read the terminal had given up

    def waiting_for_card(self) -> bool: ...


SWIPE_WAIT_S = 30.0  # how long `s` keeps the card at the reader for the terminal to ask for it
POLL_S = 0.05


class DevConsole:
    """Lays out the console; .display and .keypad are the drivers the firmware uses.

    The `s` hot key holds the card at the reader until the terminal waits for one (card_wait,
    the firmware's reader driver, set by the app), then swipes it into that wait and says
    "swiped" only once the terminal took it: keys typed in the same burst (the ENTER that starts
    the card wait) reach the firmware first, and a wait given up as the swipe arrived is
    answered with the next one."""

    def __init__(self, rows: int, cols: int, board: str, *, control_port: int,
                 printer_feed_fd: int | None = None, stream: TextIO | None = None,
                 keypad_fd: int = 0, card_wait: CardWait | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.rows, self.cols = rows, cols
        self.board = board
        self.control_port = control_port
        self.card_index = 0
        self._device_worker = concurrent.futures.ThreadPoolExecutor(1, "console-devices")
        self.cover_open = False
        self.message = ""
        self.paper: deque[str] = deque(maxlen=PAPER_LINES)
        self._feed_fd = printer_feed_fd
        self._feed_buffer = b""
        self.legend_col = 42  # right of the LCD box and its icon line (at most 40 columns)
        self.paper_top = rows + 6  # under the box (rows + 2 lines from line 2) and two icon lines
        self.display = TerminalDisplay(rows, cols, self.stream, top=2, left=2, clear=False, width=39)
        self.keypad = TerminalKeypad(keypad_fd, on_other=self.hot_key)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.card_wait = card_wait
        self._swiping: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.stream.write(f"{CSI}2J")
        self.write_at(1, 1, f"POS terminal - development console - board {self.board}")
        for i, line in enumerate(LEGEND):
            self.write_at(2 + i, self.legend_col, line)
        self.show_status()
        self._draw_paper()
        if self._feed_fd is not None:
            os.set_blocking(self._feed_fd, False)
            self._loop.add_reader(self._feed_fd, self._read_feed)

    def close(self) -> None:
        if self._swiping is not None:
            self._swiping.cancel()
        self._device_worker.shutdown(wait=False, cancel_futures=True)
        if self._loop is not None and self._feed_fd is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._feed_fd)
        self.stream.write(move_to(self.paper_top + PAPER_LINES + 3, 1) + "\n")
        self.stream.flush()

    # ------------------------------------------------------------------ drawing

    def write_at(self, line: int, col: int, text: str, width: int | None = None) -> None:
        """Text at (line, col); the rest of the line erased, or only up to `width` columns
        (the paper panel must not erase the legend to its right)."""
        if width is None:
            self.stream.write(move_to(line, col) + text + f"{CSI}K")
        else:  # in terminal cells: a Chinese character takes two
            fitted = fit_row(text, width)
            used = sum(cells for _, cells in fitted)
            self.stream.write(move_to(line, col) + "".join(ch for ch, _ in fitted) + " " * (width - used))

    def show_status(self) -> None:
        card = CARD_ORDER[self.card_index]
        pin = TEST_CARDS[card].pin
        pin_note = f" (PIN {pin})" if pin else ""
        top = 2 + len(LEGEND) + 1
        self.write_at(top, self.legend_col, f"Card: {card}{pin_note}")
        self.write_at(top + 1, self.legend_col, self.message)
        self.stream.flush()

    def _draw_paper(self) -> None:
        self.write_at(self.paper_top, 1, "Printer (emulated) " + "-" * 19, PAPER_WIDTH)
        lines = list(self.paper)
        for i in range(PAPER_LINES):
            self.write_at(self.paper_top + 1 + i, 1, "| " + (lines[i] if i < len(lines) else ""),
                        PAPER_WIDTH)
        self.stream.flush()

    def _read_feed(self) -> None:
        assert self._feed_fd is not None
        try:
            data = os.read(self._feed_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            assert self._loop is not None
            self._loop.remove_reader(self._feed_fd)
            return
        self._feed_buffer += data
        *lines, self._feed_buffer = self._feed_buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            if line or (self.paper and self.paper[-1]):  # feeds: one blank line is enough
                self.paper.append(line)
        self._draw_paper()

    # ------------------------------------------------------------------ hot keys

    def hot_key(self, ch: str) -> None:
        card = CARD_ORDER[self.card_index]
        pin = TEST_CARDS[card].pin
        commands = {
            "s": ("reader", "swipe", {"card": card}, f"swiped {card}"),
            # The cardholder's fingers on the reader's PIN pad (the PIN goes to the pad, never
            # to the terminal): the selected card's PIN and ENTER, or CANCEL.
            "k": ("reader", "pin_keys", {"keys": f"{pin or ''}E"}, "PIN typed on the PIN pad"),
            "x": ("reader", "pin_keys", {"keys": "X"}, "CANCEL on the PIN pad"),
            "i": ("reader", "insert_chip", {}, "chip card inserted"),
            "r": ("reader", "remove_chip", {}, "chip removed"),
            "p": ("printer", "paper_out_after", {"lines": 0}, "paper out"),
            "l": ("printer", "load_paper", {}, "paper loaded"),
            "o": ("printer", "close_cover" if self.cover_open else "open_cover", {},
                  "cover closed" if self.cover_open else "cover open"),
        }
        if ch == "c":
            self.card_index = (self.card_index + 1) % len(CARD_ORDER)
            self.message = ""
            self.show_status()
            return
        if ch not in commands:
            return
        device, cmd, args, words = commands[ch]
        if ch == "o":
            self.cover_open = not self.cover_open
        assert self._loop is not None
        if ch == "s" and self.card_wait is not None:
            if self._swiping is None or self._swiping.done():
                self._swiping = self._loop.create_task(self._swipe_when_asked(card), name="console-swipe")
            return
        # One worker, in key order: `i` then `r` typed together must insert before they remove.
        self._loop.run_in_executor(self._device_worker, self._control_and_say, device, cmd, args,
                                   words)

    def _control(self, device: str, cmd: str, args: dict[str, object]) -> str | None:
        """One control request to the emulated devices: None when done, else what went wrong."""
        try:
            with ControlClient("127.0.0.1", self.control_port) as ctl:
                answer = ctl.request(cmd, device=device, **args)
        except (OSError, ControlError) as exc:
            return f"{cmd}: {exc}"
        if not answer.get("ok", True):
            return f"{cmd}: {answer.get('error')}"
        if answer.get("delivered") is False:
            if cmd == "pin_keys":
                return "the PIN pad is not asking for a PIN"
            return "reader not waiting for a card (start a sale first)"
        return None

    def _control_and_say(self, device: str, cmd: str, args: dict[str, object], words: str) -> None:
        self.message = self._control(device, cmd, args) or words
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.show_status)

    async def _swipe_when_asked(self, card: str) -> None:
        """The card waits at the reader until the terminal waits for one, then goes into that
        wait; "swiped" once the terminal took it (not dropped as a wait it had given up)."""
        assert self.card_wait is not None and self._loop is not None
        reader, loop = self.card_wait, self._loop
        deadline = loop.time() + SWIPE_WAIT_S
        self.message = f"{card} held at the reader until the terminal asks for a card"
        self.show_status()
        while loop.time() < deadline:
            if reader.waiting_for_card():
                seen = reader.events_taken + reader.stats.stale_events
                taken = reader.events_taken
                problem = await loop.run_in_executor(None, self._control, "reader", "swipe", {"card": card})
                if problem is None:
                    while reader.events_taken + reader.stats.stale_events == seen and loop.time() < deadline:
                        await asyncio.sleep(POLL_S)  # the event on its way through the pty
                    if reader.events_taken > taken:
                        self.message = f"swiped {card}"
                        self.show_status()
                        return
                # not delivered, or into a wait the terminal had just given up: the next one
            await asyncio.sleep(POLL_S)
        self.message = f"no card asked for in {SWIPE_WAIT_S:.0f} s: {card} taken back"
        self.show_status()


class ConsoleDisplay:
    """The console's LCD box as a firmware.ports.Display (delegates to TerminalDisplay)."""

    def __init__(self, console: DevConsole) -> None:
        self._console = console
        self.rows, self.cols = console.rows, console.cols

    def show(self, frame: Frame) -> None:
        self._console.display.show(frame)

    def close(self) -> None:
        self._console.close()
