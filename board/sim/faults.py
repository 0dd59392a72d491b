"""The acquirer simulator's test knobs: wire faults and decision rules.

Owns the data model (Fault, Rule), their JSON form for the control interface,
and the book that matches them against incoming messages and counts them down.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any

from firmware.digits import is_digits
from firmware.host.messages import TxnKind

__all__ = ["CHIP_KNOBS", "Fault", "FaultBook", "FaultKind", "Rule", "RuleBook"]


class FaultKind(StrEnum):
    """What goes wrong on the wire.

    delay       the reply (process=True) or the processing (process=False) waits `seconds`
    drop        no reply is sent
    close       the connection is closed instead of replying
    bad_mac     the reply's field 64 is wrong (one is added if the reply had none)
    no_mac      the reply goes without field 64 (even one the dialect says must carry it)
    wrong_stan  the reply's field 11 is the request's + 1 (MAC recomputed over it)
    garbage     random bytes instead of the reply: framed=True keeps a valid length
                prefix (random payload), framed=False is raw random bytes
    twice       the reply is sent twice
    refuse      the listening socket is closed (connections are refused by the kernel)
                and open connections are closed; see Fault.seconds

    Chip knobs (act on a chip 0100/0200 whose ARQC verified, counted only by those):
    wrong_arpc      the reply's 91 carries an ARPC with one bit flipped (issuer
                    authentication fails at the card)
    script_block    the reply's 55 adds a 71 script blocking the application (the card then
                    declines at the second GENERATE AC although 39 = 00)
    script_harmless the reply's 55 adds a 72 script (APPLICATION UNBLOCK of an application
                    that is not blocked: the card runs it, nothing changes)
    """

    DELAY = "delay"
    DROP = "drop"
    CLOSE = "close"
    BAD_MAC = "bad_mac"
    NO_MAC = "no_mac"
    WRONG_STAN = "wrong_stan"
    GARBAGE = "garbage"
    TWICE = "twice"
    REFUSE = "refuse"
    WRONG_ARPC = "wrong_arpc"
    SCRIPT_BLOCK = "script_block"
    SCRIPT_HARMLESS = "script_harmless"


# Knobs that change a chip reply's 55 rather than the wire: only chip requests take them.
CHIP_KNOBS: frozenset[FaultKind] = frozenset(
    {FaultKind.WRONG_ARPC, FaultKind.SCRIPT_BLOCK, FaultKind.SCRIPT_HARMLESS}
)


# Messages that follow only the rules naming their MTI (Rule).
SETTLEMENT_MTIS: frozenset[str] = frozenset({"0320", "0500"})

# Faults that stand in for the reply itself: only one of them can act on a message.
REPLACING: frozenset[FaultKind] = frozenset(
    {FaultKind.DROP, FaultKind.CLOSE, FaultKind.GARBAGE}
)


@dataclass
class Fault:
    """One fault. Filters left None match every message.

    mti          request MTI to act on ("0200"); None = any request
    kind_filter  firmware.host.messages.TxnKind value ("sale", "void" ...)
    tid          only messages from this terminal
    count        messages it acts on before it is used up; -1 = until cleared. Not used
                 by refuse: refused attempts never reach the process, so they cannot
                 be counted (a refuse ends by time or by clear_faults()).
    seconds      delay length; for refuse: re-open the listener after this long
                 (0 = stay closed until the faults are cleared)
    process      drop/close/garbage/delay only: True = the host books the request first
                 (money moves, the reply is lost or late); False = act before any
                 processing (nothing is booked). bad_mac, no_mac, wrong_stan and twice
                 always process (they need the real reply).
    framed       garbage only: keep a valid 2-byte length prefix
    """

    kind: FaultKind
    mti: str | None = None
    kind_filter: str | None = None
    tid: str | None = None
    count: int = 1
    seconds: float = 0.0
    process: bool = True
    framed: bool = True

    def __post_init__(self) -> None:
        self.kind = FaultKind(self.kind)
        if self.count == 0 or self.count < -1:
            raise ValueError("count must be a positive number or -1 (until cleared)")
        if self.seconds < 0:
            raise ValueError("seconds must not be negative")
        if self.mti is not None and (len(self.mti) != 4 or not is_digits(self.mti)):
            raise ValueError(f"mti must be 4 digits, got {self.mti!r}")
        _check_kind(self.kind_filter)

    def matches(self, mti: str, txn_kind: str | None, tid: str | None) -> bool:
        if self.mti is not None and self.mti != mti:
            return False
        if self.kind_filter is not None and self.kind_filter != txn_kind:
            return False
        return self.tid is None or self.tid == tid

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = str(self.kind)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        """Build from control-interface JSON; unknown keys are an error, not ignored."""
        return cls(**_known_keys(cls, data))


@dataclass
class Rule:
    """A decision rule: a request matching every given criterion gets `code`.

    Rules are checked in the order added, before the built-in ones (blocked card,
    expiry, PIN, amount ending in 51). They apply to financial requests, advices
    and reversals (an `mti="0400"` rule makes reversals fail, e.g. with "96").
    An approval rule (code "00") short-circuits the built-in declines but not the
    checks of original references (void/refund/completion) or MAC.

    Settlement (0500) and batch upload (0320) follow only rules that name their MTI, so a
    rule written for sales never refuses a settlement; `network` narrows them by 60.3 (201
    an upload, 202/207 the upload end): add_rule("96", mti="0320", network="207").
    """

    code: str
    kind: str | None = None
    mti: str | None = None
    network: str | None = None
    amount: int | None = None
    amount_mod100: int | None = None
    pan: str | None = None
    tid: str | None = None
    count: int = -1

    def __post_init__(self) -> None:
        if len(self.code) != 2 or not self.code.isalnum():
            raise ValueError(f"response code must be 2 characters, got {self.code!r}")
        if self.count == 0 or self.count < -1:
            raise ValueError("count must be a positive number or -1 (until cleared)")
        _check_kind(self.kind)

    def matches(self, *, mti: str, txn_kind: str | None, amount: int | None,
                pan: str | None, tid: str, network: str | None = None) -> bool:
        settlement = mti in SETTLEMENT_MTIS
        checks: list[bool] = [
            self.kind is None or self.kind == txn_kind,
            self.mti == mti if settlement else self.mti is None or self.mti == mti,
            self.network is None or self.network == network,
            self.amount is None or self.amount == amount,
            self.amount_mod100 is None or (amount is not None
                                           and amount % 100 == self.amount_mod100),
            self.pan is None or self.pan == pan,
            self.tid is None or self.tid == tid,
        ]
        return all(checks)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Rule:
        return cls(**_known_keys(cls, data))


def _check_kind(kind: str | None) -> None:
    # A misspelt kind would silently never match: refuse it up front.
    if kind is not None and kind not in {k.value for k in TxnKind}:
        raise ValueError(f"unknown transaction kind {kind!r}; one of "
                         f"{sorted(k.value for k in TxnKind)}")


def _known_keys(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__.lower()} parameter(s): {sorted(unknown)}")
    return dict(data)


@dataclass
class FaultBook:
    """Active message faults, consumed as messages arrive.

    A lock guards the list because SimulatorThread callers and the server's event
    loop may touch it from different threads.
    """

    _faults: list[Fault] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def take(self, mti: str, txn_kind: str | None, tid: str | None,
             chip: bool = False) -> list[Fault]:
        """The faults acting on this message, each counted down once.

        Of the faults that replace the reply (drop, close, garbage) only the first
        matching one is taken, so the others wait for a later message. Chip knobs are
        taken by chip requests only (`chip`), so a magstripe sale does not use them up.
        """
        taken: list[Fault] = []
        replacing_taken = False
        with self._lock:
            for fault in list(self._faults):
                if fault.kind is FaultKind.REFUSE or not fault.matches(mti, txn_kind, tid):
                    continue
                if fault.kind in CHIP_KNOBS and not chip:
                    continue
                if fault.kind in REPLACING:
                    if replacing_taken:
                        continue
                    replacing_taken = True
                taken.append(fault)
                if fault.count > 0:
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
        return taken


@dataclass
class RuleBook:
    """Decision rules in the order added; first match wins."""

    _rules: list[Rule] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def active(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def decide(self, *, mti: str, txn_kind: str | None, amount: int | None,
               pan: str | None, tid: str, network: str | None = None) -> str | None:
        """The code of the first matching rule (counted down), or None."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(mti=mti, txn_kind=txn_kind, amount=amount, pan=pan, tid=tid,
                                network=network):
                    if rule.count > 0:
                        rule.count -= 1
                        if rule.count == 0:
                            self._rules.remove(rule)
                    return rule.code
        return None
