"""What the terminal core owns for the outside: what an operation is given (OperatorInput), how
a wait is cancelled (OperatorCancelled), what a front end learns and answers (TerminalObserver,
which the keypad/LCD panel implements) and what the core asks of the paper (PaperQueue, which
the print desk implements).

Every part of the app layer may import this module; it imports nothing of the app, so no
service or front end needs the Terminal's module to speak to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from firmware.engine import events as ev
from firmware.engine.model import CardRead, RequestKey, TxnResult
from firmware.printing.queue import CopyKind

# The actions that ask the operator (or the ECR request) for something: nothing was sent yet.
OPERATOR_INPUT = (ev.AskAuthorisation, ev.AskCard, ev.AskPin)


class OperatorCancelled(Exception):
    """CANCEL arrived while the terminal was waiting for something."""


@dataclass
class OperatorInput:
    """What the operator (or the ECR request) supplies when the flow asks."""

    password: str | None = None
    card: CardRead | None = None
    pin: str | None = None  # sim board only: the PIN the test cardholder "types"
    # Who started the operation: "keypad", or the ECR peer ("ecr" alone where the peer is not
    # known, "ecr tcp 127.0.0.1", "ecr serial /dev/ttyS3"); audited, and passwords count by it.
    source: str = "ecr"
    authorised: bool = False  # the keypad already checked the supervisor password
    # The ECR request this operation answers: its record is written with this key, so that the
    # till's retry is answered with that record instead of running again
    # (firmware/app/frontends/ecr_repeats.py).
    request_key: RequestKey | None = None
    # The chip card's session (firmware/app/core/chip.py ChipSession) once a card was inserted:
    # it holds the kernel between the two GENERATE ACs and the PIN block taken at its CVM step.
    chip: Any = None


class TerminalObserver(Protocol):
    """What the keypad/LCD side learns from the terminal (firmware/app/frontends/panel.py
    implements it).

    Calls are synchronous and must not block; ask_pin and release_reader are awaited.
    """

    def op_started(self, op: str, source: str, amount: int | None) -> None: ...

    def op_step(self, step: str, done: int | None = None, total: int | None = None,
                cancellable: bool = True) -> None: ...

    def op_finished(self, op: str, source: str, result: TxnResult) -> None: ...

    def changed(self) -> None:
        """Something the idle screen shows changed (link, counters, paper, notice)."""
        ...

    def card_refused(self, message_key: str) -> None:
        """The reader refused a card during the running operation's card step; it waits on."""
        ...

    async def ask_pin(self, pan_masked: str, amount: int | None, bypass_allowed: bool,
                      tries_left: int | None = None) -> str | None:
        """The PIN from the keypad (None: bypass); raises OperatorCancelled on CANCEL.
        tries_left: the last PIN was wrong, this many tries are left (this one included)."""
        ...

    async def release_reader(self) -> None:
        """Stop any idle card watch so the flow can use the reader."""
        ...

    async def choose_application(self, labels: list[str]) -> int | None:
        """The cardholder's choice among the chip's applications (index into labels, in the
        card's priority order); None or OperatorCancelled on CANCEL."""
        ...


class PaperQueue(Protocol):
    """The five things the core asks of the print desk (firmware/app/services/printing.py): which
    copies a receipt gets, a wake-up when a job was queued, whether a copy is printing now (the
    journal's idle checkpoint waits for it), its status and its close. The rest of the desk
    (reprints, reports, slips) is for the services and front ends, which know it."""

    @property
    def copies(self) -> tuple[CopyKind, ...]:
        """The receipt copies the settings ask for, queued with the transaction's outcome."""
        ...

    def wake(self) -> None:
        """A job was queued: print it now if the printer is ready."""
        ...

    @property
    def printing(self) -> bool:
        """A copy is going to the printer now."""
        ...

    def status(self) -> dict[str, Any]:
        """What `status` shows of the paper (queue, printer state)."""
        ...

    async def close(self) -> None: ...
