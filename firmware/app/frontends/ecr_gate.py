"""The paired-till gate of the ECR link: every request line passes here before its fields are
read (docs/ecr.md, "Paired tills").

A paired till's request carries `till`, `seq` and `mac`: the till must be paired (its key in the
journal, sealed), the MAC must be right under its key, and seq above the last one it used; the
seq is then taken, durably, before the request runs. Anything else is refused in words, with no
MAC ("authenticated": false), and nothing runs. A `pair` or `pair_confirm` request goes to the
pairing window (firmware/app/services/tills.py) instead. With comms.ecr_auth = "open" on a board that takes
card data over the link (an emulated one), a request without an envelope is let through as it
was before pairing existed; a paired till's request is still checked in full.

`admit` never awaits: the ECR server calls it first thing for each line, in the order the lines
came, so a till's seq numbers are taken in the order it sent them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from firmware.app.services import tills
from firmware.ecr import auth
from firmware.ecr.protocol import EcrError, decode, echoable_id
from firmware.i18n import text

if TYPE_CHECKING:
    from firmware.app.terminal import Terminal

log = logging.getLogger("posfw.ecr")

UNAUTHENTICATED = {"authenticated": False}


@dataclass(frozen=True)
class Seal:
    """What the reply to an admitted request is sealed with."""

    till: str
    seq: int
    key: bytes = field(repr=False)


@dataclass(frozen=True)
class Admitted:
    """Run it. obj: the request without its envelope (None: not JSON, the protocol words it);
    source: the peer, and the till when it was authenticated (audits, repeats, passwords)."""

    obj: dict[str, Any] | None
    source: str
    seal: Seal | None = None


@dataclass(frozen=True)
class Refused:
    reply: dict[str, Any]


@dataclass(frozen=True)
class Pairing:
    request: auth.PairRequest | auth.PairConfirm
    envelope: dict[str, Any]


class TillGate:
    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self._warned_open = False

    def _lang(self) -> str:
        settings = self.terminal.settings or {}
        return str(settings.get("display", {}).get("language", "en"))

    @property
    def open(self) -> bool:
        """Unauthenticated requests are taken: the setting says "open" and the board allows it."""
        settings = self.terminal.settings or {}
        wanted = settings.get("comms", {}).get("ecr_auth", "paired") == "open"
        if wanted and not self.terminal.board.ecr_accepts_card_data:
            if not self._warned_open:
                self._warned_open = True
                log.error("comms.ecr_auth is \"open\" on board %s, which only serves paired tills: "
                          "unauthenticated ECR requests are refused", self.terminal.board.name)
            return False
        return wanted

    def _refused(self, key: str, envelope: dict[str, Any], **values: Any) -> Refused:
        return Refused({**envelope, "ok": False, "result": "refused",
                        "message": text(key, self._lang(), **values), **UNAUTHENTICATED})

    def admit(self, line: bytes, source: str) -> Admitted | Refused | Pairing:
        try:
            obj = decode(line)
        except EcrError as exc:
            if self.open:
                return Admitted(None, source)  # parse_request words it, as before pairing
            return Refused({**exc.reply(), **UNAUTHENTICATED})
        envelope = {k: obj[k] for k in ("id", "op") if k in obj and (k != "id" or echoable_id(obj[k]))}
        if not isinstance(envelope.get("op"), str):
            envelope.pop("op", None)
        if obj.get("op") in ("pair", "pair_confirm"):
            try:
                return Pairing(auth.pair_request(obj), envelope)
            except auth.AuthError as exc:
                return self._refused("ecr_bad_envelope", envelope, detail=str(exc))
        if not auth.carries_envelope(obj):
            if self.open:
                return Admitted(obj, source)
            wanted = (self.terminal.settings or {}).get("comms", {}).get("ecr_auth") == "open"
            return self._refused("ecr_open_refused" if wanted else "ecr_auth_required", envelope)
        try:
            env = auth.envelope(obj)
            auth.decode_object(line)  # a member named twice is refused, not guessed at
        except (auth.AuthError, ValueError) as exc:
            return self._refused("ecr_bad_envelope", envelope, detail=str(exc))
        if self.terminal.journal is None:
            return self._refused("ecr_auth_service", envelope)
        book = tills.book(self.terminal)
        try:
            key = book.key(env.till)
        except Exception:  # InvalidTag, or the key store refused: words, never its text
            log.exception("the key of till %s cannot be unsealed", env.till)
            return self._refused("ecr_key_unreadable", envelope, till=env.till)
        if key is None:
            return self._refused("ecr_not_paired", envelope, till=env.till)
        if not auth.mac_ok(key, obj):
            return self._refused("ecr_bad_mac", envelope, till=env.till)
        old = book.advance(env.till, env.seq)
        if old is not None:
            return self._refused("ecr_old_seq", envelope, till=env.till, seq=env.seq,
                                 last=old.last_seq, next=old.last_seq + 1)
        return Admitted(auth.body(obj), f"{source} till {env.till}", Seal(env.till, env.seq, key))
