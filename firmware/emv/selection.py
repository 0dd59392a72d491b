"""Application selection (EMV 4.3 Book 1, 12.3): building the candidate list, sans-I/O.

First the Payment System Environment: SELECT 1PAY.SYS.DDF01, then READ RECORD of its directory
(the SFI in the FCI's 88) from record 1 until 6A83, each 61 entry whose ADF name (4F) the
terminal accepts becoming a candidate. When the card has no PSE (or it is blocked, or lists none
the terminal takes), the terminal's AID list: SELECT each AID; for an AID that allows partial
matching, SELECT "next occurrence" (P2 = 02) until the card says there is no more. A blocked
application (6283) is skipped. The list is ordered by the priority in 87 (1 first, none last).

`Selection` is a small machine of its own that the kernel drives: `start()` and `on_response()`
give the next command APDU, or the `SelectionResult` when the list is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from firmware.emv import apdu, tlv
from firmware.emv.params import AidParams

PRIORITY_MASK = 0x0F
CONFIRMATION_REQUIRED = 0x80  # 87 bit 8: the cardholder confirms even a single application


@dataclass(frozen=True)
class Candidate:
    label: str         # 50 (or 9F12, or the AID in hex when the card names none)
    aid_hex: str       # the ADF name (4F / 84), upper-case hex
    priority: int      # 87 bits 4-1: 1 is the highest, 0 none
    confirm: bool = False  # 87 bit 8
    preferred_name: str = ""  # 9F12

    @property
    def aid(self) -> bytes:
        return bytes.fromhex(self.aid_hex)


@dataclass(frozen=True)
class SelectionResult:
    candidates: tuple[Candidate, ...]
    card_blocked: bool = False   # SELECT answered 6A81: the session ends (Book 1 12.3.2)
    error: str | None = None     # words, when the card answered what it must not


class _Step(StrEnum):
    PSE = "select_pse"
    PSE_RECORD = "read_pse_directory"
    AID = "select_aid"
    DONE = "done"


def _text(value: bytes | None) -> str:
    if not value:
        return ""
    return value.decode("ascii", "replace").strip()


def accepted(adf_name: bytes, aids: tuple[AidParams, ...]) -> AidParams | None:
    """The terminal AID that accepts this ADF name: equal, or a prefix of it where partial
    matching is allowed (Book 1 12.3.1)."""
    for param in aids:
        if adf_name == param.aid:
            return param
        if param.partial_match and adf_name.startswith(param.aid) and len(adf_name) > len(param.aid):
            return param
    return None


def order(candidates: list[Candidate]) -> tuple[Candidate, ...]:
    """By priority, 1 first; no priority (0) last; ties keep the card's order (sort is stable)."""
    return tuple(sorted(candidates, key=lambda c: c.priority or 16))


def _candidate(adf: bytes, fields: dict[str, bytes]) -> Candidate:
    priority = fields.get("87", b"\x00")[:1] or b"\x00"
    preferred = _text(fields.get("9F12"))
    return Candidate(
        label=_text(fields.get("50")) or preferred or adf.hex().upper(),
        aid_hex=adf.hex().upper(), priority=priority[0] & PRIORITY_MASK,
        confirm=bool(priority[0] & CONFIRMATION_REQUIRED), preferred_name=preferred,
    )


