"""The firmware as a process (`python -m firmware.app`): the command line, the terminal opened,
its front ends started (the keypad/LCD panel and the ECR server) and stopped on SIGINT/SIGTERM.

This is the composition root: the only module that starts front ends. A board's own entry point
(board/sim/firmware.py) runs the same process with its extras plugged in (BoardExtras): the
firmware itself ships without test cards and without the development console.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware.app.core.terminal import AppConfig
from firmware.app.devices import make_display, make_keypad
from firmware.app.frontends.ecr_server import EcrServer, TestCards
from firmware.app.process import private_files, require_c_extension, seconds_since_start, setup_logging
from firmware.app.terminal import Terminal
from firmware.app.watchdog import Notifier
from firmware.journal.errors import JournalError
from firmware.ports import Display, Keypad

log = logging.getLogger("posfw.app")

NO_CONSOLE = "the development console comes with `python -m board.sim.firmware` (make run)"


@dataclass(frozen=True)
class BoardExtras:
    """What a board's own entry point plugs in (board/sim/firmware.py): test cards named over the
    ECR link, and a keypad and display of its own for `--panel console`. The firmware itself
    ships without either."""

    test_card: TestCards | None = None
    console: Callable[[Terminal], tuple[Keypad, Display]] | None = None


NO_EXTRAS = BoardExtras()


def make_panel(terminal: Terminal, cfg: AppConfig, extras: BoardExtras = NO_EXTRAS) -> Any:
    """The front panel with the board's keypad and display drivers (or the board's console)."""
    from firmware.app.frontends.panel import FrontPanel

    if cfg.panel == "console":
        if extras.console is None:
            raise SystemExit(NO_CONSOLE)
        keypad, display = extras.console(terminal)
        return FrontPanel(terminal, keypad, display)
    board = terminal.board
    return FrontPanel(terminal, make_keypad(board), make_display(board))


async def serve(cfg: AppConfig, *, extras: BoardExtras = NO_EXTRAS,
                terminal_class: type[Terminal] = Terminal) -> None:
    """Run the terminal until SIGINT or SIGTERM: open it, start the panel (if any), sign on in
    the background, serve the ECR link; terminal_class: tests run a subclass (a fault hook)."""
    notifier = Notifier()  # systemd's notify socket, when it runs us (Type=notify, WatchdogSec)
    notifier.status("starting")
    pets = asyncio.create_task(notifier.pet(), name="watchdog")  # stops when the loop is stuck
    terminal = terminal_class(cfg)
    await terminal.open()
    panel, panel_task = None, None
    if cfg.panel:
        panel = make_panel(terminal, cfg, extras)
        panel_task = asyncio.create_task(panel.run(), name="front-panel")
        if cfg.idle_file is not None:
            await asyncio.sleep(0)  # let the panel draw its first frame
            cfg.idle_file.write_text(f"{time.monotonic()}\n")
    # Sign-on and the backlog run behind the operation lock while the ECR link opens at once.
    connecting = await terminal.start_connecting()
    serial = cfg.ecr_serial if cfg.ecr_serial is not None else terminal.board.ecr_serial
    if serial and not Path(serial).exists():
        log.warning("ECR serial port %s not present: ECR on TCP only", serial)
        serial = None
    ecr = EcrServer(terminal, cfg.ecr_host, cfg.ecr_port, serial_path=serial or None,
                    test_cards=extras.test_card)
    await ecr.start()
    if cfg.ready_file is not None:
        tmp = cfg.ready_file.with_suffix(".tmp")
        tmp.write_text(str(ecr.port))
        os.replace(tmp, cfg.ready_file)
    age = seconds_since_start()
    log.info("terminal ready: ECR on %s:%d, board %s, %s after the process started", cfg.ecr_host,
             ecr.port, cfg.board, f"{age:.2f} s" if age is not None else "unknown time")
    # The idle screen is up (the panel drew its first frame above) and the ECR link listens.
    notifier.ready(f"service mode: {terminal.service_problem}" if terminal.service_problem
                   else f"ready: board {cfg.board}, ECR port {ecr.port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if panel_task is not None:
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({waiter, panel_task}, return_when=asyncio.FIRST_COMPLETED)
        if panel_task.done() and not panel_task.cancelled() and panel_task.exception():
            log.error("front panel stopped: %s", panel_task.exception())
        waiter.cancel()
        panel_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await panel_task
        await panel.close()
    else:
        await stop.wait()
    notifier.stopping()
    connecting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await connecting
    await ecr.close()
    await terminal.close()
    pets.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await pets
    notifier.close()


def arguments(prog: str = "python -m firmware.app") -> argparse.ArgumentParser:
    """The firmware's command line; a board's entry point adds its own options to it."""
    parser = argparse.ArgumentParser(prog=prog, description="POS terminal firmware (headless, ECR-driven)")
    parser.add_argument("--data", type=Path, default=Path("var/terminal"))
    parser.add_argument("--board", default=os.environ.get("BOARD", "sim"))
    parser.add_argument("--ecr-port", type=int, default=8583)
    parser.add_argument("--host", help="acquirer host (overrides settings)")
    parser.add_argument("--port", type=int, help="acquirer port (overrides settings)")
    parser.add_argument("--reply-timeout", type=float)
    parser.add_argument("--ready-file", type=Path)
    parser.add_argument("--ecr-serial", help="serial device for the ECR link ('' = none)")
    parser.add_argument("--printer", help="serial device of the receipt printer ('' = none)")
    parser.add_argument("--reader", help="device of the card reader ('' = none)")
    parser.add_argument("--panel", choices=("board", "console"),
                        help="drive the keypad and LCD: the board's drivers, or the development console "
                             "(python -m board.sim.firmware)")
    parser.add_argument("--idle-file", type=Path, help="written when the idle screen is first drawn")
    parser.add_argument("--log-level", default="INFO")
    return parser


def run(args: argparse.Namespace, *, extras: BoardExtras = NO_EXTRAS,
        terminal_class: type[Terminal] = Terminal) -> int:
    """Run the firmware with parsed arguments (those of `arguments()`); returns the exit status."""
    if args.panel == "console" and extras.console is None:
        raise SystemExit(f"--panel console: {NO_CONSOLE}")
    private_files()
    setup_logging(args.data, args.log_level, to_stderr=args.panel != "console")
    require_c_extension()
    cfg = AppConfig(data_dir=args.data, board=args.board, ecr_port=args.ecr_port, host=args.host,
                    port=args.port, reply_timeout=args.reply_timeout, ready_file=args.ready_file,
                    ecr_serial=args.ecr_serial, printer_path=args.printer,
                    reader_path=args.reader, panel=args.panel, idle_file=args.idle_file)
    try:
        asyncio.run(serve(cfg, extras=extras, terminal_class=terminal_class))
    except JournalError as exc:
        log.error("%s", exc)
        return 2
    return 0


def main(argv: list[str] | None = None, *, extras: BoardExtras = NO_EXTRAS,
         terminal_class: type[Terminal] = Terminal) -> int:
    """The command line of `python -m firmware.app`; returns the exit status."""
    return run(arguments().parse_args(argv), extras=extras, terminal_class=terminal_class)
