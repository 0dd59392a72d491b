"""The journal's WAL checkpointed at idle (firmware/app/core/checkpoint.py, issue 19): emptied
into the database file once the terminal is quiet, never while an operation runs or a copy
prints, so a sale never pays for a checkpoint. The terminal runs in-process against the
simulator; the WAL is watched through its WAL-index (frames in it, frames copied)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import run, sale

from board.sim.printer import EmulatedPrinter
from firmware.app.core.checkpoint import IdleCheckpoint
from firmware.app.core.terminal import AppConfig
from firmware.app.terminal import Terminal
from firmware.journal.errors import JournalFull
from firmware.journal.wal import Checkpoint, wal_index

IDLE = 0.1  # the tests' idle while (the terminal's is checkpoint.IDLE_S)


async def until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout} s: {what}")
        await asyncio.sleep(0.01)


def in_database_file(db: Path, record_id: int, copy: Path) -> str | None:
    """The record's state as the database file alone holds it (the WAL left out)."""
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT state FROM txn WHERE id = ?", (record_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else row[0]


def restarted(db: Path) -> bool:
    """Checkpointed and started again at idle: one page in the WAL, nothing owed."""
    return wal_index(db) == (1, 0)


# -- the timer, with stand-ins and a clock of its own ------------------------------------------


