"""The repeat rule: a till's retry of a request is answered with the first outcome, never run twice.

Theory of operation: a request that changes money, paper, settings or orders (every op but
UNPROTECTED_OPS) and names itself (an `id`, else a `ref`) has a key: who asked (the peer's
source: a TCP peer's address without its port, since a till reconnects from a new port; the
serial port's path) and that name. The key is claimed in the journal before the op runs
(firmware/journal/requests.py); the journal record the op writes names it in its own commit;
the reply is kept when it is sent. Within the window (comms.ecr_repeat_window_s) the same key
gets, with "repeat": true and nothing sent to the host:
- the first reply, once it was sent;
- the first reply when it comes, if the first is still running (it is waited for);
- after a restart that cut the first before its reply: its record's state now (reversed,
  reversal pending...), or "interrupted" if it had written no record.
The same key for a different request is refused in words and not run. A request refused
before anything happened (refused, busy, error) is forgotten, so that its retry runs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from firmware.app.frontends.ecr_replies import failed_inside, language, record_now, refusal
from firmware.ecr.protocol import EcrRequest, encode_response
from firmware.engine.model import RequestKey
from firmware.journal.errors import JournalError
from firmware.journal.requests import DONE, KeptRequest, RequestBook

if TYPE_CHECKING:
    from firmware.app.terminal import Terminal

log = logging.getLogger("posfw.ecr")

# Ops that only read, or that are harmless to run twice: no key, no journal write.
UNPROTECTED_OPS = frozenset({
    "status", "last", "lookup", "held_list", "held_trail", "review", "print_jobs",
    "deregister_check", "firmware_status",  # read-only
    "signon", "signoff", "echo",  # host management: moves no money, repeating is harmless
    "cancel",  # must be heard at once, while the op it cancels runs
    "present_card",  # emulated boards: hands a test card to the waiting op
})
SECRET_FIELDS = ("password", "old", "new", "pin")  # never part of a kept fingerprint
NOTHING_HAPPENED = frozenset({"refused", "busy", "error"})  # results of requests refused up front
DEFAULT_WINDOW_S = 86400.0


def request_key(req: EcrRequest, source: str) -> RequestKey | None:
    """The key of a protected request: its id, else its ref (per op: a till uses one ref for a
    sale and for the void of it); None if the op is unprotected or the request names itself not."""
    if req.op in UNPROTECTED_OPS:
        return None
    if req.id is not None:
        return RequestKey(source, f"id {json.dumps(req.id)}")
    if req.args.get("ref"):
        return RequestKey(source, f"ref {req.op} {json.dumps(req.args['ref'])}")
    return None


def fingerprint(req: EcrRequest) -> str:
    """What was asked, to tell a repeat from another request under the same key (secrets left out:
    the journal keeps this)."""
    asked = {name: value for name, value in req.args.items() if name not in SECRET_FIELDS}
    canonical = json.dumps({"op": req.op, "args": asked}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


@dataclass
class _Running:
    fingerprint: str
    reply: asyncio.Future[dict[str, Any]]


class RepeatGate:
    """Runs a protected request once per key and window; answers its repeats."""

    def __init__(self, terminal: Terminal) -> None:
        self.terminal = terminal
        self._running: dict[RequestKey, _Running] = {}

    async def run(self, req: EcrRequest, source: str,
                  work: Callable[[RequestKey | None], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """work(key) runs the request (its journal record is written with the key)."""
        key = request_key(req, source)
        journal = self.terminal.journal
        if key is None or journal is None:
            return await work(None)
        lang = language(self.terminal)
        wanted = fingerprint(req)
        running = self._running.get(key)
        if running is not None:
            if running.fingerprint != wanted:
                return refusal("ecr_id_reused", lang)
            return {**await asyncio.shield(running.reply), "repeat": True}
        book = RequestBook(journal)
        try:
            kept = book.claim(key, req.op, wanted, self._window())
        except JournalError as exc:  # a full journal: the op cannot write its record either,
            log.error("ECR request key not claimed: %s", exc)  # and says so in words
            return await work(None)
        if kept is not None:
            return self._answer_kept(kept, wanted, lang)
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._running[key] = _Running(wanted, done)
        try:
            reply = await work(key)
        except BaseException:
            # Cut (the terminal shuts down): the claim stays RUNNING, so that a repeat after the
            # restart is answered from the record this request wrote, if any.
            done.set_result(failed_inside(lang))
            raise
        finally:
            del self._running[key]
        done.set_result(reply)
        self._keep(book, key, reply)
        return reply

    def _window(self) -> float:
        comms = self.terminal.settings.get("comms", {})
        return float(comms.get("ecr_repeat_window_s", DEFAULT_WINDOW_S))

    def _answer_kept(self, kept: KeptRequest, wanted: str, lang: str) -> dict[str, Any]:
        if kept.fingerprint != wanted:
            return refusal("ecr_id_reused", lang)
        if kept.state == DONE and kept.reply is not None:
            return {**json.loads(kept.reply), "repeat": True}
        # Claimed, not running here, no reply kept: a restart cut it (or the journal was full).
        journal = self.terminal.journal
        assert journal is not None
        if kept.txn_id is None:  # no record written (or purged since, settled and past retention)
            return {**refusal("ecr_interrupted", lang, result="interrupted"), "repeat": True}
        return {**record_now(journal.get(kept.txn_id), lang), "repeat": True}

    @staticmethod
    def _keep(book: RequestBook, key: RequestKey, reply: dict[str, Any]) -> None:
        """The reply is kept for repeats; one refused up front is forgotten. If the journal cannot
        take it (full), the till still gets its reply: a repeat then finds the claim RUNNING and
        is answered from the record, as after a restart."""
        try:
            if reply.get("result") in NOTHING_HAPPENED:
                book.forget(key)
            else:
                book.finish(key, encode_response(reply).decode("utf-8").rstrip("\n"))
        except JournalError as exc:
            log.error("ECR reply to %s not kept for repeats: %s", key.key, exc)
