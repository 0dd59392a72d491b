"""The terminal's life cycle as the journal holds it (ACTIVE, DEREGISTERING, DEREGISTERED): the
reading the core needs to decide whether this terminal may do money work at all.

The core asks it in open() (a wipe began: no TMK to demand), before the start-up sign-on, and in
every refusal of a financial operation or a settlement. The deregistration service
(firmware/app/services/deregister.py) writes the steps through put_state() and reads them back
here; provisioning (firmware/app/provision.py) resets the life cycle the same way. Nothing here
imports the Terminal: a terminal is anything with a journal and a data directory.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Protocol

from firmware.engine.deregistration import Lifecycle, Step
from firmware.engine.model import TxnResult
from firmware.i18n import register
from firmware.journal import wipe
from firmware.journal.store import Journal

# The core's refusal is worded without the deregistration service being imported.
MESSAGES: dict[str, tuple[str, str]] = {
    "dereg_terminal_deregistered": ("Terminal deregistered: provision it again first",
                                    "终端已注销:请先重新装机"),
}

register(MESSAGES)


class HasJournal(Protocol):
    """What the life cycle reads of a terminal."""

    @property
    def journal(self) -> Journal | None: ...

    @property
    def data_dir(self) -> Path: ...


def state(journal: Journal) -> dict[str, str]:
    return dict(journal.read("SELECT name, value FROM terminal_state"))


def put_state(cur: sqlite3.Cursor, values: dict[str, str]) -> None:
    now = time.time()
    for name, value in values.items():
        cur.execute("INSERT INTO terminal_state (name, value, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value, "
                    "updated_at = excluded.updated_at", (name, value, now))


def lifecycle(terminal: HasJournal) -> Lifecycle:
    if terminal.journal is None:
        return Lifecycle.DEREGISTERED if wipe.is_marked(terminal.data_dir) else Lifecycle.ACTIVE
    return Lifecycle(state(terminal.journal).get("lifecycle", Lifecycle.ACTIVE.value))


def reached(journal: Journal) -> Step | None:
    value = state(journal).get("dereg_step", "")
    return Step(value) if value else None


def deregistered_on_disk(data_dir: Path) -> bool:
    """True once the wipe began: Terminal.open() must then not demand the (wiped) TMK."""
    return wipe.is_marked(Path(data_dir))


def refusal(terminal: HasJournal) -> TxnResult | None:
    """For Terminal._refusal: a terminal not ACTIVE refuses every financial op and settlement."""
    if terminal.journal is None and not deregistered_on_disk(terminal.data_dir):
        return None
    if lifecycle(terminal) is Lifecycle.ACTIVE and not deregistered_on_disk(terminal.data_dir):
        return None
    return TxnResult("refused", "dereg_terminal_deregistered",
                     detail="the terminal is deregistered: provision it again first "
                            "(docs/provisioning.md)")