class Clock:
    """IdleCheckpoint's schedule: timers fire when the test moves time on, in deadline order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[list] = []  # [deadline, callback, cancelled]

    def schedule(self, delay: float, callback: Callable[[], None]):
        entry = [self.now + delay, callback, False]
        self.timers.append(entry)

        class Handle:
            @staticmethod
            def cancel() -> None:
                entry[2] = True
        return Handle()

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while True:
            due = sorted((t for t in self.timers if not t[2] and t[0] <= end), key=lambda t: t[0])
            if not due:
                break
            due[0][2] = True
            self.now = due[0][0]
            due[0][1]()
        self.now = end


class Fake:
    def __init__(self) -> None:
        self.quiet = True
        self.calls = 0
        self.results: list[Checkpoint | Exception | None] = []

    def checkpoint(self) -> Checkpoint | None:
        self.calls += 1
        result = self.results.pop(0) if self.results else Checkpoint(5, 5, True)
        if isinstance(result, Exception):
            raise result
        return result


def test_the_checkpoint_waits_for_a_quiet_while_after_the_last_poke() -> None:
    f, clock = Fake(), Clock()
    idle = IdleCheckpoint(f.checkpoint, lambda: f.quiet, delay_s=2.0, schedule=clock.schedule)
    for _ in range(4):  # activity keeps pushing it back
        idle.poke()
        clock.advance(1.5)
    assert f.calls == 0
    clock.advance(0.5)
    assert (f.calls, idle.done) == (1, 1)
    clock.advance(60)  # left alone after it: never woken again
    assert f.calls == 1
    f.quiet = False  # busy when the timer fires: nothing; the end of the work pokes again
    idle.poke()
    clock.advance(10)
    assert f.calls == 1
    f.quiet = True
    idle.poke()
    clock.advance(2)
    assert f.calls == 2
    idle.poke()
    idle.close()  # the terminal closing: the armed timer goes
    clock.advance(10)
    assert f.calls == 2


def test_a_partial_checkpoint_is_tried_again_and_a_full_disk_only_logged() -> None:
    f, clock = Fake(), Clock()
    f.results = [Checkpoint(9, 4, False), Checkpoint(9, 9, True), JournalFull("disk"), None]
    idle = IdleCheckpoint(f.checkpoint, lambda: True, delay_s=2.0, schedule=clock.schedule)
    idle.poke()
    clock.advance(2)
    assert f.calls == 1
    clock.advance(3.9)  # a reader kept frames: again, twice the wait later
    assert f.calls == 1
    clock.advance(0.1)
    assert (f.calls, idle.done) == (2, 2)
    clock.advance(60)
    assert f.calls == 2  # complete: no more retries
    idle.poke()
    clock.advance(2)
    assert f.calls == 3  # raised JournalFull: logged, the terminal goes on
    idle.poke()
    clock.advance(2)
    assert (f.calls, idle.done) == (4, 2)  # nothing written since: not counted


def test_without_a_running_loop_a_poke_arms_nothing() -> None:
    f = Fake()
    idle = IdleCheckpoint(f.checkpoint, lambda: True)
    idle.poke()  # a tool driving the core without asyncio: no error, no timer
    idle.close()
    assert f.calls == 0


# -- the terminal --------------------------------------------------------------------------------


def test_the_wal_is_emptied_at_idle_and_not_during_an_operation(data_dir: Path, sim,
                                                                tmp_path: Path) -> None:
    """A sale whose reply is late: while it waits, the terminal is poked again and again and
    the WAL is left alone (its frames grow, none is copied); once the sale is over and the
    terminal quiet, everything is in the database file and the WAL starts again."""
    async def go() -> None:
        t = Terminal(AppConfig(data_dir=data_dir, printer_path="", reader_path="",
                               reply_timeout=5.0, idle_checkpoint_s=IDLE))
        await t.start()
        try:
            assert t.journal is not None and t.idle_checkpoint is not None
            db = t.journal.path
            await until(lambda: restarted(db), "the start-up's writes checkpointed")
            sim.add_fault("delay", mti="0200", seconds=1.0)
            selling = asyncio.create_task(sale(t, 1234))
            await until(lambda: t.journal.unresolved_counts()["PENDING"] == 1, "the sale written")
            before = t.idle_checkpoint.done
            for _ in range(2):  # poked, then left for three idle whiles: the timer fires, busy
                t.notify_changed()
                await asyncio.sleep(IDLE * 3)
            frames, copied = wal_index(db)
            assert t.busy and not selling.done()
            assert frames > 1 and copied == 0 and t.idle_checkpoint.done == before
            result = await selling
            assert result.status == "approved"
            await until(lambda: restarted(db), "checkpointed once the sale was over")
            assert t.idle_checkpoint.done == before + 1
            assert in_database_file(db, result.record.id, tmp_path / "alone.db") == "APPROVED"
        finally:
            await t.close()

    run(go())


def test_no_checkpoint_while_a_copy_prints(data_dir: Path, tmp_path: Path) -> None:
    """The printer reads slowly (a copy takes a while): pokes during the copy do not checkpoint;
    the end of printing does."""
    printer = EmulatedPrinter(tmp_path).start()
    printer.set_speed(1000)  # a copy takes a second or so

    async def go() -> None:
        t = Terminal(AppConfig(data_dir=data_dir, printer_path=str(printer.path), reader_path="",
                               print_poll_s=0.05, idle_checkpoint_s=IDLE))
        await t.start()
        try:
            assert t.journal is not None and t.idle_checkpoint is not None
            db = t.journal.path
            await until(lambda: restarted(db), "the start-up's writes checkpointed")
            result = await sale(t, 1234)
            assert result.status == "approved"
            await until(lambda: t.prints.printing, "a copy printing")
            before = t.idle_checkpoint.done
            t.notify_changed()  # the timer armed, then left to fire while the copy prints
            await asyncio.sleep(IDLE * 3)
            assert t.prints.printing, "the copy ended too soon for the test to mean anything"
            assert wal_index(db)[1] == 0 and t.idle_checkpoint.done == before
            await until(lambda: len(printer.slips) == 2 and restarted(db),
                        "both copies printed, then checkpointed")
            assert t.idle_checkpoint.done > before
        finally:
            await t.close()

    try:
        run(go())
    finally:
        printer.stop()


@pytest.mark.parametrize("printing", [False, True])
def test_quiet_means_no_operation_and_no_copy_printing(data_dir: Path, printing: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from firmware.app.services.printing import PrintDesk

    monkeypatch.setattr(PrintDesk, "printing", property(lambda self: printing))

    async def go() -> tuple[bool, bool]:
        t = Terminal(AppConfig(data_dir=data_dir, printer_path="", reader_path=""))
        await t.open()
        try:
            idle = t._quiet()
            async with t.exclusive():
                busy = t._quiet()
            return idle, busy
        finally:
            await t.close()

    assert run(go()) == (not printing, False)
