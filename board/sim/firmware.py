"""`python -m board.sim.firmware`: the firmware (firmware/app/main.py) as the sim board runs it,
with what only an emulated board has plugged in: test cards named over the ECR link
(`"card": "visa"`, board/sim/cards.py) and the development console of `make run`
(`--panel console`, board/sim/console.py).

`make run` (board/sim/devrun.py) and the QEMU guest (board/qemu/rig.py) run this; a real board
runs `python -m firmware.app`, which ships without either. The command line is the firmware's,
with the console's two options added.
"""

from __future__ import annotations

from collections.abc import Callable

from board.sim.cards import TEST_CARDS
from firmware.app.main import BoardExtras, arguments, run
from firmware.app.terminal import Terminal
from firmware.engine.model import CardRead
from firmware.ports import Display, Keypad


def sim_card(name: str) -> CardRead:
    """A test card's magstripe read, by its name in board/sim/cards.py. (Not named test_*: the
    tests import it, and pytest would collect it as a test.)"""
    card = TEST_CARDS.get(name)
    if card is None:
        raise LookupError(f"unknown test card {name!r}; known: {', '.join(sorted(TEST_CARDS))}")
    return CardRead(entry_mode="swipe", pan=card.pan, expiry=card.expiry,
                    service_code=card.service_code, track2=card.track2)


def console(control_port: int, printer_fd: int | None) -> Callable[[Terminal], tuple[Keypad, Display]]:
    """The development console as the panel's keypad and display, started for a terminal."""

    def start(terminal: Terminal) -> tuple[Keypad, Display]:
        from board.sim.console import ConsoleDisplay, DevConsole  # only under --panel console

        board = terminal.board
        reader = terminal.reader  # the console's `s` swipes into the read this driver waits on
        dev = DevConsole(board.display_rows, board.display_cols, board.name,
                         control_port=control_port, printer_feed_fd=printer_fd,
                         card_wait=reader if hasattr(reader, "waiting_for_card") else None)
        dev.start()
        return dev.keypad, ConsoleDisplay(dev)

    return start


def main(argv: list[str] | None = None, *, terminal_class: type[Terminal] = Terminal) -> int:
    """The firmware's command line plus the console's options; returns the exit status."""
    parser = arguments(prog="python -m board.sim.firmware")
    group = parser.add_argument_group("the development console (--panel console)")
    group.add_argument("--console-control-port", type=int, default=5802,
                       help="the emulated peripherals' control port (the hot keys)")
    group.add_argument("--console-printer-fd", type=int,
                       help="the emulated printer's output, for the paper panel")
    args = parser.parse_args(argv)
    extras = BoardExtras(test_card=sim_card,
                         console=console(args.console_control_port, args.console_printer_fd))
    return run(args, extras=extras, terminal_class=terminal_class)


if __name__ == "__main__":
    raise SystemExit(main())