class Selection:
    """One run of candidate-list building over the terminal's AIDs."""

    def __init__(self, aids: tuple[AidParams, ...], *, use_pse: bool = True) -> None:
        self.aids = aids
        self.use_pse = use_pse
        self.step = _Step.PSE
        self.found: list[Candidate] = []
        self.apdu_count = 0
        self._sfi = 0
        self._record = 0
        self._aid_index = 0
        self._next = False
        self._seen: set[str] = set()
        self._handlers: dict[_Step, Callable[[bytes], bytes | SelectionResult]] = {
            _Step.PSE: self._on_pse,
            _Step.PSE_RECORD: self._on_pse_record,
            _Step.AID: self._on_aid,
        }

    def start(self) -> bytes | SelectionResult:
        if self.use_pse:
            self.step = _Step.PSE
            return self._send(apdu.select(apdu.PSE_NAME))
        return self._aid_list()

    def on_response(self, rapdu: bytes) -> bytes | SelectionResult:
        if self.step is _Step.DONE:
            raise RuntimeError("selection has finished")
        if len(rapdu) < 2:
            return self._done(error="the card answered without a status word")
        return self._handlers[self.step](rapdu)

    # -- steps -----------------------------------------------------------------

    def _on_pse(self, rapdu: bytes) -> bytes | SelectionResult:
        status = apdu.sw(rapdu)
        if status == apdu.SW_NOT_SUPPORTED:
            return self._done(card_blocked=True)
        if status != apdu.SW_OK:  # no PSE (6A82), PSE blocked (6283), anything else: AID list
            return self._aid_list()
        try:
            sfi = tlv.find(apdu.data(rapdu), "88")
        except tlv.TlvError:
            return self._aid_list()
        if not sfi or not 1 <= sfi[0] <= 30:
            return self._aid_list()
        self._sfi, self._record = sfi[0], 1
        self.step = _Step.PSE_RECORD
        return self._send(apdu.read_record(self._sfi, 1))

    def _on_pse_record(self, rapdu: bytes) -> bytes | SelectionResult:
        if apdu.sw(rapdu) != apdu.SW_OK:  # 6A83: past the last record
            return self._pse_done()
        try:
            for tag, template in tlv.items(apdu.data(rapdu)):
                if tag != "70":
                    return self._aid_list_after_bad_pse()
                for entry_tag, entry in tlv.items(template):
                    if entry_tag == "61":
                        self._pse_entry(entry)
        except tlv.TlvError:
            return self._aid_list_after_bad_pse()
        self._record += 1
        return self._send(apdu.read_record(self._sfi, self._record))

    def _pse_entry(self, entry: bytes) -> None:
        fields = dict(tlv.items(entry))
        adf = fields.get("4F")
        if adf and accepted(adf, self.aids) is not None:
            self.found.append(_candidate(adf, fields))

    def _pse_done(self) -> bytes | SelectionResult:
        if self.found:
            return self._done()
        return self._aid_list()

    def _aid_list_after_bad_pse(self) -> bytes | SelectionResult:
        # a malformed directory: the list method from scratch (Book 1 12.3.2, step 4)
        self.found.clear()
        return self._aid_list()

    def _aid_list(self) -> bytes | SelectionResult:
        self.step = _Step.AID
        self._aid_index, self._next = 0, False
        self._seen.clear()
        return self._select_current()

    def _select_current(self) -> bytes | SelectionResult:
        if self._aid_index >= len(self.aids):
            return self._done()
        return self._send(apdu.select(self.aids[self._aid_index].aid,
                                      next_occurrence=self._next))

    def _on_aid(self, rapdu: bytes) -> bytes | SelectionResult:
        status = apdu.sw(rapdu)
        param = self.aids[self._aid_index]
        if status == apdu.SW_NOT_SUPPORTED and not self._next:
            return self._done(card_blocked=True)
        if status in (apdu.SW_OK, apdu.SW_BLOCKED):
            try:
                fci = tlv.decode(apdu.data(rapdu))
            except tlv.TlvError:
                fci = {}
            adf = fci.get("84", b"")
            if status == apdu.SW_OK and adf and accepted(adf, (param,)) is not None:
                self.found.append(_candidate(adf, fci))
            # an exact match ends this AID; a partial one asks for the next occurrence (unless
            # the card names the same ADF again: it would loop)
            repeat = adf.hex().upper() in self._seen
            self._seen.add(adf.hex().upper())
            if param.partial_match and adf != param.aid and adf.startswith(param.aid) \
                    and not repeat:
                self._next = True
                return self._select_current()
        self._aid_index, self._next = self._aid_index + 1, False
        self._seen.clear()
        return self._select_current()

    # -- helpers ---------------------------------------------------------------

    def _send(self, command: bytes) -> bytes:
        self.apdu_count += 1
        return command

    def _done(self, *, card_blocked: bool = False, error: str | None = None) -> SelectionResult:
        self.step = _Step.DONE
        # The same ADF found twice (PSE entry repeated, or a next occurrence looping): once.
        unique: dict[str, Candidate] = {}
        for cand in self.found:
            unique.setdefault(cand.aid_hex, cand)
        return SelectionResult(order(list(unique.values())), card_blocked=card_blocked,
                               error=error)
