"""Operators: who is signed in at the keypad, sign-in and sign-out, the supervisor's operator
management (add, change PIN, remove), and the names the audit and the host get for who did
what from where. TerminalCore holds one `Operators` as `operators`.

The rules (docs/operating.md, "Operators"; CUP terminals work this way):
  * No operators set up (settings security.operators is {}, the factory state): the terminal of
    before, with one implicit operator, transactions.operator ("01"). Nobody signs in; every
    keypad row of the audit names that operator ("01 keypad").
  * Operators set up: the keypad does nothing but sign in until an operator has. 00 is the
    supervisor (主管), whose PIN is the supervisor password and whose tries count where the
    supervisor password's do; 01-99 are cashiers with PINs of their own, counted per cashier by
    a second guard (firmware/security.py: 5 wrong lock that cashier, 15 across all cashiers
    within an hour lock every cashier's sign-in, for security.lock_minutes). A payment needs a
    cashier: the supervisor signs in to manage, settle and read reports, not to take money.
    Settings and operator management ask the supervisor password (00's PIN) whoever is signed
    in. A cashier signs out (Manage > Sign out) or is signed out by the supervisor (Manage >
    Operators); removing a signed-in cashier signs them out. Sign-in lives in memory: after a
    restart the keypad asks again.
  * An ECR request's operator is its till: the source names it ("ecr tcp 127.0.0.1 till T01",
    the ECR server's words) and the request's operator code is the till's id when that fits the
    3 characters of field 63, else the implicit operator (a link with no till named).
  * The host's sign-on (0800, field 63) names the operator signed in at the keypad; before
    anyone has (the start-up sign-on) the supervisor 00, or the implicit operator when no
    operators are set up.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from firmware.journal.store import Journal
from firmware.security import (
    KEYPAD,
    OPERATORS_ALL,
    PasswordGuard,
    actor,
    locked_key,
    operator_source,
)
from firmware.settings.model import (
    OPERATOR_CODES,
    SUPERVISOR,
    hash_password,
    operator_pin_problem,
    verify_password,
)
from firmware.settings.store import SettingsStore

# What a supervisor may not do at the keypad: take or give back money (a cashier does).
PAYMENTS = frozenset({"sale", "void", "refund", "balance", "preauth", "preauth_void", "completion",
                      "completion_void", "held_resume", "held_cancel"})
_TILL = re.compile(r"\btill (\S+)$")
NOBODY = "--"  # the audit's operator of a key pressed while nobody is signed in


class OperatorHost(Protocol):
    """What Operators needs of the terminal core (TerminalCore has it all)."""

    settings: dict[str, dict[str, Any]]
    journal: Journal | None
    settings_store: SettingsStore

    async def check_password(self, password: str | None, purpose: str, source: str,
                             who: str | None = None) -> bool: ...
    def password_refused(self, source: str) -> str: ...
    def exclusive(self) -> asyncio.Lock: ...
    async def apply_settings(self, data: dict[str, dict[str, Any]], changed: list[str]) -> None: ...
    def notify_changed(self) -> None: ...


@dataclass(frozen=True)
class Answer:
    """How a sign-in or a management step went: ok, and a catalog key saying it in words."""

    ok: bool
    key: str
    locked_s: float = 0.0  # > 0: the operator (or every cashier) is locked this long


class Operators:
    """The keypad's operator session and the operator table's changes (one per TerminalCore)."""

    def __init__(self, host: OperatorHost) -> None:
        self.host = host
        self.guard = PasswordGuard(every=OPERATORS_ALL)
        self._signed_in: str | None = None
        self._attached: Journal | None = None

    # -- who --------------------------------------------------------------------

    @property
    def table(self) -> dict[str, str]:
        """The cashiers and their PIN hashes, as the live settings hold them."""
        table = self.host.settings.get("security", {}).get("operators") or {}
        return table if isinstance(table, dict) else {}

    @property
    def configured(self) -> bool:
        """Operators are set up: the keypad needs a sign-in."""
        return bool(self.table)

    @property
    def signed_in(self) -> str | None:
        """The operator signed in at the keypad ("00".."99"); None when nobody is, or when no
        operators are set up (a cashier removed meanwhile is signed in no longer)."""
        code = self._signed_in
        if code is None or not self.configured:
            return None
        return code if code == SUPERVISOR or code in self.table else None

    @property
    def needs_sign_in(self) -> bool:
        return self.configured and self.signed_in is None

    def implicit(self) -> str:
        """The one operator of a terminal without operators (transactions.operator)."""
        return str(self.host.settings.get("transactions", {}).get("operator", "01"))

    def keypad_code(self) -> str:
        """The keypad's operator now: the one signed in; nobody: 00 with operators, else the
        implicit operator. The host's sign-on names it too."""
        signed = self.signed_in
        if signed is not None:
            return signed
        return SUPERVISOR if self.configured else self.implicit()

    def code_for(self, source: str) -> str:
        """The operator code of an operation from `source` (the record's operator, the receipt's
        OPERATOR NO., field 63 of a settlement): the keypad's operator, or an ECR request's till
        when its id fits field 63's 3 characters, else the implicit operator."""
        if source.startswith("ecr"):
            till = _TILL.search(source)
            if till is not None and 1 <= len(till.group(1)) <= 3 and till.group(1).isascii():
                return till.group(1)
            return self.implicit()
        return self.keypad_code()

    def actor(self, source: str) -> str:
        """Who and from where, for an audit row ("07 keypad", an ECR source, "system"); a key
        pressed while nobody is signed in (operators set up) is "-- keypad"."""
        if source == KEYPAD and self.needs_sign_in:
            return actor(NOBODY, source)
        return actor(self.code_for(source), source)

    def keypad_refusal(self, op: str) -> str | None:
        """Why the keypad may not run `op` now (a catalog key), or None: nobody signed in, or
        the supervisor asked for a payment."""
        if self.needs_sign_in:
            return "operator_sign_in_first"
        if op in PAYMENTS and self.signed_in == SUPERVISOR:
            return "operator_cashier_only"
        return None

    # -- sign-in and sign-out -----------------------------------------------------

    def _journal(self) -> Journal:
        journal = self.host.journal
        assert journal is not None
        if self._attached is not journal:  # the locks kept in the journal outlive a restart
            self.guard.attach(journal)
            self._attached = journal
        self.guard.configure(self.host.settings.get("security", {}))
        return journal

    def locked_s(self, code: str) -> float:
        """How long a cashier's sign-in stays locked (its own lock or every cashier's)."""
        if self.host.journal is None:
            return 0.0
        self._journal()
        return self.guard.seconds_left(operator_source(code))

    async def sign_in(self, code: str, pin: str | None) -> Answer:
        """Operator `code` signs in at the keypad with `pin` (00: the supervisor password).
        Every try is counted and audited; a right one makes `code` the keypad's operator."""
        journal = self._journal()
        who = actor(code, KEYPAD)
        if not self.configured:
            return Answer(False, "operators_none")
        if code == SUPERVISOR:
            # the supervisor password, counted where it always is, audited as 00's try
            if not await self.host.check_password(pin, "sign-in", KEYPAD, who=who):
                refused = self.host.password_refused(KEYPAD)
                if refused == "password_wrong":
                    return Answer(False, "operator_pin_wrong")
                return Answer(False, refused, self._supervisor_left())
        else:
            if code not in self.table:
                return Answer(False, "operator_unknown")
            source = operator_source(code)
            left = self.guard.seconds_left(source)
            if left > 0:
                journal.audit(who, "password for sign-in", f"locked, {left:.0f} s left", "refused")
                return Answer(False, _locked(left), left)
            hashed = self.table[code]
            ok = pin is not None and await asyncio.get_running_loop().run_in_executor(
                None, verify_password, pin, hashed)
            self.guard.record(journal, ok, source, "sign-in", who=who)
            if not ok:
                left = self.guard.seconds_left(source)
                return Answer(False, _locked(left) if left else "operator_pin_wrong", left)
        self._signed_in = code
        journal.audit(who, "sign-in", f"operator {code}", "done")
        self.host.notify_changed()
        return Answer(True, "operator_signed_in")

    def sign_out(self, by_supervisor: bool = False) -> Answer:
        """The keypad's operator signs out (or the supervisor signs them out): the keypad asks
        for a sign-in again."""
        code = self.signed_in
        if code is None:
            return Answer(False, "operator_none_signed_in" if self.configured else "operators_none")
        who = actor(SUPERVISOR if by_supervisor else code, KEYPAD)
        detail = f"operator {code}" + (" by the supervisor" if by_supervisor else "")
        self._journal().audit(who, "sign-out", detail, "done")
        self._signed_in = None
        self.host.notify_changed()
        return Answer(True, "operator_signed_out")

    # -- the supervisor's management (the keypad asked the supervisor password first) ------

    async def add(self, code: str, pin: str) -> Answer:
        if code not in OPERATOR_CODES:
            return Answer(False, "operator_code_bad")
        if code in self.table:
            return Answer(False, "operator_exists")
        return await self._set(code, pin, "operator add")

    async def change_pin(self, code: str, pin: str) -> Answer:
        if code not in self.table:
            return Answer(False, "operator_unknown")
        return await self._set(code, pin, "operator PIN change")

    async def remove(self, code: str) -> Answer:
        if code not in self.table:
            return Answer(False, "operator_unknown")
        table = {c: h for c, h in self.table.items() if c != code}

        def after() -> None:
            # removed while signed in: signed out with it, for good (the same number added
            # again is a new cashier, who signs in)
            if self._signed_in == code:
                self._signed_in = None
            self.guard.forget(self._journal(), operator_source(code))

        return await self._save(table, "operator remove", code, after)

    async def _set(self, code: str, pin: str, action: str) -> Answer:
        rule = operator_pin_problem(pin)
        if rule is not None:
            self._journal().audit(actor(SUPERVISOR, KEYPAD), action, f"operator {code}: {rule}",
                                  "refused")
            return Answer(False, rule)
        hashed = await asyncio.to_thread(hash_password, pin)  # scrypt: off the event loop
        table = {**self.table, code: hashed}
        return await self._save(table, action, code,
                                lambda: self.guard.forget(self._journal(), operator_source(code)))

    async def _save(self, table: dict[str, str], action: str, code: str,
                    after: Callable[[], None]) -> Answer:
        """The new operator table saved (settings history, atomic) and live, then audited."""
        async with self.host.exclusive():
            data = {group: dict(fields) for group, fields in self.host.settings.items()}
            data["security"]["operators"] = dict(sorted(table.items()))
            await asyncio.to_thread(self.host.settings_store.save, data, f"{action} {code}")
            await self.host.apply_settings(data, ["security.operators"])
            after()
            self._journal().audit(actor(SUPERVISOR, KEYPAD), action, f"operator {code}", "done")
        self.host.notify_changed()
        return Answer(True, "operators_saved")

    def _supervisor_left(self) -> float:
        # the supervisor password's guard (TerminalCore.password_guard) says how long it is locked
        guard = getattr(self.host, "password_guard", None)
        return guard.seconds_left(KEYPAD) if guard is not None else 0.0


def _locked(seconds: float) -> str:
    """The catalog key saying a cashier's sign-in is locked for so many minutes."""
    return locked_key(seconds, "operator")


__all__ = ["PAYMENTS", "Answer", "OperatorHost", "Operators"]
