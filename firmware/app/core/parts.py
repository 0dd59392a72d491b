"""What every part of TerminalCore split out by concern (FlowRunner in flows.py, HostSession in
session.py) reads of the core proper (terminal.py): the state TerminalCore sets and the methods
it defines, declared once here so that a reader of a part sees where each `self.x` comes from."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from firmware.app.core.contract import TerminalObserver
from firmware.app.core.operators import Operators
from firmware.engine.model import TxnResult
from firmware.host.channel import HostLink
from firmware.host.messages import Terminal as TermIds
from firmware.journal.store import Journal


class CoreParts:
    """The base of the parts: annotations only, nothing at run time."""

    # State, set by TerminalCore.__init__ and open()
    journal: Journal | None
    link: HostLink | None
    settings: dict[str, dict[str, Any]]
    observer: TerminalObserver | None
    notice: str | None
    sign_on_problem: str
    operators: Operators

    if TYPE_CHECKING:  # for the reader and the type checker only: at run time these are the
        # methods of TerminalCore (core proper), found through the class.
        @property
        def term(self) -> TermIds: ...
        def _tx(self) -> dict[str, Any]: ...
        def _timeout(self) -> float: ...
        def _step(self, step: str, done: int | None = None, total: int | None = None,
                  cancellable: bool = True) -> None: ...
        def notify_changed(self) -> None: ...
        def actor(self, source: str) -> str: ...
        async def check_password(self, password: str | None, purpose: str, source: str,
                                 who: str | None = None) -> bool: ...
        async def operation(self, op: str, source: str, work: Callable[[], Awaitable[TxnResult]],
                            amount: int | None = None) -> TxnResult: ...
