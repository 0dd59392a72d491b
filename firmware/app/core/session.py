"""The host session: HostSession, a part of TerminalCore split out by concern.

TerminalCore (firmware/app/core/terminal.py) is FlowRunner + HostSession + the core proper;
this part holds what the terminal owes and says to the host outside a sale: the link and the
sign-on, the backlog (due reversals and stored advices, sent before anything else; a record
that cannot be sent is quarantined and a supervisor closes it), settlement (with the resume of
one a power loss interrupted), echo, sign-on and sign-off on request.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import ssl
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from firmware.app.boards import BoardProfile
from firmware.app.core import chip_params
from firmware.app.core.contract import OperatorInput
from firmware.app.core.parts import CoreParts
from firmware.engine.backlog import AdviceFlow, ReversalFlow, ScriptAdviceFlow
from firmware.engine.model import TxnRecord, TxnResult
from firmware.engine.settlement import SettlementFlow
from firmware.engine.states import TxnEvent, TxnState
from firmware.host.channel import HostChannel, HostLink
from firmware.host.errors import HostError, KeyCheckError, TlsRefused
from firmware.host.messages import SideTotals, TxnKind, echo_request, signoff_request
from firmware.host.messages import Terminal as TermIds
from firmware.host.tls import TlsSetupError, client_context
from firmware.journal.errors import JournalError, JournalFull
from firmware.journal.vault import VaultError
from firmware.ports import HostKeys

log = logging.getLogger("posfw.app")  # the core's log lines, whichever part writes them


class HostSession(CoreParts):
    """A part of TerminalCore split out by concern: the host link, sign-on, the backlog,
    settlement, echo and sign-off. Not used on its own; the attributes below are set by
    TerminalCore (its __init__ and open()) or are methods of the other parts, listed here or in
    CoreParts (parts.py) so that a reader sees where each `self.x` comes from."""

    # State, set by TerminalCore.__init__ and open()
    board: BoardProfile  # a board with a chip slot signs on as an IC terminal
    data_dir: Path  # the TLS CA file is found under it
    sign_on_detail: str  # the last sign-on failure in words (a refused TLS certificate says why)
    service_problem: str | None
    link_up: bool | None
    backlog_left: int
    host_keys: HostKeys | None  # the board's key store, host half (the link signs on into it)
    _lock: asyncio.Lock

    if TYPE_CHECKING:  # for the reader and the type checker only: at run time these are the
        # methods of FlowRunner, found through the class.
        async def _drive(self, flow: Any, io: OperatorInput, cancellable: bool) -> TxnResult | None: ...
        def _refusal(self, kind: TxnKind | None) -> TxnResult | None: ...

    # -- the host link and sign-on ----------------------------------------------

    def _make_link(self) -> HostLink:
        m, c = self.settings["merchant"], self.settings["comms"]
        tls = None
        if c.get("tls"):
            # The acquirer's CA, pinned (firmware/host/tls.py); a CA file that cannot be read
            # is a provisioning fault the terminal says in words (service mode), never a plain
            # TCP fallback.
            try:
                own_cert, own_key = str(c.get("tls_client_cert") or ""), str(c.get("tls_client_key") or "")
                tls = client_context(self.data_dir / str(c.get("tls_ca") or "keys/acquirer-ca.pem"),
                                     self.data_dir / own_cert if own_cert else None,
                                     self.data_dir / own_key if own_key else None)
            except TlsSetupError as exc:
                log.error("SERVICE MODE: %s", exc)
                self.service_problem = str(exc)
                tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts no one: never plain TCP
        channel = HostChannel(c["host"], int(c["port"]), connect_timeout=float(c["connect_timeout"]),
                              connect_attempts=1 + int(c.get("retries", 0)), tls=tls,
                              server_name=str(c.get("tls_server_name") or "") or None)
        return HostLink(channel, TermIds(tid=m["tid"], mid=m["mid"]), self.host_keys,
                        mak_check=c["mak_check"], mac_algorithm=str(c["mac_algorithm"]),
                        track_encryption=bool(c["track_encryption"]))

    def _link(self, up: bool) -> None:
        if self.link_up != up:
            self.link_up = up
            if self.observer is not None:
                self.observer.changed()

    async def ensure_signed_on(self, who: str = "system") -> bool:
        """Signs on unless signed on already; `who` asked for it (the audit rows name it: the
        terminal's own sign-on before an operation is "system")."""
        assert self.link is not None and self.journal is not None
        if not self.link.sign_on_required and self.link.has_keys:
            return True
        self._step("signing_on", cancellable=False)
        self.sign_on_detail = "sign-on failed"
        stan = self.journal.allocate_stan()
        self.sign_on_problem = "host_unreachable"
        try:
            # field 63: the operator signed in at the keypad (operators.py says who otherwise)
            reply = await self.link.sign_on(stan, self.journal.current_batch(),
                                            self.operators.keypad_code(), timeout=self._timeout(),
                                            ic=self.board.reads_chip)
        except KeyCheckError as exc:
            log.error("sign-on failed: %s", exc)
            self.notice = "key_check_failed"  # a catalog key; the details go to the log and audit
            self.sign_on_problem = "key_check_failed"
            self.journal.audit(who, "sign-on", str(exc), "failed")
            return False
        except HostError as exc:
            log.warning("sign-on failed: %s", exc)
            self.sign_on_detail = str(exc)
            if isinstance(exc, TlsRefused):
                self.sign_on_problem = self.notice = "host_tls_refused"
            self._link(False)
            return False
        self._link(True)
        if reply.fields.get("39") != "00":
            # A catalog key, so the idle screen says it in the operator's language; the code is
            # for support and goes to the log.
            log.warning("sign-on refused by the host (%s)", reply.fields.get("39"))
            self.notice = "sign_on_refused"
            return False
        host_batch = reply.fields.get("60", "")[2:8]
        self.journal.adopt_batch(host_batch)
        self.journal.audit(who, "sign-on", f"batch {self.journal.current_batch()}", "done")
        # The chip tables the host asks for, or an IC terminal never got (never fails the sign-on).
        await chip_params.after_sign_on(self.link, self.journal, reply, timeout=self._timeout())
        return True

    # -- the backlog: reversals, advices, interrupted settlement ----------------

    async def _attempt(self, flow: ReversalFlow | AdviceFlow) -> bool:
        await self._drive(flow, OperatorInput(), cancellable=False)
        return bool(flow.resolved)

    async def clear_backlog(self) -> None:
        """Send every due reversal (up to the retry count each) and every stored advice.

        One record that cannot be sent never holds up the others: it is quarantined (a state
        the idle screen, the review and `status` show, closed by a supervisor) and the pass
        goes on. backlog_left counts what is still to be tried, for "busy" replies.
        """
        j = self.journal
        assert j is not None
        retries = int(self._tx()["reversal_retries"])
        todo = [(ReversalFlow, r) for r in j.reversals_due()] + [(AdviceFlow, r)
                                                                  for r in j.advices_due()]
        try:
            for index, (flow_type, record) in enumerate(todo):
                self.backlog_left = len(todo) - index
                self.notify_changed()
                pan = self._pan_for_backlog(record)
                if pan is None:
                    continue
                for _ in range(retries if flow_type is ReversalFlow else 1):
                    if await self._attempt(flow_type(j.get(record.id), pan, self.term,
                                                     self._timeout())):
                        break
            await self._send_script_advices()
        finally:
            self.backlog_left = 0

    async def _send_script_advices(self) -> None:
        """The issuer-script results chip cards reported (0620), one try each per pass."""
        j = self.journal
        assert j is not None
        for record in j.script_advices_due():
            pan = self._pan_for_backlog(record)
            if pan is None:
                continue
            flow = ScriptAdviceFlow(record, pan, self.term, j.current_batch(), self._timeout())
            await self._drive(flow, OperatorInput(), cancellable=False)

    def _pan_for_backlog(self, record: TxnRecord) -> str | None:
        """The card number an owed message carries; a record whose number cannot be read back
        (the card-data key changed, the field is damaged) is quarantined instead."""
        j = self.journal
        assert j is not None
        try:
            return j.decrypt_pan(record.id)
        except (JournalError, VaultError) as exc:
            problem = f"the card number cannot be read back ({type(exc).__name__})"
            log.error("trace %s: %s: quarantined", record.stan, problem)
            j.apply(record.id, TxnEvent.QUARANTINE, problem=problem)
            return None

    async def _settle_backlog_before_anything(self) -> TxnResult | None:
        await self.clear_backlog()
        assert self.journal is not None
        if self.journal.open_settlement() is not None:
            self.notice = "settlement_resuming"
            log.warning("resuming an interrupted settlement")
            return await self._run_settlement(self.operators.code_for("system"))
        return None

    async def resolve_owed(self, record_id: int, reason: str, source: str) -> TxnResult:
        """A supervisor closes what the host never acknowledged (a reversal) or what cannot be
        sent (a quarantined record), with a reason; audited, under the operation lock so no
        backlog pass is sending it meanwhile. The password was checked by the caller."""
        async def work() -> TxnResult:
            j = self.journal
            assert j is not None
            record = j.get(record_id)
            if record.state not in (TxnState.REVERSAL_DUE, TxnState.QUARANTINED):
                return TxnResult("refused", "anomaly_bad_action", record,
                                 detail=f"voucher {record.invoice} is {record.state.value}: nothing "
                                        "to resolve")
            record = j.resolve_manually(record_id, self.actor(source), reason)
            return TxnResult("resolved", "resolved", record)

        return await self.operation("resolve", source, work)

    # -- settlement, echo, sign-on and sign-off on request ----------------------

    async def settle(self, password: str | None, source: str = "ecr",
                     authorised: bool = False) -> TxnResult:
        return await self.operation("settle", source,
                                    lambda: self._settle(password, authorised, source))

    async def _settle(self, password: str | None, authorised: bool, source: str) -> TxnResult:
        refusal = self._refusal(None)
        if refusal is not None:
            return refusal
        if not authorised and not await self.check_password(password, "settlement", source):
            return TxnResult("refused", "password_wrong")
        self._step("signing_on", cancellable=False)
        if not await self.ensure_signed_on():
            return TxnResult("failed", self.sign_on_problem, detail="sign-on failed")
        return await self._run_settlement(self.operators.code_for(source))

    async def _run_settlement(self, operator: str) -> TxnResult:
        j = self.journal
        assert j is not None
        resume = j.open_settlement()
        if resume is None:
            await self.clear_backlog()
            counts = j.unresolved_counts()
            if any(counts.values()):
                aside = (f"; {counts['QUARANTINED']} set aside that a supervisor must resolve"
                         if counts["QUARANTINED"] else "")
                return TxnResult(
                    "refused", "settlement_blocked",
                    detail=f"{counts['REVERSAL_DUE']} reversal(s) and {counts['ADVICE_DUE']} "
                           f"advice(s) are not yet acknowledged by the host{aside}",
                )
            batch = j.current_batch()
            dom, fgn = j.totals(batch)
        else:
            batch = resume.batch
            dom, fgn = SideTotals(*resume.domestic), SideTotals(*resume.foreign)
        flow = SettlementFlow(self.term, batch, operator, self._tx()["currency"],
                              self._timeout(), dom, fgn, resume)
        try:
            result = await self._drive(flow, OperatorInput(), cancellable=False)
        except JournalFull as exc:
            return TxnResult("failed", "journal_full", detail=str(exc))
        assert result is not None
        if result.status == "settled":
            self.notice = None
            self.archive_settled()
        return result

    def archive_settled(self) -> None:
        """After a settlement: settled batches past the newest few move to the archive and
        archive files past retention go (docs/journal.md). A failure here costs nothing but the
        journal's size: it is logged and tried again after the next settlement."""
        j = self.journal
        assert j is not None
        tx = self._tx()
        try:
            j.archive_settled(int(tx["hot_batches"]))
            j.purge_archives(int(tx["retention_days"]))
        except (JournalError, sqlite3.Error, OSError) as exc:
            log.error("archiving settled batches failed (they stay in the journal): %s", exc)

    async def echo(self) -> tuple[bool, float, str]:
        async with self._lock:
            assert self.link is not None and self.journal is not None
            start = time.monotonic()
            try:
                reply = await self.link.request(
                    echo_request(self.term, self.journal.current_batch()), mac=False,
                    timeout=self._timeout(),
                )
            except HostError as exc:
                self._link(False)
                return False, time.monotonic() - start, str(exc)
            self._link(True)
            return reply.fields.get("39") == "00", time.monotonic() - start, reply.fields.get("39", "")

    async def sign_on(self, source: str = "ecr") -> bool:
        """A sign-on asked for by `source` (Manage > Sign on, the ECR op)."""
        async with self._lock:
            assert self.link is not None
            self.link.sign_on_required = True
            return await self.ensure_signed_on(self.actor(source))

    async def sign_off(self, source: str = "ecr") -> bool:
        async with self._lock:
            assert self.link is not None and self.journal is not None
            msg = signoff_request(self.journal.allocate_stan(), self.term, self.journal.current_batch())
            try:
                reply = await self.link.request(msg, mac=False, timeout=self._timeout())
            except HostError:
                return False
            self.link.forget_keys()
            self.journal.audit(self.actor(source), "sign-off", "", reply.fields.get("39", ""))
            return reply.fields.get("39") == "00"
