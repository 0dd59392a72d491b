"""Supervisor password attempts: the guard that counts wrong passwords per source (the keypad,
each ECR peer) under one ceiling across all sources and locks, kept in the journal's
password_lock table so neither a restart nor a power loss lifts a lock; and the words for it.

Theory of operation. A source's wrong passwords count from the first one; `max_tries` of them
(settings security.max_password_tries, 5) within WINDOW_S lock that source for `lock_minutes`
(5), after which it starts again from 0; a right password clears its count. All sources
together ("*") have a ceiling of CEILING_FACTOR x max_tries (15) wrong passwords within
WINDOW_S: reaching it locks every source, the keypad included. Neither that lock nor a right
password clears the shared count, only the end of its window does, so past the ceiling every
further wrong password locks everyone again.

Why these numbers: one till with a stale password locks only itself, and the keypad and every
other till keep their own tries; someone guessing from many ECR peers gets at most 15 guesses
in an hour, then one per lock period (a six-digit password has about a million choices). The
price is that they can keep the keypad locked meanwhile: a locked-out supervisor is the lesser
harm than a guessed password, and every try and every lock is in the audit log with its source.

Operators (docs/operating.md, "Operators") reuse the guard: a second PasswordGuard counts the
cashiers' PINs per operator ("operator 07") with its own shared row ("operator *"). So five
wrong PINs for 07 lock 07 for the lock time, fifteen wrong PINs across all cashiers within an
hour lock every cashier's sign-in, and neither touches the supervisor password's counts: the
supervisor can still sign in as 00 and give a locked cashier a new PIN, which clears its count.

Who did what, from where (`actor`): every audit row of an operation names both, in the row's
one `operator` column: "07 keypad" (operator 07 at the keypad; "00 keypad" the supervisor), an
ECR source as it is ("ecr tcp 127.0.0.1 till T01": the till is the operator of its requests),
"system" for the terminal's own work.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from firmware.i18n import register
from firmware.settings.model import OPERATOR_PIN_RULES, PASSWORD_RULES

if TYPE_CHECKING:
    from firmware.journal.store import Journal

ALL = "*"  # the row of every source together
WINDOW_S = 3600.0
CEILING_FACTOR = 3

OPERATORS_ALL = "operator *"  # the row of every cashier's PIN together
LOCKED = ("Supervisor password locked - {n} min left", "主管密码已锁定 - 还剩{n}分钟")
OPERATOR_LOCKED = ("Operator locked - {n} min left", "操作员已锁定 - 还剩{n}分钟")
KEYPAD = "keypad"
SYSTEM = "system"

register(PASSWORD_RULES)  # a refused new password is worded on the LCD and the ECR link alike
register(OPERATOR_PIN_RULES)


def operator_source(code: str) -> str:
    """The guard's row of one cashier's PIN tries."""
    return f"operator {code}"


def actor(operator: str, source: str) -> str:
    """Who and from where, as an audit row's `operator` column holds it: "07 keypad"; an ECR
    source names its till, the operator of its requests, so it stands as it is; "system" too."""
    if source == SYSTEM or source.startswith("ecr"):
        return source
    return f"{operator} {source}"


def locked_key(seconds_left: float, what: str = "password") -> str:
    """The catalog key saying how long the lock still lasts, in whole minutes rounded up:
    of the supervisor password, or (what="operator") of a cashier's sign-in."""
    minutes = max(1, math.ceil(seconds_left / 60))
    words = OPERATOR_LOCKED if what == "operator" else LOCKED
    key = f"{what}_locked_{minutes}m"
    register({key: (words[0].format(n=minutes), words[1].format(n=minutes))})
    return key


@dataclass(frozen=True)
class Count:
    """Wrong passwords of one source (or of all: ALL) since `since`, and its lock."""

    wrong: int = 0
    since: float = 0.0
    locked_until: float = 0.0


