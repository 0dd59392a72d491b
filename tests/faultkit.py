"""Fault-injection kit for in-process terminal tests.

Theory of operation: `Terminal.fault_hook` is called with every action just
before the terminal carries it out. `PowerCut(k)` raises `PowerLoss` (a
BaseException, so no `except Exception` in the firmware can swallow it) at the
k-th action; `ActionRecorder` only lists them. `power_loss(t)` then does what a
dead battery does to the process: the host socket goes away, the journal is
never closed (no checkpoint, no orderly shutdown). The state the next start-up
sees is read back from the journal file through a fresh read-only SQLite
connection (`durable_*`), and `LedgerSpy` records every batch-upload item and
batch close the simulator's ledger receives, repeats included (the ledger's
own tables deduplicate them, so they cannot show a re-send).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from firmware.app.terminal import Terminal
from firmware.engine import events as ev


class PowerLoss(BaseException):
    """The power went: raised from the fault hook, it unwinds through everything."""


def action_label(action: object) -> str:
    """A short name for an action: its class, plus MTI (and 60.3 for a 0320) when it sends."""
    name = type(action).__name__
    if isinstance(action, ev.SendRequest):
        msg = action.message
        name += f"/{msg.mti}"
        if msg.mti == "0320":
            name += f"/{msg.fields.get('60', '')[8:11]}"
    return name


class ActionRecorder:
    """A fault hook that lists the actions it sees; `on_action` may add a side effect."""

    def __init__(self, on_action: Callable[[int, object], None] | None = None) -> None:
        self.labels: list[str] = []
        self._on_action = on_action

    def __call__(self, action: object) -> None:
        index = len(self.labels)
        self.labels.append(action_label(action))
        if self._on_action is not None:
            self._on_action(index, action)


class PowerCut(ActionRecorder):
    """Raise PowerLoss just before action number `at` (0-based) is carried out."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.cut_before: str | None = None  # label of the action that never ran

    def __call__(self, action: object) -> None:
        super().__call__(action)
        if len(self.labels) - 1 == self.at:
            self.cut_before = self.labels[-1]
            raise PowerLoss(f"power lost before action {self.at} ({self.cut_before})")


async def power_loss(t: Terminal) -> None:
    """Abandon `t` as a power cut would: its socket dies, its key token's session ends (a token's
    sessions do not outlive the power), its journal is left as it is."""
    if t.link is not None:
        await t.link.channel.close()
    if t.key_store is not None:
        t.key_store.close()


async def shut(*terminals: Terminal | None) -> None:
    """Test teardown: release whatever the terminals (abandoned or not) still hold."""
    for t in terminals:
        if t is None:
            continue
        if t.link is not None:
            with contextlib.suppress(Exception):
                await t.link.channel.close()
        if t.journal is not None:
            with contextlib.suppress(Exception):
                t.journal.close()
        if t.key_store is not None:
            with contextlib.suppress(Exception):
                t.key_store.close()


# -- what the journal file holds (a fresh read-only connection) -------------------

def _query(data_dir: Path, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    uri = f"file:{data_dir / 'journal.db'}?mode=ro"
    conn = sqlite3.connect(uri, uri=True)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


@dataclass(frozen=True)
class DurableRecord:
    id: int
    kind: str
    state: str
    stan: str
    batch: str
    uploaded: bool


@dataclass(frozen=True)
class DurableSettlement:
    id: int
    batch: str
    state: str
    uploaded_count: int


def durable_records(data_dir: Path) -> list[DurableRecord]:
    rows = _query(data_dir, "SELECT id, kind, state, stan, batch, uploaded FROM txn ORDER BY id")
    return [DurableRecord(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]


def durable_settlements(data_dir: Path) -> list[DurableSettlement]:
    rows = _query(data_dir, "SELECT id, batch, state, uploaded_count FROM settlement ORDER BY id")
    return [DurableSettlement(r[0], r[1], r[2], r[3]) for r in rows]


def durable_batch(data_dir: Path) -> str:
    value = _query(data_dir, "SELECT value FROM counters WHERE name = 'batch'")[0][0]
    return f"{value:06d}"


# -- the host's side -----------------------------------------------------------------

class LedgerSpy:
    """Sees every upload item and batch close the simulator writes, in arrival order.

    `phase` labels what follows (e.g. "before", "after"), so a test can ask what the
    host received after a restart. The wrappers run in the simulator's thread.
    """

    def __init__(self, ledger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.phase = "before"
        self.uploads: list[tuple[str, int, int]] = []  # (phase, batch, trace)
        self.closes: list[tuple[str, int]] = []  # (phase, batch) of each upload end
        self._lock = threading.Lock()
        add_upload, close_batch = ledger.add_upload, ledger.close_batch

        def spy_add_upload(tid: str, batch: int, trace: int, *rest: Any, **kw: Any) -> None:
            with self._lock:
                self.uploads.append((self.phase, batch, trace))
            add_upload(tid, batch, trace, *rest, **kw)

        def spy_close_batch(tid: str, batch: int, upload_count: int | None) -> int:
            with self._lock:
                self.closes.append((self.phase, batch))
            return close_batch(tid, batch, upload_count)

        monkeypatch.setattr(ledger, "add_upload", spy_add_upload)
        monkeypatch.setattr(ledger, "close_batch", spy_close_batch)

    def traces(self, phase: str | None = None) -> list[int]:
        with self._lock:
            return [t for p, _, t in self.uploads if phase is None or p == phase]