class PasswordGuard:
    """The counts of every source, read from and written to the journal (wall-clock times)."""

    def __init__(self, max_tries: int = 5, lock_seconds: float = 300.0,
                 clock: Callable[[], float] = time.time, every: str = ALL) -> None:
        self.max_tries = max_tries
        self.lock_seconds = lock_seconds
        self.every = every  # the row of all its sources together (the ceiling)
        self._clock = clock
        self._counts: dict[str, Count] = {}

    def configure(self, security: dict[str, Any]) -> None:
        """Tries and lock time from the settings' security group (5 tries, 5 minutes by default)."""
        self.max_tries = int(security.get("max_password_tries", 5))
        self.lock_seconds = 60.0 * float(security.get("lock_minutes", 5))

    @property
    def ceiling(self) -> int:
        return CEILING_FACTOR * self.max_tries

    def attach(self, journal: Journal) -> None:
        """The counts and locks the journal kept (from before a restart)."""
        rows = journal.read("SELECT source, wrong, since, locked_until FROM password_lock")
        self._counts = {source: Count(wrong, since, until) for source, wrong, since, until in rows}

    def _current(self, source: str, now: float) -> Count:
        count = self._counts.get(source, Count())
        if count.locked_until > now + self.lock_seconds:  # the clock went back: no longer lock
            count = replace(count, locked_until=now + self.lock_seconds)
        if count.wrong and not count.since <= now < count.since + WINDOW_S:
            count = replace(count, wrong=0, since=0.0)  # its window is over (or the clock jumped)
        return count

    def seconds_left(self, source: str) -> float:
        """How long `source` is still locked (its own lock or everyone's); 0.0 when it is not."""
        now = self._clock()
        until = max(self._current(source, now).locked_until,
                    self._current(self.every, now).locked_until)
        return max(0.0, until - now)

    def locked(self, source: str) -> bool:
        return self.seconds_left(source) > 0.0

    def record(self, journal: Journal, ok: bool, source: str, purpose: str,
               who: str | None = None) -> None:
        """Count one checked attempt and audit it, a lock it starts too, in one journal commit;
        `who` names the row's operator and source (default: the source)."""
        now = self._clock()
        who = who or source
        own, every = self._current(source, now), self._current(self.every, now)
        locks: list[str] = []
        if ok:
            own = Count()
        else:
            own = Count(own.wrong + 1, own.since if own.wrong else now, own.locked_until)
            every = Count(every.wrong + 1, every.since if every.wrong else now, every.locked_until)
            if own.wrong >= self.max_tries:
                own = Count(locked_until=now + self.lock_seconds)
                locks.append(f"{source}: {self.max_tries} wrong in a row")
            if every.wrong >= self.ceiling:
                every = replace(every, locked_until=now + self.lock_seconds)
                locks.append(f"every source: {every.wrong} wrong within {int(WINDOW_S // 60)} min")
        minutes = f"locked {int(self.lock_seconds // 60)} min"
        with journal.transaction() as cur:
            _store(cur, source, own)
            _store(cur, self.every, every)
            cur.execute("DELETE FROM password_lock WHERE locked_until <= ? AND since + ? <= ?",
                        (now, WINDOW_S, now))
            journal.audit_in(cur, who, f"password for {purpose}", "", "ok" if ok else "wrong")
            for detail in locks:
                journal.audit_in(cur, who, "password lock", detail, minutes)
        self._counts[source], self._counts[self.every] = own, every
        self._counts = {name: count for name, count in self._counts.items()
                        if count.locked_until > now or count.since + WINDOW_S > now}


    def forget(self, journal: Journal, source: str) -> None:
        """`source`'s own count and lock go: a cashier given a new PIN by the supervisor (or
        removed) starts again; the shared row stays."""
        with journal.transaction() as cur:
            _store(cur, source, Count())
        self._counts.pop(source, None)


def _store(cur: sqlite3.Cursor, source: str, count: Count) -> None:
    if count == Count():
        cur.execute("DELETE FROM password_lock WHERE source = ?", (source,))
        return
    cur.execute("INSERT INTO password_lock (source, wrong, since, locked_until) VALUES (?,?,?,?) "
                "ON CONFLICT(source) DO UPDATE SET wrong = excluded.wrong, since = excluded.since, "
                "locked_until = excluded.locked_until",
                (source, count.wrong, count.since, count.locked_until))
